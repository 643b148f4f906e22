"""Property tests (Hypothesis) of the protocol core: header and notation round trips, split
invariance of frame parsing and of the server state machine, encode/decode round trips for every
profile x context, and robustness against random and mutated input."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import Phase, assume, find, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import Decoder, Encoder, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode, RemoteError
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.frames import (
    HEADER_SIZE,
    MAX_PAYLOAD_FIELD,
    Frame,
    FrameDecoder,
    decode_frames,
    pack_header,
    unpack_header,
)
from server.protocol.limits import Limits
from server.protocol.notation import format_frame, parse_line
from server.protocol.payloads import (
    CONTEXTS,
    ENCODINGS,
    ClientSettings,
    ServerSettings,
    StreamSettings,
    pack,
    unpack_map,
)
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))
SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, Limits().to_wire())
ECHO_MAP = pack({"name": "echo", "args": {}})

frames = st.builds(
    Frame,
    request_id=st.integers(0, 0xFFFF),
    stream_id=st.integers(0, 0xFF),
    stream_flags=st.integers(0, 0xFF),
    type=st.integers(0, 0xF),
    flags=st.integers(0, 0xF),
    payload=st.binary(max_size=80),
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ---- headers, frames and notation -----------------------------------------------------------


@given(
    length=st.integers(0, MAX_PAYLOAD_FIELD),
    request_id=st.integers(0, 0xFFFF),
    stream_id=st.integers(0, 0xFF),
    stream_flags=st.integers(0, 0xFF),
    ftype=st.integers(0, 0xF),
    flags=st.integers(0, 0xF),
)
def test_header_round_trip(
    length: int, request_id: int, stream_id: int, stream_flags: int, ftype: int, flags: int
) -> None:
    header = pack_header(length, request_id, stream_id, stream_flags, ftype, flags)
    assert len(header) == HEADER_SIZE
    assert unpack_header(header) == (length, request_id, stream_id, stream_flags, ftype, flags)
    assert header[:3] == length.to_bytes(3, "little")


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_gives_the_same_frames(sequence: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(f.encode() for f in sequence)
    decoder = FrameDecoder(MAX_PAYLOAD_FIELD)
    got: list[Frame] = []
    for chunk in _chunks(wire, cuts):
        got += decoder.feed(chunk)
    assert got == sequence
    assert decoder.buffered == 0 and decoder.error is None


@given(frames)
def test_notation_round_trip(frame: Frame) -> None:
    line = format_frame(frame)
    assert parse_line(line) == frame
    assert format_frame(parse_line(line)) == line
    assert "\n" not in line


@given(st.binary(max_size=200))
def test_notation_payload_forms_agree(payload: bytes) -> None:
    base = "1 1 0 command-request new "
    assert parse_line(base + "0x" + payload.hex()).payload == payload
    assert parse_line(base + "hex:" + payload.hex(" ")).payload == payload
    assert parse_line(base + repr(payload)).payload == payload


# ---- the server connection: split invariance and robustness ---------------------------------

# Frames a client might plausibly send, valid or not, so that the state machines get exercised
# beyond the first frame.
plausible_payloads = st.one_of(
    st.just(b""),
    st.just(ECHO_MAP),
    st.just(ECHO_MAP[:5]),
    st.just(ECHO_MAP[5:]),
    st.just(pack({"encoding": "zlib"})),
    st.just(pack({"encoding": "zstd-8mb", "window_log": 24})),
    st.just(pack(ClientSettings().to_wire())),
    st.binary(max_size=20),
)
plausible_frames = st.builds(
    Frame,
    request_id=st.sampled_from([0, 1, 3, 5, 2]),
    stream_id=st.sampled_from([1, 3, 5, 1, 3, 0, 2]),
    stream_flags=st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 8]),
    type=st.sampled_from([1, 1, 1, 2, 2, 8, 9, 9, 3, 4]),
    flags=st.integers(0, 0xF),
    payload=plausible_payloads,
)


def _connection(**limits: Any) -> ServerConnection:
    return ServerConnection(Limits(**limits), SERVER_SETTINGS)


REQUEST_LEVEL_CODES = {
    ErrorCode.BAD_REQUEST,
    ErrorCode.TOO_LARGE,
    ErrorCode.TOO_MANY_STREAMS,
    ErrorCode.OVERLOADED,
    ErrorCode.SHUTTING_DOWN,
}


def _check_events(events: list[ServerEvent], conn: ServerConnection | None = None) -> None:
    """What the front may rely on, whatever the input: at most one ConnectionFailed, last,
    with a documented connection-level code, whose frame is what the connection sends;
    requests and streams with valid ids, each request answered at most once by an event,
    request-level codes only; and (given the connection) every request event still in
    flight, none of them still incomplete."""
    failures = [i for i, e in enumerate(events) if isinstance(e, ConnectionFailed)]
    assert len(failures) <= 1
    if failures:
        assert failures[0] == len(events) - 1
        failed = events[-1]
        assert isinstance(failed, ConnectionFailed)
        assert failed.code in (ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE)
        (frame,) = decode_frames(failed.data)
        assert (frame.request_id, frame.stream_id, frame.type) == (0, 0, 5)
        assert unpack_map(frame.payload, "error")["code"] == failed.code.value
        if conn is not None:
            assert conn.failed and conn.data_to_send().endswith(failed.data)
    request_ids: list[int] = []
    for event in events:
        if isinstance(event, RequestReady | RequestRejected):
            assert event.request_id % 2 == 1 and event.stream_id % 2 == 1
            request_ids.append(event.request_id)
        if isinstance(event, RequestReady):
            command = unpack_map(event.command_map, "command")
            assert (command["name"], command.get("args", {})) == (event.name, event.args)
            assert event.has_data or not event.data
        elif isinstance(event, RequestRejected):
            assert event.code in REQUEST_LEVEL_CODES
        elif isinstance(event, StreamEnded | StreamReset | StreamSettingsReceived):
            assert event.stream_id % 2 == 1
    assert len(request_ids) == len(set(request_ids)), "a request answered twice"
    if conn is not None and not conn.failed:
        in_flight = set(conn.in_flight_ids())
        incomplete = set(conn.incomplete_ids())
        assert set(request_ids) <= in_flight
        assert not set(request_ids) & incomplete
        assert conn.inflight <= len(in_flight)


def _feed_all(conn: ServerConnection, chunks: list[bytes]) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
        assert conn.inflight >= 0
    return events


@given(st.lists(plausible_frames, max_size=14), st.lists(st.integers(0, 5000), max_size=10))
def test_any_split_gives_the_same_events(sequence: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(f.encode() for f in sequence)
    conn = _connection(max_streams=2, max_inflight_per_stream=2)
    whole = conn.receive_data(wire)
    split = _feed_all(_connection(max_streams=2, max_inflight_per_stream=2), _chunks(wire, cuts))
    assert split == whole
    _check_events(whole, conn)


# Requests of one to three frames with valid flags, on streams 1, 3 and 5 (sometimes 2), with
# begin or end here and there and an occasional frame dropped or repeated, after frames opening
# streams 1 and 3: most sequences complete requests and reach the limits (plain random flags
# end 9 in 10 sequences at their first frame).
OPENING = Frame(0, 1, 1, 9, 2).encode() + Frame(0, 3, 1, 9, 2).encode()


@st.composite
def likely_frames(draw: st.DrawFn) -> list[Frame]:
    frames: list[Frame] = []
    for n in range(draw(st.integers(0, 8))):
        rid = draw(st.sampled_from([2 * n + 1] * 6 + [1, 2]))
        sid = draw(st.sampled_from([1, 1, 3, 3, 5, 2]))
        shape = draw(st.sampled_from(["one", "two", "data", "settings"]))
        begin = draw(st.sampled_from([0, 0, 0, 1]))
        end = draw(st.sampled_from([0, 0, 0, 2]))
        if shape == "one":
            unit = [Frame(rid, sid, begin | end, 1, 0x1, ECHO_MAP)]
        elif shape == "two":
            unit = [
                Frame(rid, sid, begin, 1, 0x1 | 0x4, ECHO_MAP[:5]),
                Frame(rid, sid, end, 1, 0x2, ECHO_MAP[5:]),
            ]
        elif shape == "data":
            body = draw(st.binary(max_size=30))
            unit = [
                Frame(rid, sid, begin, 1, 0x1 | 0x8, ECHO_MAP),
                Frame(rid, sid, end, 2, 0x2, body),
            ]
        else:
            unit = [Frame(0, sid, begin | end, 9, 0x2, pack({"encoding": "zlib"}))]
        fault = draw(st.sampled_from(["none"] * 8 + ["drop", "repeat"]))
        if fault == "drop":
            unit.pop(0)
        elif fault == "repeat":
            unit.append(unit[-1])
        frames += unit
    return frames


@given(likely_frames(), st.lists(st.integers(0, 5000), max_size=6))
def test_likely_frames_any_split_and_bookkeeping(sequence: list[Frame], cuts: list[int]) -> None:
    wire = OPENING + b"".join(f.encode() for f in sequence)
    conn = _connection(max_streams=2, max_inflight_per_stream=2)
    whole = conn.receive_data(wire)
    for e in whole:
        note(type(e).__name__)
    split = _feed_all(_connection(max_streams=2, max_inflight_per_stream=2), _chunks(wire, cuts))
    assert split == whole
    _check_events(whole, conn)


def test_likely_frames_reach_complete_requests_and_rejections() -> None:
    """The strategy is not shallow: it completes requests, with data, and rejects some."""

    def events_of(sequence: list[Frame]) -> list[ServerEvent]:
        return _connection(max_streams=2, max_inflight_per_stream=2).receive_data(
            OPENING + b"".join(f.encode() for f in sequence)
        )

    strategy = likely_frames()
    settings_ = settings(database=None, max_examples=5000, phases=[Phase.generate])
    with_data = find(
        strategy,
        lambda seq: any(isinstance(e, RequestReady) and e.data for e in events_of(seq)),
        settings=settings_,
    )
    assert any(isinstance(e, RequestReady) for e in events_of(with_data))
    find(
        strategy,
        lambda seq: any(isinstance(e, RequestRejected) for e in events_of(seq)),
        settings=settings_,
    )


def _client_capture(seed: int, bodies: list[bytes], context: str) -> tuple[bytes, list[int]]:
    """A valid client conversation: settings, an encoded stream, requests on three streams."""
    client = ClientConnection(ClientSettings(encodings=("zstd-8mb",), context=context))
    wire = client.initiate()
    wire += client.set_data_encoding(3, StreamSettings("zlib", 1, None, context))
    rids = []
    for i, body in enumerate(bodies):
        stream = (1, 3, 5)[(seed + i) % 3]
        rid, data = client.send_request(
            stream, "put" if i % 2 else "echo", {"key": f"k{i}"}, body, end_stream=i % 4 == 3
        )
        rids.append(rid)
        wire += data
    wire += client.end_stream(1)
    return wire, rids


bodies_strategy = st.lists(
    st.one_of(st.binary(max_size=300), st.builds(lambda n: b"abc" * n, st.integers(0, 2000))),
    min_size=1,
    max_size=6,
)


@given(
    st.integers(0, 2),
    bodies_strategy,
    st.sampled_from(CONTEXTS),
    st.lists(st.integers(0, 100_000), max_size=10),
)
def test_valid_conversation_any_split(
    seed: int, bodies: list[bytes], context: str, cuts: list[int]
) -> None:
    wire, rids = _client_capture(seed, bodies, context)
    whole = _connection().receive_data(wire)
    assert not any(isinstance(e, ConnectionFailed) for e in whole)
    assert [e.request_id for e in whole if isinstance(e, RequestReady)] == rids
    assert _feed_all(_connection(), _chunks(wire, cuts)) == whole


conversation_ops = st.lists(
    st.tuples(
        st.sampled_from([1, 3, 5]),
        st.sampled_from(["request", "request", "request", "encoding", "end"]),
        st.one_of(
            st.none(),
            st.binary(max_size=200),
            st.builds(lambda n: b"xyz" * n, st.integers(0, 3000)),
        ),
        st.sampled_from(PROFILES),
        st.booleans(),
    ),
    min_size=1,
    max_size=14,
)


@given(
    conversation_ops,
    st.lists(st.integers(0, 2), max_size=60),
    st.lists(st.integers(0, 1 << 17), max_size=8),
)
def test_interleaved_streams_deliver_every_request_and_its_data(
    ops: list[tuple[int, str, bytes | None, tuple[str, str], bool]],
    order: list[int],
    cuts: list[int],
) -> None:
    """Streams interleaved frame by frame, encodings changing, streams ended and begun again:
    every request arrives once, in order on its stream, with its name, arguments and exactly
    the data the client sent once the worker-side decoder has read it."""
    client = ClientConnection(ClientSettings())
    queues: dict[int, list[Frame]] = {1: [], 3: [], 5: []}
    sent: dict[int, tuple[int, dict[str, Any], bytes | None]] = {}
    for n, (sid, kind, body, (encoding, context), end) in enumerate(ops):
        if kind == "encoding":
            data = client.set_data_encoding(sid, stream_settings_for(encoding, 1, context))
        elif kind == "end":
            data = client.end_stream(sid)
        else:
            rid, data = client.send_request(sid, "echo", {"n": n}, body, end_stream=end)
            sent[rid] = (sid, {"n": n}, body)
        queues[sid] += decode_frames(data)
    # Interleave the streams' frames (each stream's own order kept).
    frames: list[Frame] = []
    picks = iter(order)
    while any(queues.values()):
        ready_streams = [sid for sid in (1, 3, 5) if queues[sid]]
        sid = ready_streams[next(picks, 0) % len(ready_streams)]
        frames.append(queues[sid].pop(0))
    wire = client.initiate() + b"".join(f.encode() for f in frames)
    conn = _connection()
    events = _feed_all(conn, _chunks(wire, cuts))
    _check_events(events, conn)
    assert not any(isinstance(e, ConnectionFailed | RequestRejected) for e in events)
    decoders: dict[int, Decoder] = {}
    got: list[int] = []
    for event in events:
        if isinstance(event, StreamSettingsReceived):
            decoders.pop(event.stream_id, None)
            if event.settings.encoding != "identity":
                decoders[event.stream_id] = Decoder(event.settings)
        elif isinstance(event, StreamEnded | StreamReset):
            decoders.pop(event.stream_id, None)
        elif isinstance(event, RequestReady):
            sid, args, body = sent[event.request_id]
            assert (event.stream_id, event.name, event.args) == (sid, "echo", args)
            assert event.has_data is (body is not None)
            data = b"".join(
                decoders[sid].decode(c.payload, 1 << 30) if c.encoded else c.payload
                for c in event.data
            )
            assert data == (body or b"")
            note("encoded data" if any(c.encoded for c in event.data) else "request")
            got.append(event.request_id)
            if event.end_stream:
                decoders.pop(sid, None)
    assert sorted(got) == sorted(sent)
    for sid in (1, 3, 5):
        on_stream = [rid for rid in got if sent[rid][0] == sid]
        assert on_stream == sorted(on_stream)  # ids rise with sending order on a stream
    assert conn.in_flight_ids() == sorted(sent)


def _worker_decode(events: list[ServerEvent]) -> None:
    """What a worker does with the events: only DecodeError may come out of the decoders."""
    decoders: dict[int, Decoder | None] = {}
    for event in events:
        try:
            if isinstance(event, StreamSettingsReceived):
                encoded = event.settings.encoding != "identity"
                decoders[event.stream_id] = Decoder(event.settings) if encoded else None
            elif isinstance(event, RequestReady):
                decoder = decoders.get(event.stream_id)
                for chunk in event.data:
                    if chunk.encoded:
                        assert decoder is not None
                        decoder.decode(chunk.payload, 1 << 20)
        except DecodeError:
            return  # the front ends the connection with too-large


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6), st.booleans())
def test_random_bytes_never_raise(data: bytes, cuts: list[int], with_settings: bool) -> None:
    prefix = b""
    if with_settings:
        prefix = Frame(0, 1, 1, 8, 2, pack(ClientSettings().to_wire())).encode()
    conn = _connection()
    events = _feed_all(conn, _chunks(prefix + data, cuts))
    _check_events(events, conn)
    _worker_decode(events)
    if any(isinstance(e, ConnectionFailed) for e in events):
        assert conn.receive_data(b"\x00" * 16) == []


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        if not buf:
            break
        i = where % len(buf)
        if kind == "set":
            buf[i] = value
        elif kind == "flip":
            buf[i] ^= 1 << value
        elif kind == "insert":
            buf.insert(i, value)
        elif kind == "delete":
            del buf[i : i + value]
        else:
            del buf[i:]
    return bytes(buf)


@given(
    st.integers(0, 2),
    bodies_strategy,
    st.sampled_from(CONTEXTS),
    st.lists(mutation, min_size=1, max_size=6),
    st.lists(st.integers(0, 100_000), max_size=6),
)
def test_mutated_captures_never_raise(
    seed: int,
    bodies: list[bytes],
    context: str,
    mutations: list[tuple[str, int, int]],
    cuts: list[int],
) -> None:
    wire, _ = _client_capture(seed, bodies, context)
    mutated = _mutate(wire, mutations)
    assume(mutated != wire)
    conn = _connection(max_streams=2, max_request_data_bytes=2000)
    events = _feed_all(conn, _chunks(mutated, cuts))
    _check_events(events, conn)
    _worker_decode(events)


# ---- the client connection against random and mutated server bytes --------------------------


def _server_capture(
    bodies: list[bytes], encoding: str, context: str
) -> tuple[bytes, ClientConnection]:
    client = ClientConnection(ClientSettings())
    client.receive_data(_connection().initial_bytes())
    writer = ServerStreamWriter(2, stream_settings_for(encoding, 1, context), 1024)
    wire = _connection().initial_bytes()
    for body in bodies:
        rid, _ = client.send_request(1, "get")
        wire += writer.response(rid, {"status": "ok", "size": len(body)}, body)
    return wire, client


@given(
    bodies_strategy,
    st.sampled_from(PROFILES),
    st.lists(mutation, max_size=4),
    st.lists(st.integers(0, 100_000), max_size=6),
)
def test_client_raises_only_protocol_errors(
    bodies: list[bytes],
    profile: tuple[str, str],
    mutations: list[tuple[str, int, int]],
    cuts: list[int],
) -> None:
    wire, client = _server_capture(bodies, *profile)
    mutated = _mutate(wire, mutations)
    try:
        for chunk in _chunks(mutated, cuts):
            client.receive_data(chunk)
    except RemoteError as exc:  # ProtocolError or DecodeError: documented
        assert exc.code in (ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE)
    else:
        if not mutations:
            assert client.in_flight == 0


# ---- encodings: every profile x context, arbitrary frame cuts --------------------------------

response_bodies = st.lists(
    st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 30_000)),
    ),
    min_size=1,
    max_size=5,
)


@given(
    st.sampled_from(PROFILES),
    response_bodies,
    st.sampled_from([1024, 4096, 32768]),
    st.lists(st.integers(0, 1 << 20), max_size=20),
)
def test_encode_decode_round_trip(
    profile: tuple[str, str], bodies: list[bytes], max_payload: int, cuts: list[int]
) -> None:
    encoding, context = profile
    settings = stream_settings_for(encoding, 1, context)
    encoder = Encoder(settings, max_payload)
    decoder = Decoder(settings) if encoder.encoded else None
    for body in bodies:
        payloads = encoder.encode_response(body)
        assert all(len(p) <= max_payload for p in payloads)
        if decoder is None:
            assert b"".join(payloads) == body
            continue
        # Under the frame context every frame is a complete unit, so frames are the cuts; the
        # other contexts are byte streams that may be cut anywhere.
        pieces = payloads if context == "frame" else _chunks(b"".join(payloads), cuts)
        # Every response is whole once its last piece has been decoded.
        assert b"".join(decoder.decode(p, 1 << 30) for p in pieces) == body
