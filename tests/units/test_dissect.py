"""``zplex frames decode|encode``: the frame dissector (server/dissect.py)."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys

import pytest

from server.cli import main
from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import stream_settings_for
from server.protocol.errors import ErrorCode
from server.protocol.frames import Frame, FrameType, decode_frames, encode_frame, pack_header
from server.protocol.limits import Limits
from server.protocol.notation import parse_line, parse_lines
from server.protocol.payloads import ENCODINGS, ClientSettings, ServerSettings, pack
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection, connection_error_frame

SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, Limits().to_wire())


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: bytes = b"",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def wire(text: str) -> bytes:
    return b"".join(f.encode() for f in parse_lines(text))


def upstream() -> bytes:
    client = ClientConnection(ClientSettings(encodings=("zstd-8mb",), level=3))
    data = client.initiate()
    data += client.set_data_encoding(3, stream_settings_for("zlib", 6, "stream"))
    data += client.send_request(1, "get", {"key": "a.txt"})[1]
    data += client.send_request(3, "put", {"key": "b"}, b"hello world " * 100, end_stream=True)[1]
    return data


def downstream() -> bytes:
    server = ServerConnection(Limits(), SERVER_SETTINGS)
    writer = ServerStreamWriter(2, stream_settings_for("zstd-8mb", 3, "stream"), 32768)
    data = server.initial_bytes()
    data += writer.response(1, {"status": "ok", "size": 5}, b"hello")
    data += writer.response(3, {"status": "ok"}, b"x" * 500)
    data += encode_frame(5, 2, 0, FrameType.PROGRESS, 0, pack({"done": 1, "total": None}))
    data += writer.error(5, ErrorCode.NOT_FOUND, "no such key", end_stream=True)
    data += encode_frame(0, 0, 0, FrameType.TEXT_OUTPUT, 0, pack({"level": "info", "message": "m"}))
    data += connection_error_frame(ErrorCode.GOAWAY, "bye", True, in_flight=[])
    return data


# ---- decode -----------------------------------------------------------------------------------


def test_decode_mercurial_headers_from_hex_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hex_text = b"00 00 00 01 00 01 00 10\n03 00 00 02 00 04 00 10 66 6f 6f  # foo\n"
    status, out, err = run(["frames", "decode", "--hex"], capsys, monkeypatch, hex_text)
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "1 1 0 command-request 0  # (empty)",
        "2 4 0 command-request 0 b'foo'  # (not valid MessagePack: ExtraData)",
    ]


def test_decode_annotates_control_payloads(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = tmp_path / "down.bin"
    capture.write_bytes(downstream())
    status, out, err = run(["frames", "decode", str(capture)], capsys, monkeypatch)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(decode_frames(downstream()))
    assert lines[0].startswith("0 0 0 sender-protocol-settings eos 0x")
    assert "  # {'version': 1, 'server': 'zplex/test'," in lines[0]
    assert lines[1].startswith("0 2 begin stream-settings eos 0x")
    assert lines[1].endswith(
        "  # {'encoding': 'zstd-8mb', 'context': 'stream', 'level': 3, 'window_log': 23}"
    )
    assert lines[2].startswith("1 2 encoded command-response eos 0x")
    assert "#" not in lines[2]  # without --decode, encoded payloads are not decoded
    assert (
        lines[4] == "5 2 0 progress 0 0x82a4646f6e6501a5746f74616cc0  # {'done': 1, 'total': None}"
    )
    assert lines[5].startswith("5 2 end error-response 0 0x")
    assert lines[5].endswith(
        "  # {'code': 'not-found', 'message': 'no such key', 'retryable': False}"
    )
    assert lines[6].endswith("  # {'level': 'info', 'message': 'm'}")
    assert lines[7].endswith(
        "# {'in_flight': [], 'code': 'goaway', 'message': 'bye', 'retryable': True}"
    )


def test_decode_command_request_maps_whole_or_split(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = pack({"name": "get", "args": {"key": "k"}})
    data = wire(
        f"""
        1 1 begin command-request new 0x{request.hex()}
        3 1 0 command-request new|more 0x{request[:5].hex()}
        3 1 0 command-request continuation|more 0x{request[5:9].hex()}
        3 1 0 command-request continuation 0x{request[9:].hex()}
        0 1 end stream-settings eos
        """
    )
    status, out, _ = run(["frames", "decode"], capsys, monkeypatch, data)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("  # {'name': 'get', 'args': {'key': 'k'}}")
    assert "#" not in lines[1] and "#" not in lines[2]
    assert lines[3].endswith("  # {'name': 'get', 'args': {'key': 'k'}}")
    assert lines[4] == "0 1 end stream-settings eos  # (empty: identity)"


def test_decode_with_decode_shows_decoded_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = run(["frames", "decode", "--decode"], capsys, monkeypatch, downstream())
    assert status == 0
    lines = out.splitlines()
    header = repr(pack({"status": "ok", "size": 5}) + b"hello")
    assert lines[2].endswith(f"  # decoded: {header}")
    second = pack({"status": "ok"}) + b"x" * 500
    assert lines[3].endswith(f"  # decoded: {second[:64]!r}... ({len(second)} bytes)")
    status, out, _ = run(["frames", "decode", "--decode"], capsys, monkeypatch, upstream())
    assert out.splitlines()[-1].endswith(
        f"  # decoded: {(b'hello world ' * 100)[:64]!r}... (1200 bytes)"
    )


def test_decode_without_settings_or_with_corrupt_data(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = wire(
        """
        1 2 begin|encoded command-response eos 0x00
        0 4 begin stream-settings eos msgpack:{'encoding': 'zlib'}
        1 4 encoded command-response continuation b'not zlib'
        1 4 encoded command-response eos b'more'
        0 6 begin stream-settings eos msgpack:{'encoding': 'zstd-8mb', 'window_log': 30}
        1 6 encoded command-response eos b'x'
        0 8 begin stream-settings eos b'\\xc1'
        """
    )
    status, out, _ = run(["frames", "decode", "--decode"], capsys, monkeypatch, data)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("# not decoded: no encoding stream-settings on this stream")
    assert "# decode error: encoded data is corrupt" in lines[2]
    assert "# not decoded: an earlier frame did not decode" in lines[3]
    assert "# not decoded: bad stream-settings (stream-settings ask for a window" in lines[5]
    assert lines[6].endswith("# (not valid MessagePack: ExtraData)") or "not valid" in lines[6]


def test_decode_reserved_and_undefined(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Frame(1, 1, 0xF8, 0xA, 0x3, b"\x00").encode()
    status, out, _ = run(["frames", "decode", "--decode"], capsys, monkeypatch, data)
    assert (status, out) == (0, "1 1 0xf8 0xa 0x3 0x00\n")


@pytest.mark.parametrize(
    ("argv", "data", "message"),
    [
        (["--hex"], b"00 00 00 01 00 01 00 1g", "bad hex at line 1, column 23 (hex byte offset 7)"),
        (["--hex"], b"00\n 0x", "bad hex at line 2, column 3"),
        (["--hex"], b"000", "odd number of hex digits"),
        ([], bytes.fromhex("00 00 00 01 00 01 00 10 03 00 00"), "truncated frame at byte offset 8"),
        (
            [],
            bytes.fromhex("00 00 00 01 00 01 00 10 03 00 00 02 00 04 00 10 66 6f"),
            "truncated frame at byte offset 8: its header announces 3 payload bytes, only 2 follow",
        ),
        (
            ["--max-frame-size", "2"],
            bytes.fromhex("00 00 00 01 00 01 00 10 03 00 00 02 00 04 00 10 66 6f 6f"),
            "frame at byte offset 8 announces a payload of 3 bytes, over the maximum frame size 2",
        ),
        ([], pack_header(0xFFFFFF, 1, 1, 0, 1, 1), "byte offset 0 announces a payload of 16777215"),
    ],
)
def test_decode_malformed_input(
    argv: list[str],
    data: bytes,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, out, err = run(["frames", "decode", *argv], capsys, monkeypatch, data)
    assert status == 1
    assert message in err
    assert err.startswith("zplex frames: error: ") and "Traceback" not in err
    if data.startswith(bytes.fromhex("00 00 00 01 00 01 00 10")):
        assert out == "1 1 0 command-request 0  # (empty)\n"  # frames before the error


def test_decode_missing_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(["frames", "decode", str(tmp_path / "nope")], capsys, monkeypatch)
    assert status == 2 and "cannot read " in err and "No such file" in err


def test_decode_empty_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["frames", "decode"], capsys, monkeypatch, b"") == (0, "", "")


# ---- encode -----------------------------------------------------------------------------------


def test_encode_to_bytes(
    tmp_path: pathlib.Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "frames.txt"
    source.write_text("# Mercurial's headers\n1 1 0 1 0\n\n2 4 0 1 0 foo\n", encoding="utf-8")
    assert main(["frames", "encode", str(source)]) == 0
    out, err = capsysbinary.readouterr()
    assert out == bytes.fromhex("00 00 00 01 00 01 00 10 03 00 00 02 00 04 00 10 66 6f 6f")
    assert err == b""


def test_encode_hex_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = run(
        ["frames", "encode", "--hex"], capsys, monkeypatch, b"1 1 0 1 0\n2 4 0 1 0 foo\n"
    )
    assert status == 0
    assert out == "00 00 00 01 00 01 00 10\n03 00 00 02 00 04 00 10 66 6f 6f\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"1 1 0 1 0\n1 1 0 nope 0\n", "line 2: type: unknown frame type 'nope'"),
        (b"1 1 0 1\n", "line 1: expected"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_encode_errors(
    text: bytes, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(["frames", "encode", "--hex"], capsys, monkeypatch, text)
    assert status == 1 and out == ""
    assert message in err and "Traceback" not in err


def test_decode_output_encodes_back_to_the_capture(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for capture in (upstream(), downstream()):
        status, out, _ = run(["frames", "decode", "--decode"], capsys, monkeypatch, capture)
        assert status == 0
        assert b"".join(parse_line(line).encode() for line in out.splitlines()) == capture
        status, hex_out, _ = run(["frames", "encode", "--hex"], capsys, monkeypatch, out.encode())
        assert bytes.fromhex(hex_out) == capture


def test_frames_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frames"])
    assert info.value.code == 2
    capsys.readouterr()


def test_zplex_frames_decode_hex_subprocess(tmp_path: pathlib.Path) -> None:
    script = pathlib.Path(sys.executable).parent / "zplex"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    capture = upstream()
    result = subprocess.run(
        [*command, "frames", "decode", "--hex", "--decode"],
        input=capture.hex(" ").encode(),
        capture_output=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(decode_frames(capture))
    assert lines[0].startswith("0 1 begin sender-protocol-settings eos 0x")
    assert lines[-1].startswith("3 3 end|encoded command-data eos 0x")
    bad = subprocess.run(
        [*command, "frames", "decode", "--hex"],
        input=b"00 00 00 01 00 01 00",
        capture_output=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert b"truncated frame at byte offset 0" in bad.stderr and b"Traceback" not in bad.stderr
