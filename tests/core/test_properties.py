"""Property tests (Hypothesis) of the protocol core: header and notation round trips, split
invariance of frame parsing and of the server state machine, encode/decode round trips for every
profile x context, and robustness against random and mutated input."""

from __future__ import annotations

import itertools

from event_checks import ECHO_MAP, check_events, chunks, connection, feed_all
from hypothesis import assume, given
from hypothesis import strategies as st

from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import Decoder, Encoder, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode, RemoteError
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    ServerEvent,
    StreamSettingsReceived,
)
from server.protocol.frames import (
    HEADER_SIZE,
    MAX_PAYLOAD_FIELD,
    Frame,
    FrameDecoder,
    pack_header,
    unpack_header,
)
from server.protocol.notation import format_frame, parse_line
from server.protocol.payloads import (
    CONTEXTS,
    ENCODINGS,
    ClientSettings,
    StreamSettings,
    pack,
)
from server.protocol.responses import ServerStreamWriter

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))

frames = st.builds(
    Frame,
    request_id=st.integers(0, 0xFFFF),
    stream_id=st.integers(0, 0xFF),
    stream_flags=st.integers(0, 0xFF),
    type=st.integers(0, 0xF),
    flags=st.integers(0, 0xF),
    payload=st.binary(max_size=80),
)


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
    for chunk in chunks(wire, cuts):
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


@given(st.lists(plausible_frames, max_size=14), st.lists(st.integers(0, 5000), max_size=10))
def test_any_split_gives_the_same_events(sequence: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(f.encode() for f in sequence)
    conn = connection(max_streams=2, max_inflight_per_stream=2)
    whole = conn.receive_data(wire)
    split = feed_all(connection(max_streams=2, max_inflight_per_stream=2), chunks(wire, cuts))
    assert split == whole
    check_events(whole, conn)


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
    whole = connection().receive_data(wire)
    assert not any(isinstance(e, ConnectionFailed) for e in whole)
    assert [e.request_id for e in whole if isinstance(e, RequestReady)] == rids
    assert feed_all(connection(), chunks(wire, cuts)) == whole


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
    conn = connection()
    events = feed_all(conn, chunks(prefix + data, cuts))
    check_events(events, conn)
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
    conn = connection(max_streams=2, max_request_data_bytes=2000)
    events = feed_all(conn, chunks(mutated, cuts))
    check_events(events, conn)
    _worker_decode(events)


# ---- the client connection against random and mutated server bytes --------------------------


def _server_capture(
    bodies: list[bytes], encoding: str, context: str
) -> tuple[bytes, ClientConnection]:
    client = ClientConnection(ClientSettings())
    client.receive_data(connection().initial_bytes())
    writer = ServerStreamWriter(2, stream_settings_for(encoding, 1, context), 1024)
    wire = connection().initial_bytes()
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
        for chunk in chunks(mutated, cuts):
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
        pieces = payloads if context == "frame" else chunks(b"".join(payloads), cuts)
        # Every response is whole once its last piece has been decoded.
        assert b"".join(decoder.decode(p, 1 << 30) for p in pieces) == body
