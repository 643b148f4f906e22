"""Front <-> worker messages: envelopes, batches, every payload codec and the credit."""

from __future__ import annotations

import msgpack
import pytest

from server.ipc.batch import Batch, decode_batch
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import (
    CREDIT_GRANT_BYTES,
    OwedCredit,
    SendWindow,
    decode_credit,
    encode_credit,
)
from server.ipc.messages import (
    Fatal,
    Ready,
    Rejection,
    StreamParams,
    Welcome,
    WorkerStats,
    decode_chunks,
    decode_request,
    decode_stream_settings,
    encode_chunk_flags,
    encode_request,
    encode_stream_settings,
)
from server.protocol.errors import ErrorCode
from server.protocol.events import DataChunk
from server.protocol.limits import Limits
from server.protocol.payloads import CommandRequest, StreamSettings, pack


def test_ipc_batches_round_trip() -> None:
    batch = Batch()
    messages = [[b"env1", b"", b"x" * 70000], [b"env2"], [b"e", b"a", b"b", b"c"]]
    for message in messages:
        batch.add(message)
    blob = batch.take()
    assert decode_batch(blob) == messages
    assert batch.take() == b""
    with pytest.raises(ValueError):
        decode_batch(blob[:-1])


def test_envelope_round_trip_and_garbage() -> None:
    env = Envelope(Kind.FRAMES, Flag.DONE | Flag.STREAM_OPEN, 4_000_000_000, 65535, 255)
    assert Envelope.unpack(env.pack()) == env
    with pytest.raises(ValueError):
        Envelope.unpack(b"\x00" * 9)  # kind 0 does not exist
    with pytest.raises(ValueError):
        Envelope.unpack(b"\x01")


STATS = WorkerStats(7, 1, False, 1.5, 0.25, 10, 20, 3, 4096, 9, 100, 40, 0)

PAYLOADS = [
    StreamParams("zstd-8mb", 3, "stream", 32768, True),
    StreamParams("identity", None, "frame", 1 << 20, False),
    Rejection("overloaded", "busy", True),
    Fatal(ErrorCode.TOO_LARGE, "window"),
    Ready(1234, 2, "host-a"),
    Welcome(3, "zplex/1", Limits(max_streams=8)),
    Welcome(3, "zplex/1", Limits(), ("tcp://front-b:7412", "tcp://front-c:7413")),
    Welcome(3, "zplex/1", Limits(), (), allow_delete=True),
    STATS,
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_payload_codecs_round_trip(payload: object) -> None:
    encoded = payload.encode()  # type: ignore[attr-defined]
    assert type(payload).decode(encoded) == payload  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "cls", [StreamParams, Rejection, Fatal, Ready, Welcome, WorkerStats], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("data", [b"", b"\xc1", pack([]), pack([True] * 13), pack({"pid": 1})])
def test_payload_codecs_refuse_what_they_did_not_make(cls: type, data: bytes) -> None:
    with pytest.raises(ValueError):
        cls.decode(data)  # type: ignore[attr-defined]


def test_stream_params_refuse_a_bool_for_an_int() -> None:
    with pytest.raises(ValueError):
        StreamParams.decode(pack(["zstd-8mb", True, "stream", 32768, True]))


def test_fatal_refuses_an_unknown_code() -> None:
    with pytest.raises(ValueError):
        Fatal.decode(pack(["no-such-code", "x"]))


def test_welcome_refuses_bad_limits() -> None:
    with pytest.raises(ValueError):
        Welcome.decode(pack([0, "zplex", {"max_streams": 0}]))
    with pytest.raises(ValueError):
        Welcome.decode(pack([0, "zplex", {"no_such_limit": 1}]))


def test_welcome_fronts_default_to_none_and_must_be_endpoints() -> None:
    assert Welcome.decode(pack([0, "zplex", {}])).fronts == ()
    assert Welcome.decode(pack([0, "zplex", {}, []])).allow_delete is False
    assert Welcome.decode(pack([0, "zplex", {}, [], 0])).allow_delete is False
    assert Welcome.decode(pack([0, "zplex", {}, [], 0, True])).allow_delete is True
    with pytest.raises(ValueError):
        Welcome.decode(pack([0, "zplex", {}, [], 0, 1]))  # a bool, not an int
    assert Welcome(0, "zplex", Limits()).fronts == ()
    with pytest.raises(ValueError):
        Welcome.decode(pack([0, "zplex", {}, [7]]))
    with pytest.raises(ValueError):
        Welcome.decode(pack([0, "zplex", {}, "tcp://front-b:7412"]))


def test_worker_stats_map_has_the_published_keys() -> None:
    assert set(STATS.to_map()) >= {"pid", "index", "cpu_user", "bytes_raw", "bytes_wire"}


def test_request_parts_round_trip() -> None:
    command_map = pack({"name": "put", "args": {"key": "k"}})
    chunks = [DataChunk(False, b"raw"), DataChunk(True, b"\x28\xb5")]
    parts = encode_request(command_map, chunks, {"front": {"pid": 1}})
    body = decode_request(parts, has_data=True)
    assert body.command == CommandRequest("put", {"key": "k"})
    assert body.data == tuple(chunks)
    assert body.snapshot == {"front": {"pid": 1}}
    body = decode_request(encode_request(command_map, None), has_data=False)
    assert body.data is None and body.snapshot is None


def test_request_parts_refuse_malformed() -> None:
    command_map = pack({"name": "echo", "args": {}})
    with pytest.raises(ValueError):
        decode_request([command_map], has_data=False)
    with pytest.raises(ValueError):
        decode_request([pack({"args": {}}), b""], has_data=False)  # no name
    with pytest.raises(ValueError):
        decode_request([command_map, b"", b"\x01\x00", b"one payload"], has_data=True)


def test_chunk_flags_round_trip() -> None:
    chunks = (DataChunk(True, b"a"), DataChunk(False, b""), DataChunk(True, b"c"))
    flags = encode_chunk_flags(chunks)
    assert flags == b"\x01\x00\x01"
    assert decode_chunks(flags, [c.payload for c in chunks]) == chunks


def test_stream_settings_round_trip() -> None:
    settings = StreamSettings("zstd-8mb", 6, 23, "stream")
    assert decode_stream_settings(encode_stream_settings(settings)) == settings
    with pytest.raises(ValueError):
        decode_stream_settings(b"\xc1")


def test_send_window_and_owed_credit() -> None:
    window = SendWindow(10)
    assert window.is_open
    window.consume(10)
    assert not window.is_open
    window.grant(decode_credit(encode_credit(5)))
    assert window.available == 5
    owed = OwedCredit()
    assert owed.wrote(CREDIT_GRANT_BYTES - 1, client_reading=True) == 0
    assert owed.wrote(1, client_reading=True) == CREDIT_GRANT_BYTES
    assert owed.wrote(CREDIT_GRANT_BYTES * 2, client_reading=False) == 0  # not reading: wait
    assert owed.take() == CREDIT_GRANT_BYTES * 2
    assert owed.take() == 0
    with pytest.raises(ValueError):
        decode_credit(b"\x01")


def test_welcome_leaves_its_defaults_out() -> None:
    """A default front's WELCOME is the three fields an earlier remote worker knows."""
    assert msgpack.unpackb(Welcome(1, "z", Limits()).encode()) == [1, "z", Limits().to_wire()]
    tail = msgpack.unpackb(Welcome(1, "z", Limits(), (), 16, True).encode())[3:]
    assert tail == [[], 16, True]
    assert msgpack.unpackb(Welcome(1, "z", Limits(), (), 0).encode())[3:] == [[], 0]
