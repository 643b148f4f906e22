"""``zplex frames``: the frame dissector, for debugging captures and writing test vectors.

``zplex frames decode [FILE]`` reads a binary frame capture (stdin by default; ``--hex`` for
hex text) and prints one frame per line in the human notation of
:mod:`server.protocol.notation`. Control payloads (settings, stream-settings, error-response,
text-output, progress, and command-request maps once complete) are followed by
``  # {decoded MessagePack}``; with ``--decode``, the payloads of ``encoded`` frames are passed
through their stream's decoder (per the stream's stream-settings) and shown as
``  # decoded: b'...'``. The printed lines read back with ``zplex frames encode``.

``zplex frames encode [FILE]`` turns notation lines into frame bytes (or hex text, one frame
per line, with ``--hex``).

Malformed input gives a message on stderr naming the byte offset (or line) and exit status 1;
an input file that cannot be read, exit status 2 (the exit statuses of every ``zplex``
subcommand: README, "Exit status").
"""

from __future__ import annotations

import argparse
import string
import sys
from typing import Any, BinaryIO

import msgpack

from server.protocol.encoding import Decoder
from server.protocol.errors import DecodeError, PayloadError
from server.protocol.frames import (
    HEADER_SIZE,
    CommandRequestFlags,
    Frame,
    FrameDecoder,
    FrameType,
    SettingsFlags,
    StreamFlags,
    unpack_header,
)
from server.protocol.limits import MAX_FRAME_SIZE_LIMIT
from server.protocol.notation import NotationError, format_frame, parse_lines
from server.protocol.payloads import StreamSettings, unpack_map

#: Decoded bytes shown per encoded frame with --decode.
SHOW_DECODED = 64
#: Cap on what one encoded frame may decode to (as the client's default cap).
DECODE_CAP = 256 << 20
_HEX = frozenset(string.hexdigits)
#: Types whose whole payload is one MessagePack map (settings may be split over frames).
_MAP_TYPES = frozenset(
    {
        FrameType.ERROR_RESPONSE,
        FrameType.TEXT_OUTPUT,
        FrameType.PROGRESS,
        FrameType.SENDER_PROTOCOL_SETTINGS,
        FrameType.STREAM_SETTINGS,
    }
)
_SPLIT_TYPES = frozenset({FrameType.SENDER_PROTOCOL_SETTINGS, FrameType.STREAM_SETTINGS})


class InputError(Exception):
    """Input the dissector cannot read; the message names where."""


def register(subparsers: Any) -> None:
    frames = subparsers.add_parser(
        "frames",
        help="decode and encode frame captures (the human frame notation)",
        description="Decode frame captures to the human notation, and encode notation to frames.",
    )
    sub = frames.add_subparsers(dest="frames_command", metavar="ACTION", required=True)

    decode = sub.add_parser(
        "decode",
        help="print a frame capture in the human notation",
        description="Read a binary frame capture (stdin by default) and print one frame per "
        "line in the human notation, with decoded control payloads as comments.",
    )
    decode.add_argument("file", nargs="?", default="-", help="capture file (default: stdin)")
    decode.add_argument(
        "--hex",
        action="store_true",
        help="the input is hex text (whitespace ignored, '#' starts a comment)",
    )
    decode.add_argument(
        "--decode",
        action="store_true",
        help="decode encoded frames with their stream's settings and show the decoded bytes",
    )
    decode.add_argument(
        "--max-frame-size",
        type=_positive_int,
        default=MAX_FRAME_SIZE_LIMIT,
        metavar="N",
        help=f"largest payload accepted (default {MAX_FRAME_SIZE_LIMIT})",
    )
    decode.set_defaults(func=run_decode)

    encode = sub.add_parser(
        "encode",
        help="turn human notation lines into frame bytes",
        description="Read notation lines (stdin by default; blank lines and '#' lines are "
        "skipped) and write the frames' bytes to stdout.",
    )
    encode.add_argument("file", nargs="?", default="-", help="notation file (default: stdin)")
    encode.add_argument(
        "--hex", action="store_true", help="write hex text, one frame per line, not bytes"
    )
    encode.set_defaults(func=run_encode)


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


