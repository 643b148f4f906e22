"""The client side of a connection (server/protocol/client_conn.py) and the server's stream
writer (server/protocol/responses.py), against each other and against ServerConnection."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import Decoder, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode, ProtocolError
from server.protocol.events import (
    ClientEvent,
    ConnectionErrorReceived,
    DataChunk,
    ProgressReceived,
    RequestReady,
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ResponseHeader,
    ServerSettingsReceived,
    ServerStreamEnded,
    SettingsReceived,
    StreamSettingsReceived,
    TextOutputReceived,
)
from server.protocol.frames import Frame, FrameType, StreamFlags, decode_frames, encode_frame
from server.protocol.limits import Limits
from server.protocol.notation import format_frame, parse_lines
from server.protocol.payloads import (
    CONTEXTS,
    ENCODINGS,
    ClientSettings,
    ErrorResponse,
    Progress,
    ServerSettings,
    StreamSettings,
    pack,
    unpack_map,
)
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection, connection_error_frame

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))
LIMITS = Limits()


def server_settings(max_frame_size: int = 32768) -> ServerSettings:
    return ServerSettings("zplex/test", ENCODINGS, max_frame_size, 2, LIMITS.to_wire())


def connected(
    settings: ClientSettings | None = None, max_frame_size: int = 32768, **kwargs: Any
) -> ClientConnection:
    client = ClientConnection(settings, **kwargs)
    server = ServerConnection(LIMITS, server_settings(max_frame_size))
    events = client.receive_data(server.initial_bytes())
    assert events == [ServerSettingsReceived(server_settings(max_frame_size))]
    assert client.peer_max_frame_size == max_frame_size
    return client


def notation(data: bytes) -> list[str]:
    return [format_frame(f) for f in decode_frames(data)]


def body_of(events: list[ClientEvent], rid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ResponseBody) and e.request_id == rid)


def text(size: int) -> bytes:
    return (b"the quick brown fox jumps over the lazy dog %d\n" * (size // 40 + 1))[:size]


# ---- output ---------------------------------------------------------------------------------


def test_initiate() -> None:
    settings = ClientSettings(encodings=("zlib",), level=4, max_frame_size=4096, token="t")
    client = ClientConnection(settings)
    (frame,) = decode_frames(client.initiate())
    assert (frame.request_id, frame.stream_id, frame.stream_flags) == (0, 1, StreamFlags.BEGIN)
    assert frame.type == FrameType.SENDER_PROTOCOL_SETTINGS and frame.flags == 0x2
    assert unpack_map(frame.payload, "s") == settings.to_wire()
    # The settings opened stream 1: the first request on it has no begin.
    _, data = client.send_request(1, "echo")
    assert notation(data)[0].startswith("1 1 0 command-request new ")
    assert ClientConnection().initiate() == b""


def test_send_request_frames() -> None:
    client = connected()
    rid, data = client.send_request(3, "get", {"key": "a.txt"})
    assert rid == 1
    assert notation(data) == [
        "1 3 begin command-request new 0x" + pack({"name": "get", "args": {"key": "a.txt"}}).hex()
    ]
    rid, data = client.send_request(3, "stats", end_stream=True)
    assert rid == 3
    assert notation(data) == [
        "3 3 end command-request new 0x" + pack({"name": "stats", "args": {}}).hex()
    ]
    # The stream ended: the next request on it begins it again.
    rid, data = client.send_request(3, "stats")
    assert notation(data)[0].startswith("5 3 begin command-request new")
    assert client.in_flight == 3


def test_send_request_splits_map_and_data_at_the_peers_frame_size() -> None:
    client = connected(max_frame_size=1024)
    args = {"pad": "x" * 2500}
    data = bytes(range(256)) * 10  # 2560 bytes
    rid, wire = client.send_request(1, "put", args, data, end_stream=True)
    assert rid == 1
    frames = decode_frames(wire)
    lines = [
        format_frame(Frame(f.request_id, f.stream_id, f.stream_flags, f.type, f.flags))
        for f in frames
    ]
    assert lines == [
        "1 1 begin command-request new|more|have-data",
        "1 1 0 command-request continuation|more|have-data",
        "1 1 0 command-request continuation|have-data",
        "1 1 0 command-data continuation",
        "1 1 0 command-data continuation",
        "1 1 end command-data eos",
    ]
    assert all(len(f.payload) <= 1024 for f in frames)
    assert unpack_map(b"".join(f.payload for f in frames[:3]), "m") == {"name": "put", "args": args}
    assert b"".join(f.payload for f in frames[3:]) == data


def test_send_request_with_empty_data() -> None:
    client = connected()
    _, wire = client.send_request(1, "echo", data=b"")
    assert [line.split(" 0x")[0] for line in notation(wire)] == [
        "1 1 begin command-request new|have-data",
        "1 1 0 command-data eos",
    ]


def test_request_ids() -> None:
    client = connected()
    assert [client.send_request(1, "echo")[0] for _ in range(3)] == [1, 3, 5]
    with pytest.raises(ValueError, match="in flight"):
        client.send_request(1, "echo", request_id=3)
    assert client.send_request(1, "echo", request_id=0xFFFF)[0] == 0xFFFF
    client._next_id = 0xFFFF  # white-box: wrap around, skipping ids in flight
    assert client.send_request(1, "echo")[0] == 7
    for sid in (0, 2, 256, -1):
        with pytest.raises(ValueError, match="odd ids"):
            client.send_request(sid, "echo")


def test_end_stream() -> None:
    client = connected()
    assert client.end_stream(3) == b""
    client.send_request(3, "echo")
    assert notation(client.end_stream(3)) == ["0 3 end stream-settings eos"]
    assert client.end_stream(3) == b""


@pytest.mark.parametrize(("encoding", "context"), [p for p in PROFILES if p[0] != "identity"])
def test_encoded_command_data_decodes_on_the_server(encoding: str, context: str) -> None:
    client = ClientConnection(ClientSettings())
    server = ServerConnection(LIMITS, server_settings())
    client.receive_data(server.initial_bytes())
    settings = stream_settings_for(encoding, 3, context)
    wire = client.initiate() + client.set_data_encoding(3, settings)
    bodies = [text(100_000), b"", b"small"]
    for body in bodies:
        wire += client.send_request(3, "put", {"key": "k"}, body)[1]
    events = server.receive_data(wire)
    assert events[1] == StreamSettingsReceived(3, settings)
    ready = [e for e in events if isinstance(e, RequestReady)]
    decoder = Decoder(settings)  # what the worker owning stream 3 does
    for event, body in zip(ready, bodies, strict=True):
        decoded = b"".join(
            decoder.decode(c.payload, 1 << 30) if c.encoded else c.payload for c in event.data
        )
        assert decoded == body
    # Empty data that encodes to nothing (always under the frame context) travels as one raw
    # empty frame: an empty encoded payload would not be a complete unit.
    (chunk,) = ready[1].data
    assert chunk.encoded == bool(chunk.payload)
    if context == "frame":
        assert chunk == DataChunk(False, b"")
    # identity stops encoding.
    wire = client.set_data_encoding(3, StreamSettings("identity"))
    wire += client.send_request(3, "put", {"key": "k"}, b"plain")[1]
    (_, plain) = server.receive_data(wire)
    assert isinstance(plain, RequestReady) and plain.data[0].encoded is False


# ---- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
def test_responses_every_profile_and_context(encoding: str, context: str) -> None:
    client = connected()
    writer = ServerStreamWriter(2, stream_settings_for(encoding, 3, context), 4096)
    bodies = [text(50_000), b"", bytes(300_000), b"x"]
    rids = [client.send_request(1, "get", {"key": str(i)})[0] for i in range(len(bodies))]
    events: list[ClientEvent] = []
    total_wire = 0
    for rid, body in zip(rids, bodies, strict=True):
        header = {"status": "ok", "size": len(body)}
        wire = writer.response(rid, header, body)
        total_wire += len(wire)
        got = client.receive_data(wire)
        assert got[0] == ResponseHeader(rid, header)
        assert got[-1] == ResponseComplete(rid, len(pack(header)) + len(body), len(wire))
        assert body_of(got, rid) == body
        events += got
    assert writer.wire_bytes == total_wire  # every frame, stream-settings included
    first = decode_frames(writer.response(rids[-1] + 2, {"status": "ok"}, b""))
    assert not first[0].has(StreamFlags.BEGIN)
    assert client.in_flight == 0


def test_response_body_from_an_iterator_in_chunks() -> None:
    client = connected()
    rid, _ = client.send_request(1, "generate")
    writer = ServerStreamWriter(2, stream_settings_for("zstd-8mb", 3, "stream"), 32768)
    chunks = [random.Random(i).randbytes(200_000) for i in range(5)]  # incompressible
    parts = list(writer.iter_response(rid, {"status": "ok"}, iter(chunks)))
    assert len(parts) > 1  # wire-ready chunks of about CHUNK_BYTES
    events: list[ClientEvent] = []
    for part in parts:
        events += client.receive_data(part)
    assert body_of(events, rid) == b"".join(chunks)
    assert isinstance(events[-1], ResponseComplete)


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
def test_failed_body_ends_with_internal_error_and_stream_stays_decodable(
    encoding: str, context: str
) -> None:
    client = connected()
    writer = ServerStreamWriter(2, stream_settings_for(encoding, 3, context), 1024)
    rid, _ = client.send_request(1, "get")

    def failing() -> Iterator[bytes]:
        yield text(10_000)
        raise OSError("disk on fire at /secret/path")

    wire = writer.response(rid, {"status": "ok"}, failing())
    events = client.receive_data(wire)
    error = events[-1]
    assert isinstance(error, ResponseError) and error.partial
    assert error.error.code == "internal" and "secret" not in error.error.message
    rid2, _ = client.send_request(1, "get")
    events = client.receive_data(writer.response(rid2, {"status": "ok"}, b"after"))
    assert body_of(events, rid2) == b"after"


def test_request_error_end_and_reset() -> None:
    client = connected()
    writer = ServerStreamWriter(2, stream_settings_for("zlib", 6, "stream"), 32768)
    rid, _ = client.send_request(1, "get")
    wire = writer.error(rid, ErrorCode.OVERLOADED, "busy", retryable=True)
    assert notation(wire)[0].startswith(f"{rid} 2 begin error-response 0 ")
    (event,) = client.receive_data(wire)
    assert event == ResponseError(rid, ErrorResponse("overloaded", "busy", True), False, len(wire))
    # end(): an empty stream-settings with end when no frame is left to carry it.
    assert notation(writer.end()) == ["0 2 end stream-settings eos"]
    assert writer.end() == b""  # the stream is over: nothing to end
    # The next response begins the stream again, with stream-settings first.
    rid, _ = client.send_request(1, "get")
    wire = writer.response(rid, {"status": "ok"}, b"body", end_stream=True)
    lines = notation(wire)
    assert lines[0].startswith("0 2 begin stream-settings eos ")
    assert lines[-1].startswith(f"{rid} 2 end|encoded command-response eos ")
    events = client.receive_data(wire)
    assert events[-1] == ServerStreamEnded(2)
    # reset(): the context was lost; the next response begins again.
    rid, _ = client.send_request(1, "get")
    client.receive_data(writer.response(rid, {"status": "ok"}, b"x"))
    writer.reset()
    rid, _ = client.send_request(1, "get")
    wire = writer.response(rid, {"status": "ok"}, b"y")
    assert notation(wire)[0].startswith("0 2 begin stream-settings")
    assert body_of(client.receive_data(wire), rid) == b"y"
    assert writer.memory() > 0


def test_error_with_end_stream_after_begin() -> None:
    client = connected()
    writer = ServerStreamWriter(4, stream_settings_for("identity", None, "stream"), 32768)
    client.send_request(1, "get")
    rid, _ = client.send_request(3, "get", end_stream=True)
    wire = writer.error(rid, "not-found", "no such key", end_stream=True, details={"key": "k"})
    events = client.receive_data(wire)
    assert events[-1] == ServerStreamEnded(4)
    assert isinstance(events[0], ResponseError) and events[0].error.details == {"key": "k"}


def test_progress_text_output_and_connection_errors() -> None:
    client = connected()
    rid, _ = client.send_request(1, "generate")
    writer = ServerStreamWriter(2, stream_settings_for("identity", None, "stream"), 32768)
    wire = writer.response(rid, {"status": "ok"}, b"")  # opens stream 2
    rid2, _ = client.send_request(1, "generate")
    progress = encode_frame(rid2, 2, 0, FrameType.PROGRESS, 0, pack(Progress(5).to_wire()))
    text_out = encode_frame(
        0, 0, 0, FrameType.TEXT_OUTPUT, 0, pack({"level": "warning", "message": "draining"})
    )
    goaway = connection_error_frame(ErrorCode.GOAWAY, "bye", True, in_flight=[rid2])
    events = client.receive_data(wire + progress + text_out + goaway)
    assert events[-3:] == [
        ProgressReceived(rid2, Progress(5, None)),
        TextOutputReceived("warning", "draining"),
        ConnectionErrorReceived(ErrorResponse("goaway", "bye", True, {"in_flight": [rid2]})),
    ]


# ---- the server breaking the protocol --------------------------------------------------------


def _open_stream_2(client: ClientConnection) -> int:
    rid, _ = client.send_request(1, "get")
    client.receive_data(encode_frame(0, 2, StreamFlags.BEGIN, FrameType.STREAM_SETTINGS, 2))
    return rid


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ("1 1 begin command-response eos b'x'", "odd stream"),
        ("1 2 begin command-request new", "server may not send command-request"),
        ("99 2 0 command-response eos b'\\x80'", "not in flight"),
        ("1 4 begin command-response eos b'\\x80'", "answered on stream 4"),
        ("1 6 0 command-response eos b'\\x80'", "without begin"),
        ("1 2 encoded command-response eos 0x00", "before an encoding"),
        ("1 2 0 command-response eos b'\\x91\\x01'", "not a map"),
        ("1 2 0 command-response eos b'\\xc1'", "not valid MessagePack"),
        ("1 2 0 command-response eos", "without a header"),
        ("0 0 0 sender-protocol-settings continuation", "split server settings"),
        ("0 0 0 sender-protocol-settings eos b'\\x91\\x01'", "must be a map"),
        ("1 0 0 command-response eos", "on the control stream"),
        ("0 0 0 stream-settings eos", "on the control stream"),
        ("0 2 0 text-output 0 msgpack:{}", "on a server stream"),
        ("0 2 0 stream-settings eos msgpack:{'encoding': 'nope'}", "unknown encoding"),
        ("1 2 0 error-response 0 msgpack:{'message': 'no code'}", "lacks the field"),
        ("0 0 0 error-response 0 b'garbage'", "not valid MessagePack"),
    ],
)
def test_server_protocol_errors(lines: str, match: str) -> None:
    client = connected()
    assert _open_stream_2(client) == 1
    data = b"".join(f.encode() for f in parse_lines(lines))
    with pytest.raises(ProtocolError, match=match):
        client.receive_data(data)


def test_oversize_frame_from_the_server() -> None:
    client = connected(ClientSettings(max_frame_size=1024))
    _open_stream_2(client)
    with pytest.raises(ProtocolError, match="exceeds max_frame_size 1024"):
        client.receive_data(encode_frame(1, 2, 0, FrameType.COMMAND_RESPONSE, 2, bytes(1025)))


def test_corrupt_or_oversized_encoded_response() -> None:
    client = connected()
    _open_stream_2(client)
    settings = pack(stream_settings_for("zstd-8mb", 3, "stream").to_wire())
    client.receive_data(encode_frame(0, 2, 0, FrameType.STREAM_SETTINGS, 2, settings))
    with pytest.raises(DecodeError):
        client.receive_data(
            encode_frame(1, 2, StreamFlags.ENCODED, FrameType.COMMAND_RESPONSE, 2, b"junk" * 9)
        )
    client = connected(decode_cap=1000)
    rid, _ = client.send_request(1, "get")
    writer = ServerStreamWriter(2, stream_settings_for("zlib", 6, "stream"), 32768)
    with pytest.raises(DecodeError, match="limit"):
        client.receive_data(writer.response(rid, {"status": "ok"}, bytes(5000)))
    client = connected()
    wide = pack({"encoding": "zstd-8mb", "window_log": 30})
    with pytest.raises(DecodeError, match="8 MiB"):
        client.receive_data(encode_frame(0, 2, 1, FrameType.STREAM_SETTINGS, 2, wide))


# ---- a whole conversation through both connections --------------------------------------------


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
def test_conversation_through_both_sides(encoding: str, context: str) -> None:
    """A client and a toy echo server on the core, every request answered on stream c + 1."""
    client = ClientConnection(ClientSettings(encodings=(encoding,), context=context, level=1))
    server = ServerConnection(LIMITS, server_settings())
    client.receive_data(server.initial_bytes())
    up = client.initiate() + client.set_data_encoding(5, StreamSettings("zlib", 1, None, context))
    sent: dict[int, bytes] = {}
    for i in range(6):
        stream = (1, 3, 5)[i % 3]
        body = text(5000 * i)
        rid, data = client.send_request(stream, "echo", {}, body, end_stream=i >= 3)
        sent[rid] = body
        up += data
    writers: dict[int, ServerStreamWriter] = {}
    decoders: dict[int, Decoder] = {}
    down = b""
    negotiated: StreamSettings | None = None
    for i in range(len(up)):  # byte by byte: any split gives the same events
        for event in server.receive_data(up[i : i + 1]):
            if isinstance(event, StreamSettingsReceived):
                decoders[event.stream_id] = Decoder(event.settings)
            elif isinstance(event, RequestReady):
                assert negotiated is not None
                if event.stream_id not in writers:
                    writers[event.stream_id] = ServerStreamWriter(
                        event.stream_id + 1, negotiated, 32768
                    )
                writer = writers[event.stream_id]
                body = b"".join(
                    decoders[event.stream_id].decode(c.payload, 1 << 30) if c.encoded else c.payload
                    for c in event.data
                )
                down += writer.response(
                    event.request_id, {"status": "ok"}, body, end_stream=event.end_stream
                )
                server.response_sent(event.request_id)
            elif isinstance(event, SettingsReceived):
                negotiated = stream_settings_for(
                    encoding if encoding in event.settings.encodings else "identity", 1, context
                )
            else:
                pytest.fail(f"unexpected event {event}")
    assert server.in_flight_ids() == []
    events = client.receive_data(down)
    for rid, body in sent.items():
        assert body_of(events, rid) == body
    assert sum(isinstance(e, ResponseComplete) for e in events) == len(sent)
    assert sorted(e.stream_id for e in events if isinstance(e, ServerStreamEnded)) == [2, 4, 6]
    assert client.in_flight == 0
