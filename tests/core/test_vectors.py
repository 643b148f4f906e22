"""Frame test vectors (tests/core/vectors/frames.txt) and the human notation of frames."""

from __future__ import annotations

import pathlib

import pytest

from server.protocol.frames import (
    FLAG_TYPES,
    Frame,
    FrameType,
    StreamFlags,
    decode_frames,
    encode_frame,
)
from server.protocol.notation import NotationError, format_frame, parse_line, parse_lines
from server.protocol.payloads import pack

VECTORS = pathlib.Path(__file__).parent / "vectors" / "frames.txt"


def _load() -> list[tuple[str, str, bool]]:
    """(notation, hex, canonical) for every vector line."""
    vectors = []
    section = None
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        notation, hex_text = line.rsplit(" => ", 1)
        vectors.append((notation, hex_text, section == "canonical"))
    return vectors


ALL = _load()


@pytest.mark.parametrize(("notation", "hex_text", "canonical"), ALL, ids=[v[0] for v in ALL])
def test_vector(notation: str, hex_text: str, canonical: bool) -> None:
    wire = bytes.fromhex(hex_text)
    frame = parse_line(notation)
    assert frame.encode() == wire
    (decoded,) = decode_frames(wire)
    assert decoded == frame
    printed = format_frame(decoded)
    assert parse_line(printed) == decoded
    assert format_frame(parse_line(printed)) == printed
    if canonical:
        assert printed == notation


def test_mercurial_headers() -> None:
    table = {vector[0]: vector[1] for vector in ALL}
    assert table["1 1 0 1 0"] == "00 00 00 01 00 01 00 10"
    assert table["2 4 0 1 0 foo"] == "03 00 00 02 00 04 00 10 66 6f 6f"


def test_70000_byte_payload_uses_all_24_length_bits() -> None:
    payload = bytes(range(256)) * 273 + bytes(112)
    assert len(payload) == 70000
    frame = parse_line("1 1 0 1 0 0x" + payload.hex())
    wire = frame.encode()
    assert wire[:3] == bytes.fromhex("70 11 01")  # 70000 = 0x011170, not 0x1170 + 1 * 16384
    assert wire[:8] == bytes.fromhex("70 11 01 01 00 01 00 10")
    assert decode_frames(wire) == [frame]
    assert parse_line(format_frame(frame)) == frame


def test_vectors_cover_every_type_flag_and_stream_flag() -> None:
    frames = [parse_line(notation) for notation, _, _ in ALL]
    types = {f.type for f in frames}
    assert {int(t) for t in FrameType} <= types
    assert {0x0, 0x4, 0xA, 0xF} <= types  # reserved ones too
    for ftype, flag_type in FLAG_TYPES.items():
        seen = 0
        for f in frames:
            if f.type == ftype:
                seen |= f.flags
        for member in flag_type:
            assert seen & member, f"{ftype.wire_name} flag {member.name} has no vector"
    stream_flags = 0
    for f in frames:
        stream_flags |= f.stream_flags
    for member in StreamFlags:
        assert stream_flags & member
    assert stream_flags & 0xF8  # undefined bits are representable


# ---- the notation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        ("", b""),
        ("foo", b"foo"),
        ("foo bar # baz", b"foo bar # baz"),  # text runs to the end of the line
        ("  padded  ", b"padded"),
        (r"a\x00\n\t\r\0\\\'\"", b"a\x00\n\t\r\x00\\'\""),
        ("héllo", "héllo".encode()),
        ("0x", b""),
        ("0xDEADbeef", b"\xde\xad\xbe\xef"),
        ("0x de ad  # comment", b"\xde\xad"),
        ("hex:00 01\t02", b"\x00\x01\x02"),
        ("HEX:ff", b"\xff"),
        ("b'x\\x00'", b"x\x00"),
        ('b"it\'s"  # comment', b"it's"),
        ("b'#'", b"#"),
        ("# just a comment", b""),
        ('msgpack:{"name": "echo", "args": {}}', pack({"name": "echo", "args": {}})),
        ("msgpack:[1, 'a', b'b', None, True, 1.5]", pack([1, "a", b"b", None, True, 1.5])),
        ("msgpack: {'k': 'v'}  # comment", pack({"k": "v"})),
    ],
)
def test_payload_forms(text: str, payload: bytes) -> None:
    assert parse_line(f"1 1 0 command-request new {text}").payload == payload


