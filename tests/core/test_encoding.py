"""Content encodings (docs/protocol.md section 3): every profile x context, bounded decoders."""

from __future__ import annotations

import itertools
import random
import zlib

import pytest
import zstandard

from server.protocol.encoding import (
    DEFAULT_LEVEL,
    Decoder,
    Encoder,
    clamp_level,
    negotiate_encoding,
    stream_settings_for,
)
from server.protocol.errors import DecodeError, ErrorCode
from server.protocol.limits import MAX_WINDOW_LOG
from server.protocol.payloads import CONTEXTS, ENCODINGS, StreamSettings

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))
COMPRESSING = [(e, c) for e, c in PROFILES if e != "identity"]
BIG = 1 << 30


def _text(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"\n", b"{}"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


RESPONSES = [
    b"",
    b"x",
    _text(100),
    _text(300_000, 1),
    bytes(2_000_000),  # compresses ~5000x: blocks that decode past one output buffer
    random.Random(2).randbytes(70_000),  # incompressible
    _text(40_000, 3),
]


def _settings(encoding: str, context: str, level: int = 3) -> StreamSettings:
    return stream_settings_for(encoding, level, context)


def test_clamp_level() -> None:
    assert clamp_level("identity", 5, 19) is None
    assert clamp_level("zstd-8mb", None, 19) == DEFAULT_LEVEL
    assert clamp_level("zstd-8mb", 22, 19) == 19
    assert clamp_level("zstd-8mb", 22, 30) == zstandard.MAX_COMPRESSION_LEVEL
    assert clamp_level("zstd-8mb", -5, 19) == 1
    assert clamp_level("zlib", 12, 19) == 9
    assert clamp_level("zlib", 8, 6) == 6
    assert clamp_level("zlib", -1, 19) == 0


def test_negotiate_encoding() -> None:
    assert negotiate_encoding(("brotli", "zlib", "zstd-8mb")) == "zlib"
    assert negotiate_encoding(("brotli",)) == "identity"
    assert negotiate_encoding(()) == "identity"
    assert negotiate_encoding(("zstd-8mb",), ("zlib", "identity")) == "identity"


def test_stream_settings_for() -> None:
    assert stream_settings_for("zstd-8mb", 3, "stream") == StreamSettings(
        "zstd-8mb", 3, MAX_WINDOW_LOG, "stream"
    )
    assert stream_settings_for("zlib", 6, "frame") == StreamSettings("zlib", 6, None, "frame")
    assert stream_settings_for("identity", 3, "request") == StreamSettings(
        "identity", None, None, "request"
    )


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
@pytest.mark.parametrize("max_payload", [1024, 32768])
def test_round_trip_every_profile_and_context(
    encoding: str, context: str, max_payload: int
) -> None:
    settings = _settings(encoding, context)
    encoder = Encoder(settings, max_payload)
    assert encoder.encoded == (encoding != "identity")
    decoder = Decoder(settings) if encoder.encoded else None
    for response in RESPONSES:
        payloads = encoder.encode_response(response)
        assert all(len(p) <= max_payload for p in payloads)
        if encoding == "identity":
            assert b"".join(payloads) == response
            assert all(len(p) == max_payload for p in payloads[:-1])
            continue
        assert decoder is not None
        # Fully decodable once the response's last payload has been decoded.
        assert b"".join(decoder.decode(p, BIG) for p in payloads) == response
        if context == "frame":
            for payload in payloads:  # each frame is a complete unit
                Decoder(settings).decode(payload, BIG)


@pytest.mark.parametrize(("encoding", "context"), COMPRESSING)
def test_feed_in_pieces_then_end_response(encoding: str, context: str) -> None:
    settings = _settings(encoding, context)
    encoder = Encoder(settings, 4096)
    decoder = Decoder(settings)
    data = _text(100_000, 4)
    payloads = []
    for i in range(0, len(data), 7000):
        payloads += encoder.feed(data[i : i + 7000])
    if context != "frame":  # full payloads only until the end of the response
        assert all(len(p) == 4096 for p in payloads)
    payloads += encoder.end_response()
    assert b"".join(decoder.decode(p, BIG) for p in payloads) == data


@pytest.mark.parametrize("encoding", ["zstd-8mb", "zlib"])
def test_stream_context_spans_responses_and_compresses_better(encoding: str) -> None:
    revisions = [_text(20_000, 7)[:-i] + b"change %d" % i for i in range(1, 6)]
    sizes = {}
    for context in ("stream", "request", "frame"):
        encoder = Encoder(_settings(encoding, context), 32768)
        decoder = Decoder(_settings(encoding, context))
        total = 0
        for revision in revisions:
            payloads = encoder.encode_response(revision)
            total += sum(map(len, payloads))
            assert b"".join(decoder.decode(p, BIG) for p in payloads) == revision
        sizes[context] = total
    # zlib's 32 KiB window covers one revision; zstd's 8 MiB one covers them all.
    factor = 0.5 if encoding == "zstd-8mb" else 0.75
    assert sizes["stream"] < sizes["request"] * factor
    assert sizes["stream"] < sizes["frame"] * factor


def test_request_context_units_are_independent() -> None:
    for encoding in ("zstd-8mb", "zlib"):
        settings = _settings(encoding, "request")
        encoder = Encoder(settings, 32768)
        first = encoder.encode_response(_text(5000, 8))
        second = encoder.encode_response(_text(5000, 9))
        # A fresh decoder decodes the second response alone: each response is one unit.
        assert b"".join(Decoder(settings).decode(p, BIG) for p in second) == _text(5000, 9)
        assert b"".join(Decoder(settings).decode(p, BIG) for p in first) == _text(5000, 8)


def test_stream_context_is_plain_zstd_and_zlib() -> None:
    """What Mercurial's zstd-8mb and zlib decoders understand: one zstd frame (flushed block by
    block) or one zlib stream (sync-flushed) for the whole stream."""
    data = [_text(50_000, 10), _text(30_000, 11)]
    zstd_encoder = Encoder(_settings("zstd-8mb", "stream"), 32768)
    dobj = zstandard.ZstdDecompressor(max_window_size=1 << 23).decompressobj()
    for response in data:
        assert dobj.decompress(b"".join(zstd_encoder.encode_response(response))) == response
    zlib_encoder = Encoder(_settings("zlib", "stream"), 32768)
    zobj = zlib.decompressobj()
    for response in data:
        assert zobj.decompress(b"".join(zlib_encoder.encode_response(response))) == response


def test_decoder_drains_pending_zstd_output_at_each_payload() -> None:
    """Regression: zstandard's stream writer returns once its input is consumed, leaving up to
    a block of decoded bytes inside the context when its last call filled the output buffer; a
    stream-context response then lacked its tail until the next response arrived."""
    settings = _settings("zstd-8mb", "stream")
    encoder = Encoder(settings, 32768)
    decoder = Decoder(settings)
    for response in (_text(3_000_000, 12), b"hello" * 10, bytes(5_000_000), b"tail"):
        decoded = b"".join(decoder.decode(p, BIG) for p in encoder.encode_response(response))
        assert decoded == response


def test_separate_encoders_do_not_share_contexts() -> None:
    a = Encoder(_settings("zstd-8mb", "stream"), 1024)
    b = Encoder(_settings("zstd-8mb", "stream"), 1024)
    da, db = Decoder(a.settings), Decoder(b.settings)
    for i in range(5):
        pa = a.feed(_text(3000, i))
        pb = b.feed(_text(3000, 100 + i))
        pa += a.end_response()
        pb += b.end_response()
        assert b"".join(da.decode(p, BIG) for p in pa) == _text(3000, i)
        assert b"".join(db.decode(p, BIG) for p in pb) == _text(3000, 100 + i)


def test_encoder_memory_and_bad_settings() -> None:
    zstd = Encoder(_settings("zstd-8mb", "stream"), 32768)
    zstd.encode_response(_text(100_000))
    assert zstd.memory() > 1 << 20  # a level-3 context with an 8 MiB window
    assert Encoder(_settings("zstd-8mb", "frame"), 32768).memory() > 0
    assert Encoder(_settings("zlib", "stream"), 32768).memory() > 0
    identity = Encoder(_settings("identity", "stream"), 32768)
    identity.feed(b"abc")
    assert identity.memory() == 3
    with pytest.raises(ValueError):
        Encoder(StreamSettings("brotli"), 32768)
    with pytest.raises(ValueError):
        Encoder(StreamSettings("zlib", context="connection"), 32768)


# ---- bounded decoders -----------------------------------------------------------------------


def test_decoder_refuses_window_over_8_mib_in_settings() -> None:
    with pytest.raises(DecodeError, match="8 MiB") as info:
        Decoder(StreamSettings("zstd-8mb", 3, MAX_WINDOW_LOG + 1, "stream"))
    assert info.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(DecodeError):
        Decoder(StreamSettings("brotli"))


def test_decoder_refuses_zstd_frame_asking_for_a_bigger_window() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=MAX_WINDOW_LOG + 2)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    payload = cobj.compress(_text(1000)) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    decoder = Decoder(_settings("zstd-8mb", "stream"))  # settings claim 23, the frame says 25
    with pytest.raises(DecodeError, match="window"):
        decoder.decode(payload, BIG)


