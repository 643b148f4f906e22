"""Framing and decoding tested at their boundaries, not near them: payload lengths that need
the third length byte (0xFFFF, 0x10000, 0xFFFFFF), frames of 64 KiB to 200 KB in any split, a
request map over 64 KiB in one 1 MiB frame, and zstd windows of exactly 8 MiB (accepted) and
16 MiB (refused) both in the zstd frame header and in stream-settings. The numbers are written
out, never derived from the constants under test."""

from __future__ import annotations

import itertools

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from server.protocol.encoding import Decoder
from server.protocol.errors import DecodeError, ErrorCode, ProtocolError
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    StreamSettingsReceived,
)
from server.protocol.frames import Frame, FrameDecoder, decode_frames, pack_header
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ServerSettings, StreamSettings, pack, unpack_map
from server.protocol.server_conn import ServerConnection

SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, Limits().to_wire())
LARGEST_FIELD = 0xFFFFFF  # 16,777,215: the 24-bit length field all ones
BIG = 1 << 30


def _payload(size: int, seed: int) -> bytes:
    """``size`` bytes whose content depends on ``seed`` and on the position (so a parser that
    cuts at the wrong place never sees the same bytes by chance)."""
    block = bytes((seed + i * 7) % 256 for i in range(251))  # a prime period
    return (block * (size // len(block) + 1))[:size]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ---- the 24-bit length field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "wire"),
    [
        (0xFFFF, b"\xff\xff\x00"),
        (0x10000, b"\x00\x00\x01"),
        (LARGEST_FIELD, b"\xff\xff\xff"),
    ],
)
def test_a_header_alone_announces_its_exact_length(length: int, wire: bytes) -> None:
    header = pack_header(length, 1, 1, 1, 1, 1)
    assert header[:3] == wire
    # Room for it: the decoder waits for the whole payload, holding only the header.
    roomy = FrameDecoder(LARGEST_FIELD)
    assert roomy.feed(header) == []
    assert roomy.error is None and roomy.buffered == 8
    # One byte short of room: refused from the header alone, naming the announced length.
    tight = FrameDecoder(length - 1)
    assert tight.feed(header) == []
    assert tight.error is not None
    assert tight.error.code is ErrorCode.PROTOCOL
    assert f"payload of {length} bytes" in tight.error.message


@pytest.mark.parametrize("length", [0xFFFF, 0x10000, 0x10001, 0x4000 * 3 + 5])
def test_a_frame_is_complete_exactly_at_its_announced_length(length: int) -> None:
    payload = _payload(length, 3)
    wire = Frame(1, 1, 1, 1, 1, payload).encode()
    decoder = FrameDecoder(LARGEST_FIELD)
    assert decoder.feed(wire[:-1]) == []
    assert decoder.buffered == len(wire) - 1
    (frame,) = decoder.feed(wire[-1:])
    assert frame.payload == payload
    assert decoder.buffered == 0
    # What follows the frame is the next header, not more payload.
    assert decode_frames(wire + Frame(3, 1, 0, 2, 2, b"next").encode())[1].payload == b"next"


def test_a_header_over_the_limit_at_the_largest_field_stops_a_1_mib_decoder() -> None:
    decoder = FrameDecoder(1 << 20)
    before = Frame(1, 1, 1, 1, 1, b"x").encode()
    frames = decoder.feed(before + pack_header(LARGEST_FIELD, 3, 1, 0, 1, 1))
    assert frames == [Frame(1, 1, 1, 1, 1, b"x")]
    assert decoder.error is not None and "16777215" in decoder.error.message
    assert decoder.feed(b"\x00" * 64) == []  # nothing is parsed after it


large_payloads = st.builds(_payload, st.integers(65_536, 200_000), st.integers(0, 255))
small_payloads = st.binary(max_size=40)


@given(
    st.lists(
        st.builds(
            Frame,
            request_id=st.integers(0, 0xFFFF),
            stream_id=st.integers(0, 0xFF),
            stream_flags=st.integers(0, 0xFF),
            type=st.integers(0, 0xF),
            flags=st.integers(0, 0xF),
            payload=st.one_of(large_payloads, small_payloads),
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(0, 1_000_000), max_size=12),
)
def test_large_frames_in_any_split_give_the_same_frames(
    sequence: list[Frame], cuts: list[int]
) -> None:
    wire = b"".join(f.encode() for f in sequence)
    decoder = FrameDecoder(LARGEST_FIELD)
    got: list[Frame] = []
    for chunk in _chunks(wire, cuts):
        got += decoder.feed(chunk)
    assert got == sequence
    assert decoder.buffered == 0 and decoder.error is None


# ---- a request map over 64 KiB in one frame -----------------------------------------------


def _map_of(size: int) -> bytes:
    command = pack({"name": "echo", "args": {"pad": b"p" * size}})
    assert 70_000 <= len(command) < 71_000
    return command


def _one_frame_request(command: bytes) -> bytes:
    return Frame(1, 1, 1, 1, 1, command).encode()  # begin, new, no more: complete


def test_a_70_kb_request_map_in_one_frame_of_a_1_mib_connection() -> None:
    command = _map_of(70_000)
    wire = _one_frame_request(command)
    assert wire[2] == 1  # the length needs the third byte
    conn = ServerConnection(
        Limits(max_frame_size=1 << 20, max_request_map_bytes=128 << 10), SERVER_SETTINGS
    )
    events = conn.receive_data(wire)
    (ready,) = [e for e in events if isinstance(e, RequestReady)]
    assert ready.command_map == command
    assert ready.args == {"pad": b"p" * 70_000}
    assert conn.in_flight_ids() == [1] and conn.inflight == 1


def test_a_70_kb_request_map_over_max_request_map_bytes_is_too_large_for_its_request() -> None:
    conn = ServerConnection(Limits(max_frame_size=1 << 20), SERVER_SETTINGS)  # map limit 64 KiB
    events = conn.receive_data(_one_frame_request(_map_of(70_000)))
    assert not any(isinstance(e, ConnectionFailed) for e in events)
    (rejected,) = [e for e in events if isinstance(e, RequestRejected)]
    assert (rejected.request_id, rejected.code) == (1, ErrorCode.TOO_LARGE)
    assert "max_request_map_bytes" in rejected.message


def test_a_70_kb_frame_on_a_default_connection_is_connection_level() -> None:
    conn = ServerConnection(Limits(), SERVER_SETTINGS)  # max_frame_size 32 KiB
    (failed,) = conn.receive_data(_one_frame_request(_map_of(70_000)))
    assert isinstance(failed, ConnectionFailed)
    assert failed.code is ErrorCode.PROTOCOL
    assert "exceeds max_frame_size 32768" in failed.message


# ---- the zstd window: 8 MiB accepted, 16 MiB refused ----------------------------------------


def _zstd_payload(window_log: int, data: bytes) -> bytes:
    """The start of a streamed zstd frame (no content size, so the header states the
    window) whose window is ``1 << window_log``."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    payload = cobj.compress(data) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert zstandard.get_frame_parameters(payload).window_size == 1 << window_log
    return payload


def test_a_zstd_frame_with_an_8_mib_window_is_decoded() -> None:
    data = _payload(5000, 9)
    decoder = Decoder(StreamSettings("zstd-8mb", 3, 23, "stream"))
    assert decoder.decode(_zstd_payload(23, data), BIG) == data


@pytest.mark.parametrize("settings_window_log", [23, None])
def test_a_zstd_frame_with_a_16_mib_window_is_refused(settings_window_log: int | None) -> None:
    decoder = Decoder(StreamSettings("zstd-8mb", 3, settings_window_log, "stream"))
    with pytest.raises(DecodeError) as info:
        decoder.decode(_zstd_payload(24, _payload(5000, 9)), BIG)
    assert info.value.code is ErrorCode.TOO_LARGE


def test_stream_settings_window_log_23_accepted_24_refused_by_the_decoder() -> None:
    Decoder(StreamSettings("zstd-8mb", 3, 23, "stream"))
    with pytest.raises(DecodeError) as info:
        Decoder(StreamSettings("zstd-8mb", 3, 24, "stream"))
    assert info.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(("window_log", "accepted"), [(22, True), (23, True), (24, False)])
def test_stream_settings_window_log_on_the_connection(window_log: int, accepted: bool) -> None:
    conn = ServerConnection(Limits(), SERVER_SETTINGS)
    payload = pack({"encoding": "zstd-8mb", "window_log": window_log})
    events = conn.receive_data(Frame(0, 1, 1, 9, 2, payload).encode())
    if accepted:
        settings = StreamSettings("zstd-8mb", None, window_log, "stream")
        assert events[-1] == StreamSettingsReceived(1, settings)
        assert not conn.failed
        return
    failed = events[-1]
    assert isinstance(failed, ConnectionFailed)
    assert failed.code is ErrorCode.TOO_LARGE
    (frame,) = decode_frames(failed.data)
    assert unpack_map(frame.payload, "error")["code"] == "too-large"
    assert conn.failed


def test_a_protocol_error_is_what_the_decoder_reports_for_an_oversize_header() -> None:
    decoder = FrameDecoder(0x10000)
    decoder.feed(pack_header(0x10001, 1, 1, 1, 1, 1))
    assert isinstance(decoder.error, ProtocolError)
    assert "65537" in decoder.error.message
