"""The worker loop's message handling, without processes or sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import SendWindow, encode_credit
from server.ipc.messages import Fatal, StreamParams, encode_request
from server.protocol.client_conn import ClientConnection
from server.protocol.events import DataChunk, ResponseBody, ResponseComplete, ResponseError
from server.protocol.limits import Limits
from server.protocol.payloads import pack
from workers.worker import Worker, WorkerConfig

PARAMS = StreamParams("zstd-8mb", 3, "stream", 32768, True).encode()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Worker, list[list[bytes]]]]:
    limits = Limits(max_contexts_per_worker=2)
    config = WorkerConfig(0, f"ipc://{tmp_path}/none", str(tmp_path / "store"), "zplex/t", limits)
    w = Worker(config)
    sent: list[list[bytes]] = []
    w._emit = sent.append  # type: ignore[method-assign]
    yield w, sent
    w.sock.close(linger=0)
    w._ctx.term()


def request(
    w: Worker,
    stream: int,
    rid: int,
    name: str,
    args: dict[str, object],
    data: bytes | None = None,
    flags: int = 0,
) -> None:
    chunks = None
    if data is not None:
        flags |= Flag.HAS_DATA
        chunks = [DataChunk(False, data)]
    parts = encode_request(pack({"name": name, "args": args}), chunks)
    w.handle(Envelope(Kind.REQUEST, flags, 1, rid, stream), parts)


def frames_of(sent: list[list[bytes]]) -> bytes:
    return b"".join(m[1] for m in sent if Envelope.unpack(m[0]).kind is Kind.FRAMES)


def client_for(*streams_and_ids: tuple[int, int]) -> ClientConnection:
    """A client connection that expects these (stream, request id) pairs."""
    conn = ClientConnection()
    for stream, rid in streams_and_ids:
        conn.send_request(stream, "x", request_id=rid)
    return conn


def test_requests_answers_and_errors(worker: tuple[Worker, list[list[bytes]]]) -> None:
    w, sent = worker
    w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), [PARAMS])
    request(w, 3, 1, "put", {"key": "k"}, b"value")
    request(w, 3, 3, "get", {"key": "k"})
    request(w, 3, 5, "get", {"key": "../k"})
    request(w, 3, 7, "nope", {})
    events = client_for((3, 1), (3, 3), (3, 5), (3, 7)).receive_data(frames_of(sent))
    bodies = [e.data for e in events if isinstance(e, ResponseBody)]
    errors = [e.error.code for e in events if isinstance(e, ResponseError)]
    done = [e.request_id for e in events if isinstance(e, ResponseComplete)]
    assert bodies == [b"value"] and done == [1, 3]
    assert errors == ["bad-request", "unknown-command"]
    assert all(Envelope.unpack(m[0]).flags & Flag.DONE for m in sent)


def test_least_recently_used_contexts_are_evicted(
    worker: tuple[Worker, list[list[bytes]]],
) -> None:
    w, _sent = worker
    for stream in (1, 3, 5, 7):
        w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, stream), [PARAMS])
        request(w, stream, stream, "generate", {"size": 1000})
    live = [key for key, ctx in w.streams.items() if ctx.writer.encoder is not None]
    assert live == [(1, 5), (1, 7)]  # the budget is 2: the two most recent keep theirs
    assert w.evictions == 2


def test_corrupt_encoded_data_fails_the_connection(
    worker: tuple[Worker, list[list[bytes]]],
) -> None:
    w, sent = worker
    w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), [PARAMS])
    settings = pack({"encoding": "zstd-8mb", "context": "stream"})
    w.handle(Envelope(Kind.CLIENT_STREAM_SETTINGS, 0, 1, 0, 3), [settings])
    parts = encode_request(
        pack({"name": "echo", "args": {}}), [DataChunk(True, b"not zstd at all")]
    )
    w.handle(Envelope(Kind.REQUEST, Flag.HAS_DATA, 1, 1, 3), parts)
    fatal = [m for m in sent if Envelope.unpack(m[0]).kind is Kind.CONN_FATAL]
    assert fatal and Fatal.decode(fatal[0][1]).code == "too-large"
    assert not w.streams
    # Messages the front sent before it learnt of the failure are dropped quietly.
    request(w, 3, 3, "echo", {})
    assert len(sent) == 1


def test_end_stream_drops_the_context(worker: tuple[Worker, list[list[bytes]]]) -> None:
    w, sent = worker
    w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), [PARAMS])
    request(w, 3, 1, "echo", {}, b"bye", flags=Flag.END_STREAM)
    assert not w.streams
    assert not Envelope.unpack(sent[-1][0]).flags & Flag.STREAM_OPEN


def test_credit_pauses_a_stream_and_keeps_its_order(
    worker: tuple[Worker, list[list[bytes]]],
) -> None:
    w, sent = worker
    identity = StreamParams("identity", None, "stream", 32768, True).encode()
    w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), [identity])
    w.streams[(1, 3)].window = SendWindow(1)  # room for one chunk only
    request(w, 3, 1, "generate", {"size": 600_000, "kind": "random"})
    request(w, 3, 3, "echo", {}, b"after")
    w.handle(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 5), [PARAMS])
    request(w, 5, 1001, "echo", {}, b"other stream")  # not held up by stream 3
    flags = [(Envelope.unpack(m[0]).request, Envelope.unpack(m[0]).flags) for m in sent]
    assert [r for r, _f in flags] == [1, 1001]
    assert not flags[0][1] & Flag.DONE
    w.handle(Envelope(Kind.CREDIT, 0, 1, 0, 3), [encode_credit(10_000_000)])
    order = [Envelope.unpack(m[0]).request for m in sent]
    assert order[-1] == 3 and order.count(1) >= 2
    events = client_for((3, 1), (3, 3)).receive_data(
        b"".join(m[1] for m in sent if Envelope.unpack(m[0]).stream == 3)
    )
    done = [e.request_id for e in events if isinstance(e, ResponseComplete)]
    assert done == [1, 3]