# ---- input ----------------------------------------------------------------------------------


def _read_input(path: str) -> bytes:
    if path == "-":
        stdin: BinaryIO = sys.stdin.buffer
        return stdin.read()
    with open(path, "rb") as handle:
        return handle.read()


def parse_hex(text: str) -> bytes:
    """Hex text to bytes: whitespace is ignored anywhere, ``#`` starts a comment to the end of
    the line. Raises :class:`InputError` naming the line and column of a bad character."""
    digits: list[str] = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for column, char in enumerate(line, 1):
            if char == "#":
                break
            if char in _HEX:
                digits.append(char)
            elif not char.isspace():
                raise InputError(
                    f"bad hex at line {line_number}, column {column} "
                    f"(hex byte offset {len(digits) // 2}): {char!r} is not a hex digit"
                )
    if len(digits) % 2:
        raise InputError(
            f"odd number of hex digits: the last byte (offset {len(digits) // 2}) is incomplete"
        )
    return bytes.fromhex("".join(digits))


# ---- decode ---------------------------------------------------------------------------------


def split_capture(data: bytes, max_frame_size: int) -> tuple[list[Frame], InputError | None]:
    """The frames of a capture, and the error that stopped parsing (``None`` when the whole
    capture is frames). The error names the byte offset of the frame it concerns."""
    decoder = FrameDecoder(max_frame_size)
    frames = decoder.feed(data)
    offset = sum(HEADER_SIZE + len(frame.payload) for frame in frames)
    if decoder.error is not None:
        length = unpack_header(data, offset)[0]
        return frames, InputError(
            f"frame at byte offset {offset} announces a payload of {length} bytes, over the "
            f"maximum frame size {max_frame_size} (--max-frame-size)"
        )
    rest = len(data) - offset
    if rest == 0:
        return frames, None
    if rest < HEADER_SIZE:
        return frames, InputError(
            f"truncated frame at byte offset {offset}: {rest} bytes, a header needs {HEADER_SIZE}"
        )
    length = unpack_header(data, offset)[0]
    return frames, InputError(
        f"truncated frame at byte offset {offset}: its header announces {length} payload bytes, "
        f"only {rest - HEADER_SIZE} follow"
    )


def _unpack_any(payload: bytes) -> str:
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        return f"(not valid MessagePack: {type(exc).__name__})"
    return repr(value)


def _show_bytes(data: bytes) -> str:
    if len(data) <= SHOW_DECODED:
        return repr(data)
    return f"{data[:SHOW_DECODED]!r}... ({len(data)} bytes)"


