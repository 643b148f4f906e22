"""Frames (docs/protocol.md section 1): header layout, validation rules, incremental decoding;
and the import rule of the sans-I/O core."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

from server.protocol.errors import ErrorCode, ProtocolError
from server.protocol.frames import (
    ALL_STREAM_FLAGS,
    CLIENT_FRAME_TYPES,
    FLAG_TYPES,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD_FIELD,
    SERVER_FRAME_TYPES,
    CommandRequestFlags,
    Frame,
    FrameDecoder,
    FrameType,
    StreamFlags,
    decode_frames,
    encode_frame,
    pack_header,
    unpack_header,
    validate_frame,
)
from server.protocol.notation import parse_line

PROTOCOL_DIR = pathlib.Path(__file__).resolve().parents[2] / "server" / "protocol"


def test_header_layout() -> None:
    assert HEADER.format == "<HBHBBB"
    assert HEADER_SIZE == 8
    assert pack_header(0x030201, 0x0504, 0x06, 0x07, 0xA, 0xB) == bytes.fromhex(
        "01 02 03 04 05 06 07 ab"
    )
    assert unpack_header(bytes.fromhex("01 02 03 04 05 06 07 ab")) == (
        0x030201,
        0x0504,
        6,
        7,
        0xA,
        0xB,
    )


def test_length_uses_all_24_bits_never_mercurials_16384() -> None:
    header = bytes.fromhex("00 00 01 01 00 01 00 10")
    assert unpack_header(header)[0] == 65536  # Mercurial's parser would say 16384
    assert unpack_header(b"\xff\xff\xff" + bytes(5))[0] == MAX_PAYLOAD_FIELD
    assert unpack_header(b"..." + bytes.fromhex("70 11 01 01 00 01 00 10"), 3)[0] == 70000


def test_type_ids_and_names() -> None:
    assert {t.wire_name: int(t) for t in FrameType} == {
        "command-request": 0x1,
        "command-data": 0x2,
        "command-response": 0x3,
        "error-response": 0x5,
        "text-output": 0x6,
        "progress": 0x7,
        "sender-protocol-settings": 0x8,
        "stream-settings": 0x9,
    }
    assert ALL_STREAM_FLAGS == 0x07
    assert {m.name: int(m) for m in CommandRequestFlags} == {
        "NEW": 1,
        "CONTINUATION": 2,
        "MORE": 4,
        "HAVE_DATA": 8,
    }
    for ftype in (FrameType.ERROR_RESPONSE, FrameType.TEXT_OUTPUT, FrameType.PROGRESS):
        assert list(FLAG_TYPES[ftype]) == []
    for ftype in (
        FrameType.COMMAND_DATA,
        FrameType.COMMAND_RESPONSE,
        FrameType.SENDER_PROTOCOL_SETTINGS,
        FrameType.STREAM_SETTINGS,
    ):
        assert {m.name: int(m) for m in FLAG_TYPES[ftype]} == {"CONTINUATION": 1, "EOS": 2}


def test_frame_encode_and_properties() -> None:
    frame = Frame(3, 5, StreamFlags.BEGIN | StreamFlags.ENCODED, 2, 2, b"abc")
    assert frame.encode() == bytes.fromhex("03 00 00 03 00 05 05 22") + b"abc"
    assert frame.frame_type is FrameType.COMMAND_DATA
    assert frame.has(StreamFlags.BEGIN) and frame.has(StreamFlags.ENCODED)
    assert not frame.has(StreamFlags.END)
    with pytest.raises(ValueError):
        _ = Frame(1, 1, 0, 4, 0).frame_type


@pytest.mark.parametrize(
    "args",
    [
        (-1, 1, 0, 1, 1),
        (0x10000, 1, 0, 1, 1),
        (1, 256, 0, 1, 1),
        (1, -1, 0, 1, 1),
        (1, 1, 256, 1, 1),
        (1, 1, 0, 16, 1),
        (1, 1, 0, 1, 16),
        (1, 1, 0, -1, 1),
    ],
)
def test_encode_frame_rejects_out_of_range_fields(args: tuple[int, int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        encode_frame(*args)


def test_encode_frame_rejects_payload_over_24_bits() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_PAYLOAD_FIELD + 1

    with pytest.raises(ValueError, match="24-bit"):
        encode_frame(1, 1, 0, 1, 1, Huge())


# ---- validate_frame: one test per rule of docs/protocol.md section 1 ------------------------

VALID_CLIENT = [
    "1 1 begin command-request new",
    "1 1 0 command-request continuation|more|have-data",
    "1 1 encoded command-data eos",
    "1 1 end command-data continuation",
    "0 1 begin sender-protocol-settings eos",
    "0 1 0 sender-protocol-settings continuation",
    "7 3 0 stream-settings eos",  # receivers ignore the id of stream-settings
]
VALID_SERVER = [
    "1 2 begin|encoded command-response continuation",
    "1 2 end command-response eos",
    "1 2 0 error-response 0",
    "0 0 0 text-output 0",
    "1 2 0 progress 0",
    "0 0 0 sender-protocol-settings eos",
    "0 2 begin stream-settings eos",
]


@pytest.mark.parametrize("line", VALID_CLIENT)
def test_valid_client_frames(line: str) -> None:
    validate_frame(parse_line(line), from_client=True)


@pytest.mark.parametrize("line", VALID_SERVER)
def test_valid_server_frames(line: str) -> None:
    validate_frame(parse_line(line), from_client=False)


@pytest.mark.parametrize("ftype", [0x0, 0x4, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("from_client", [True, False])
def test_reserved_types_are_protocol_errors(ftype: int, from_client: bool) -> None:
    with pytest.raises(ProtocolError, match="reserved frame type") as info:
        validate_frame(Frame(1, 1, 0, ftype, 0), from_client=from_client)
    assert info.value.code is ErrorCode.PROTOCOL


@pytest.mark.parametrize("ftype", sorted(set(FrameType) - CLIENT_FRAME_TYPES))
def test_types_a_client_may_not_send(ftype: FrameType) -> None:
    with pytest.raises(ProtocolError, match="client may not send"):
        flags = 0x2 if ftype is FrameType.COMMAND_RESPONSE else 0
        validate_frame(Frame(1, 1, 0, ftype, flags), from_client=True)


@pytest.mark.parametrize("ftype", sorted(set(FrameType) - SERVER_FRAME_TYPES))
def test_types_a_server_may_not_send(ftype: FrameType) -> None:
    flags = 0x1 if ftype is FrameType.COMMAND_REQUEST else 0x2
    with pytest.raises(ProtocolError, match="server may not send"):
        validate_frame(Frame(1, 2, 0, ftype, flags), from_client=False)


@pytest.mark.parametrize("bit", [0x08, 0x10, 0x20, 0x40, 0x80])
def test_undefined_stream_flag_bits(bit: int) -> None:
    with pytest.raises(ProtocolError, match="undefined stream flag"):
        validate_frame(Frame(1, 1, bit, 1, 1), from_client=True)


@pytest.mark.parametrize(
    ("line", "from_client"),
    [
        ("1 1 0 command-data eos|0x4", True),
        ("1 1 0 command-data eos|0x8", True),
        ("0 1 0 sender-protocol-settings eos|0x4", True),
        ("0 1 0 stream-settings eos|0x8", True),
        ("1 2 0 command-response eos|0x4", False),
        ("1 2 0 error-response 0x1", False),
        ("0 0 0 text-output 0x8", False),
        ("1 2 0 progress 0x2", False),
    ],
)
def test_undefined_type_flag_bits(line: str, from_client: bool) -> None:
    with pytest.raises(ProtocolError, match="undefined flag bits"):
        validate_frame(parse_line(line), from_client=from_client)


@pytest.mark.parametrize(
    ("line", "from_client"),
    [
        ("1 1 0 command-request new|continuation", True),
        ("1 1 0 command-request more", True),
        ("1 1 0 command-request 0", True),
        ("1 1 0 command-data continuation|eos", True),
        ("1 1 0 command-data 0", True),
        ("0 1 0 sender-protocol-settings 0", True),
        ("0 1 0 stream-settings continuation|eos", True),
        ("1 2 0 command-response 0", False),
        ("1 2 0 command-response continuation|eos", False),
        ("0 0 0 sender-protocol-settings continuation|eos", False),
        ("0 2 0 stream-settings 0", False),
    ],
)
def test_exclusive_flag_pairs(line: str, from_client: bool) -> None:
    with pytest.raises(ProtocolError, match="exactly one of"):
        validate_frame(parse_line(line), from_client=from_client)


@pytest.mark.parametrize(
    ("line", "from_client"),
    [
        ("1 1 encoded command-request new", True),
        ("0 1 encoded stream-settings eos", True),
        ("0 1 encoded sender-protocol-settings eos", True),
        ("1 2 encoded error-response 0", False),
        ("1 2 encoded progress 0", False),
        ("0 0 encoded text-output 0", False),
        ("0 2 encoded stream-settings eos", False),
    ],
)
def test_encoded_only_on_data_frames(line: str, from_client: bool) -> None:
    with pytest.raises(ProtocolError, match="encoded stream flag"):
        validate_frame(parse_line(line), from_client=from_client)


@pytest.mark.parametrize("from_client", [True, False])
def test_sender_protocol_settings_need_request_id_0(from_client: bool) -> None:
    with pytest.raises(ProtocolError, match="request id 0"):
        validate_frame(parse_line("1 1 0 sender-protocol-settings eos"), from_client=from_client)


# ---- FrameDecoder ---------------------------------------------------------------------------


def test_decoder_any_chunking_and_buffered() -> None:
    frames = [Frame(1, 1, 1, 1, 1, b"abc"), Frame(3, 1, 0, 1, 1, b""), Frame(5, 3, 0, 2, 2, b"x")]
    wire = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder(32768)
    out = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
        assert decoder.buffered == (i + 1) - sum(HEADER_SIZE + len(f.payload) for f in out)
    assert out == frames
    assert decoder.buffered == 0


def test_decoder_accepts_memoryview_and_bytearray() -> None:
    wire = Frame(1, 1, 1, 1, 1, b"abc").encode()
    decoder = FrameDecoder(100)
    assert decoder.feed(memoryview(wire)[:5]) == []
    assert decoder.feed(bytearray(wire[5:])) == [Frame(1, 1, 1, 1, 1, b"abc")]


def test_oversize_header_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder(1024)
    good = Frame(1, 1, 1, 1, 1, bytes(1024)).encode()
    bad_header = pack_header(1025, 3, 1, 0, 1, 1)
    # The frame before it is returned; the error comes before any payload byte arrived.
    assert decoder.feed(good + bad_header) == [Frame(1, 1, 1, 1, 1, bytes(1024))]
    assert decoder.error is not None
    assert "1025" in decoder.error.message and "1024" in decoder.error.message
    assert decoder.error.code is ErrorCode.PROTOCOL
    # Nothing is parsed after it.
    assert decoder.feed(Frame(5, 1, 0, 1, 1).encode()) == []


def test_oversize_header_split_byte_by_byte() -> None:
    decoder = FrameDecoder(10)
    header = pack_header(11, 1, 1, 0, 1, 1)
    for i, byte in enumerate(header):
        decoder.feed(bytes([byte]))
        assert (decoder.error is None) == (i < HEADER_SIZE - 1)


def test_decode_frames_whole_capture() -> None:
    frames = [Frame(1, 1, 1, 1, 1, b"a" * 100), Frame(0, 0, 0, 8, 2, b"")]
    wire = b"".join(f.encode() for f in frames)
    assert decode_frames(wire) == frames
    for truncated in (wire + b"\x00", wire[:-1], wire[:50]):
        with pytest.raises(ProtocolError, match="trailing"):
            decode_frames(truncated)
    with pytest.raises(ProtocolError, match="exceeds max_frame_size"):
        decode_frames(wire, max_payload=99)


# ---- the import rule of server/protocol (docs/design.md) ------------------------------------


def test_core_imports_only_stdlib_zstandard_and_msgpack() -> None:
    allowed_third_party = {"zstandard", "msgpack"}
    modules = {p.stem for p in PROTOCOL_DIR.glob("*.py")}
    files = sorted(PROTOCOL_DIR.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    assert top in sys.stdlib_module_names or top in allowed_third_party, (
                        f"{path.name} imports {alias.name}"
                    )
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    top = (node.module or "").split(".")[0]
                    assert (
                        top == "__future__"
                        or top in sys.stdlib_module_names
                        or (top in allowed_third_party)
                    ), f"{path.name} imports from {node.module}"
                else:
                    # Relative: only siblings inside server/protocol itself.
                    assert node.level == 1, f"{path.name} reaches outside server/protocol"
                    if node.module is not None:
                        assert node.module.split(".")[0] in modules, (
                            f"{path.name} imports .{node.module}"
                        )
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                pytest.fail(f"{path.name} uses __import__")