@pytest.mark.parametrize(
    "line",
    [
        "",
        "1 1 0 command-request",  # four fields
        "x 1 0 command-request new",
        "65536 1 0 command-request new",
        "1 256 0 command-request new",
        "1 -1 0 command-request new",
        "1 1 start command-request new",
        "1 1 0x100 command-request new",
        "1 1 begin| command-request new",
        "1 1 0 command-reply new",
        "1 1 0 16 0",
        "1 1 0 command-request eos",  # eos is not a command-request flag
        "1 1 0 error-response eos",  # error-response has no flags
        "1 1 0 0x4 new",  # reserved types take numeric flags only
        "1 1 0 command-request 0x10",
        "1 1 0 command-request new 0xabc",  # odd number of digits
        "1 1 0 command-request new 0xzz",
        "1 1 0 command-request new b'unterminated",
        "1 1 0 command-request new b'x' + b'y'",
        "1 1 0 command-request new msgpack:{1, 2}",  # a set cannot be packed
        "1 1 0 command-request new msgpack:nonsense",
        "1 1 0 command-request new bad\\qescape",
        "1 1 0 command-request new trailing\\",
        "1 1 0 command-request new \\x4",
    ],
)
def test_bad_lines(line: str) -> None:
    with pytest.raises(NotationError):
        parse_line(line)


def test_notation_error_is_a_value_error() -> None:
    assert issubclass(NotationError, ValueError)


def test_parse_lines_skips_blank_and_comment_lines_and_names_the_bad_line() -> None:
    text = "# a capture\n\n1 1 begin command-request new foo\n   # indented comment\n0 1 end 9 2\n"
    assert parse_lines(text) == [
        Frame(1, 1, 1, 1, 1, b"foo"),
        Frame(0, 1, 2, 9, 2, b""),
    ]
    with pytest.raises(NotationError, match="line 3"):
        parse_lines("# x\n1 1 0 1 0\n1 1 0 nope 0\n")


@pytest.mark.parametrize(
    ("frame", "printed"),
    [
        (Frame(1, 1, 0, 1, 0), "1 1 0 command-request 0"),
        (Frame(2, 4, 0, 1, 0, b"foo"), "2 4 0 command-request 0 b'foo'"),
        (Frame(1, 2, 7, 3, 2, b"\x00"), "1 2 begin|end|encoded command-response eos 0x00"),
        (
            Frame(1, 1, 0x19, 1, 0xF),
            "1 1 begin|0x18 command-request new|continuation|more|have-data",
        ),
        (Frame(0, 0, 0, 0xA, 3, b"it's"), '0 0 0 0xa 0x3 b"it\'s"'),
        (Frame(1, 1, 0, 2, 0xC), "1 1 0 command-data 0xc"),
        (Frame(1, 1, 0, 5, 1, b"a\nb"), "1 1 0 error-response 0x1 0x610a62"),
        (Frame(1, 1, 0, 6, 0, b"\x7f"), "1 1 0 text-output 0 0x7f"),
        (Frame(1, 1, 0, 7, 0, b" "), "1 1 0 progress 0 b' '"),
    ],
)
def test_format_frame_is_canonical(frame: Frame, printed: str) -> None:
    assert format_frame(frame) == printed
    assert parse_line(printed) == frame


def test_notation_matches_encode_frame() -> None:
    frame = parse_line('3 1 begin command-request new|have-data msgpack:{"name": "put"}')
    assert frame.encode() == encode_frame(
        3, 1, StreamFlags.BEGIN, FrameType.COMMAND_REQUEST, 0x9, pack({"name": "put"})
    )