class Dissector:
    """Annotates frames one by one: control payloads, and with ``decode`` the decoded bytes of
    encoded frames, tracking stream-settings per stream."""

    def __init__(self, decode: bool = False) -> None:
        self.decode = decode
        # Maps split over frames, by (stream id, type, request id), until their last frame.
        self._parts: dict[tuple[int, int, int], bytearray] = {}
        self._decoders: dict[int, Decoder] = {}
        self._broken: dict[int, str] = {}  # why a stream's encoded frames cannot be decoded

    def annotate(self, frame: Frame) -> str:
        """The frame's notation, with its comments."""
        notes: list[str] = []
        try:
            ftype: FrameType | None = FrameType(frame.type)
        except ValueError:
            ftype = None
        if frame.has(StreamFlags.BEGIN):
            self._forget(frame.stream_id)
        if ftype is not None:
            payload = self._complete_map(frame, ftype)
            if payload is not None:
                notes.append(_map_text(ftype, payload))
                if self.decode and ftype is FrameType.STREAM_SETTINGS:
                    self._stream_settings(frame.stream_id, payload)
        if self.decode and frame.has(StreamFlags.ENCODED):
            notes.append(self._decoded(frame))
        if frame.has(StreamFlags.END):
            self._forget(frame.stream_id)
        return format_frame(frame) + "".join(f"  # {note}" for note in notes)

    def _forget(self, stream_id: int) -> None:
        self._decoders.pop(stream_id, None)
        self._broken.pop(stream_id, None)
        for key in [k for k in self._parts if k[0] == stream_id]:
            del self._parts[key]

    def _complete_map(self, frame: Frame, ftype: FrameType) -> bytes | None:
        """The bytes of the MessagePack map this frame completes, else ``None``."""
        if ftype is FrameType.COMMAND_REQUEST:
            key = (frame.stream_id, int(ftype), frame.request_id)
            if frame.flags & CommandRequestFlags.NEW:
                self._parts.pop(key, None)
            last = not frame.flags & CommandRequestFlags.MORE
        elif ftype in _SPLIT_TYPES:
            key = (frame.stream_id, int(ftype), 0)
            last = bool(frame.flags & SettingsFlags.EOS)
        elif ftype in _MAP_TYPES:
            return frame.payload
        else:
            return None
        parts = self._parts.get(key)
        if parts is None:
            if last:
                return frame.payload
            parts = self._parts[key] = bytearray()
        parts += frame.payload
        if not last:
            return None
        del self._parts[key]
        return bytes(parts)

    def _stream_settings(self, stream_id: int, payload: bytes) -> None:
        """A stream-settings map starts a new decoding context for the stream."""
        self._decoders.pop(stream_id, None)
        self._broken.pop(stream_id, None)
        if not payload:
            return
        try:
            settings = StreamSettings.from_wire(unpack_map(payload, "stream-settings"))
            if settings.encoding != "identity":
                self._decoders[stream_id] = Decoder(settings)
        except (PayloadError, DecodeError) as exc:
            self._broken[stream_id] = f"bad stream-settings ({exc.message})"

    def _decoded(self, frame: Frame) -> str:
        sid = frame.stream_id
        if sid in self._broken:
            return f"not decoded: {self._broken[sid]}"
        decoder = self._decoders.get(sid)
        if decoder is None:
            return "not decoded: no encoding stream-settings on this stream"
        try:
            data = decoder.decode(frame.payload, DECODE_CAP)
        except DecodeError as exc:
            self._broken[sid] = f"an earlier frame did not decode ({exc.message})"
            del self._decoders[sid]
            return f"decode error: {exc.message}"
        return f"decoded: {_show_bytes(data)}"


def _map_text(ftype: FrameType, payload: bytes) -> str:
    if payload:
        return _unpack_any(payload)
    if ftype is FrameType.STREAM_SETTINGS:
        return "(empty: identity)"
    return "(empty)"


def run_decode(args: argparse.Namespace) -> int:
    try:
        data = _read_input(args.file)
    except OSError as exc:
        return _fail(exc)
    try:
        if args.hex:
            data = parse_hex(data.decode("utf-8", errors="replace"))
    except InputError as exc:
        return _fail(exc)
    frames, error = split_capture(data, args.max_frame_size)
    dissector = Dissector(decode=args.decode)
    out = sys.stdout
    for frame in frames:
        out.write(dissector.annotate(frame) + "\n")
    out.flush()
    if error is not None:
        return _fail(error)
    return 0


# ---- encode ---------------------------------------------------------------------------------


def run_encode(args: argparse.Namespace) -> int:
    try:
        data = _read_input(args.file)
    except OSError as exc:
        return _fail(exc)
    try:
        frames = parse_lines(data.decode("utf-8"))
    except (UnicodeDecodeError, NotationError) as exc:
        return _fail(exc)
    if args.hex:
        for frame in frames:
            sys.stdout.write(frame.encode().hex(" ") + "\n")
        sys.stdout.flush()
    else:
        out: BinaryIO = sys.stdout.buffer
        out.write(b"".join(frame.encode() for frame in frames))
        out.flush()
    return 0


def _fail(exc: BaseException) -> int:
    """Say what is wrong; the exit status: 2 for an input that cannot be read, 1 for one that
    does not parse."""
    status = 1
    if isinstance(exc, OSError):
        message = f"cannot read {exc.filename or 'input'}: {exc.strerror or exc}"
        status = 2
    elif isinstance(exc, UnicodeDecodeError):
        message = f"input is not UTF-8 text (byte offset {exc.start})"
    else:
        message = str(exc)
    print(f"zplex frames: error: {message}", file=sys.stderr)
    return status