@pytest.mark.parametrize(("encoding", "context"), COMPRESSING)
def test_decoded_bytes_per_frame_are_capped(encoding: str, context: str) -> None:
    settings = _settings(encoding, context)
    if context == "frame":  # our encoder never puts more than a payload's worth in a unit
        bomb = bytes(10_000_000)
        one = zlib.compress(bomb) if encoding == "zlib" else zstandard.compress(bomb)
        payloads = [one]
    else:
        payloads = Encoder(settings, 32768).encode_response(bytes(10_000_000))
    decoder = Decoder(settings)
    with pytest.raises(DecodeError, match="past the limit") as info:
        for payload in payloads:
            decoder.decode(payload, 1 << 20)
    assert info.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(("encoding", "context"), COMPRESSING)
def test_cap_is_exact(encoding: str, context: str) -> None:
    settings = _settings(encoding, context)
    data = _text(5000, 13)
    (payload,) = Encoder(settings, 32768).encode_response(data)
    assert Decoder(settings).decode(payload, len(data)) == data
    with pytest.raises(DecodeError):
        Decoder(settings).decode(payload, len(data) - 1)


@pytest.mark.parametrize(("encoding", "context"), COMPRESSING)
def test_corrupt_data(encoding: str, context: str) -> None:
    decoder = Decoder(_settings(encoding, context))
    with pytest.raises(DecodeError, match="corrupt"):
        decoder.decode(b"\x00garbage that is not compressed at all" * 3, BIG)


def test_identity_stream_has_no_encoded_frames() -> None:
    with pytest.raises(DecodeError, match="identity"):
        Decoder(StreamSettings("identity")).decode(b"abc", BIG)


def test_zlib_frame_context_needs_exactly_one_complete_unit() -> None:
    settings = _settings("zlib", "frame")
    unit = zlib.compress(b"hello")
    assert Decoder(settings).decode(unit, BIG) == b"hello"
    with pytest.raises(DecodeError, match="incomplete"):
        Decoder(settings).decode(unit[:-3], BIG)
    with pytest.raises(DecodeError, match="trailing"):
        Decoder(settings).decode(unit + unit, BIG)


def test_zlib_request_context_accepts_consecutive_units_in_one_payload() -> None:
    settings = _settings("zlib", "request")
    decoder = Decoder(settings)
    assert decoder.decode(zlib.compress(b"one") + zlib.compress(b"two"), BIG) == b"onetwo"
    assert decoder.decode(zlib.compress(b"three"), BIG) == b"three"
