"""Frames: the 8-byte header, frame types and flags, encoding and incremental decoding.

Layout (docs/protocol.md section 1), one ``struct.Struct`` for the whole header::

    length (24-bit LE) | request id (16-bit LE) | stream id (8) | stream flags (8) | type<<4|flags
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from .errors import ProtocolError

#: length low 16 bits, length high 8 bits, request id, stream id, stream flags, type and flags.
HEADER = struct.Struct("<HBHBBB")
HEADER_SIZE = HEADER.size  # 8
MAX_PAYLOAD_FIELD = (1 << 24) - 1


class FrameType(enum.IntEnum):
    COMMAND_REQUEST = 0x1
    COMMAND_DATA = 0x2
    COMMAND_RESPONSE = 0x3
    ERROR_RESPONSE = 0x5
    TEXT_OUTPUT = 0x6
    PROGRESS = 0x7
    SENDER_PROTOCOL_SETTINGS = 0x8
    STREAM_SETTINGS = 0x9

    @property
    def wire_name(self) -> str:
        return self.name.lower().replace("_", "-")


class StreamFlags(enum.IntFlag):
    BEGIN = 0x01
    END = 0x02
    ENCODED = 0x04


class CommandRequestFlags(enum.IntFlag):
    NEW = 0x1
    CONTINUATION = 0x2
    MORE = 0x4
    HAVE_DATA = 0x8


class CommandDataFlags(enum.IntFlag):
    CONTINUATION = 0x1
    EOS = 0x2


class CommandResponseFlags(enum.IntFlag):
    CONTINUATION = 0x1
    EOS = 0x2


class SettingsFlags(enum.IntFlag):
    """Flags of sender-protocol-settings and stream-settings frames."""

    CONTINUATION = 0x1
    EOS = 0x2


class NoFlags(enum.IntFlag):
    """error-response, text-output and progress define no flag."""


FLAG_TYPES: dict[FrameType, type[enum.IntFlag]] = {
    FrameType.COMMAND_REQUEST: CommandRequestFlags,
    FrameType.COMMAND_DATA: CommandDataFlags,
    FrameType.COMMAND_RESPONSE: CommandResponseFlags,
    FrameType.ERROR_RESPONSE: NoFlags,
    FrameType.TEXT_OUTPUT: NoFlags,
    FrameType.PROGRESS: NoFlags,
    FrameType.SENDER_PROTOCOL_SETTINGS: SettingsFlags,
    FrameType.STREAM_SETTINGS: SettingsFlags,
}

ALL_STREAM_FLAGS = int(StreamFlags.BEGIN | StreamFlags.END | StreamFlags.ENCODED)

# The flags and types as plain ints, for the paths that test or build every frame (IntFlag
# and IntEnum arithmetic is slow there): one set for every module of the protocol.
STREAM_BEGIN = int(StreamFlags.BEGIN)
STREAM_END = int(StreamFlags.END)
STREAM_ENCODED = int(StreamFlags.ENCODED)
REQUEST_NEW = int(CommandRequestFlags.NEW)
REQUEST_CONTINUATION = int(CommandRequestFlags.CONTINUATION)
REQUEST_MORE = int(CommandRequestFlags.MORE)
REQUEST_HAVE_DATA = int(CommandRequestFlags.HAVE_DATA)
DATA_CONTINUATION = int(CommandDataFlags.CONTINUATION)
DATA_EOS = int(CommandDataFlags.EOS)
RESPONSE_CONTINUATION = int(CommandResponseFlags.CONTINUATION)
RESPONSE_EOS = int(CommandResponseFlags.EOS)
SETTINGS_EOS = int(SettingsFlags.EOS)
TYPE_REQUEST = int(FrameType.COMMAND_REQUEST)
TYPE_DATA = int(FrameType.COMMAND_DATA)
TYPE_RESPONSE = int(FrameType.COMMAND_RESPONSE)
TYPE_SETTINGS = int(FrameType.SENDER_PROTOCOL_SETTINGS)
TYPE_STREAM_SETTINGS = int(FrameType.STREAM_SETTINGS)

CLIENT_FRAME_TYPES = frozenset(
    {
        FrameType.COMMAND_REQUEST,
        FrameType.COMMAND_DATA,
        FrameType.SENDER_PROTOCOL_SETTINGS,
        FrameType.STREAM_SETTINGS,
    }
)
SERVER_FRAME_TYPES = frozenset(
    {
        FrameType.COMMAND_RESPONSE,
        FrameType.ERROR_RESPONSE,
        FrameType.TEXT_OUTPUT,
        FrameType.PROGRESS,
        FrameType.SENDER_PROTOCOL_SETTINGS,
        FrameType.STREAM_SETTINGS,
    }
)

# The two flag pairs of which exactly one must be set, per frame type.
_EXCLUSIVE_PAIRS: dict[FrameType, tuple[int, int, str]] = {
    FrameType.COMMAND_REQUEST: (0x1, 0x2, "new/continuation"),
    FrameType.COMMAND_DATA: (0x1, 0x2, "continuation/eos"),
    FrameType.COMMAND_RESPONSE: (0x1, 0x2, "continuation/eos"),
    FrameType.SENDER_PROTOCOL_SETTINGS: (0x1, 0x2, "continuation/eos"),
    FrameType.STREAM_SETTINGS: (0x1, 0x2, "continuation/eos"),
}


class Frame(NamedTuple):
    """One frame. ``type`` is a raw int so that reserved types can be represented and
    rejected by whoever validates; ``frame_type`` gives the enum. A named tuple: the parser
    makes one per frame, and a tuple is several times cheaper to build than a frozen
    dataclass."""

    request_id: int
    stream_id: int
    stream_flags: int
    type: int
    flags: int
    payload: bytes = b""

    @property
    def frame_type(self) -> FrameType:
        return FrameType(self.type)

    def has(self, stream_flag: StreamFlags) -> bool:
        return bool(self.stream_flags & int(stream_flag))

    def encode(self) -> bytes:
        return encode_frame(
            self.request_id, self.stream_id, self.stream_flags, self.type, self.flags, self.payload
        )


def pack_header(
    length: int, request_id: int, stream_id: int, stream_flags: int, ftype: int, flags: int
) -> bytes:
    return HEADER.pack(
        length & 0xFFFF, length >> 16, request_id, stream_id, stream_flags, (ftype << 4) | flags
    )


def unpack_header(buf: bytes | memoryview, offset: int = 0) -> tuple[int, int, int, int, int, int]:
    """Return (length, request id, stream id, stream flags, type, flags); length uses all 24
    bits (never Mercurial's 16384 weighting of the third byte)."""
    low, high, request_id, stream_id, stream_flags, type_flags = HEADER.unpack_from(buf, offset)
    return (
        low | (high << 16),
        request_id,
        stream_id,
        stream_flags,
        type_flags >> 4,
        type_flags & 0xF,
    )


def encode_frame(
    request_id: int,
    stream_id: int,
    stream_flags: int,
    ftype: int,
    flags: int,
    payload: bytes | bytearray | memoryview = b"",
) -> bytes:
    length = len(payload)
    if length > MAX_PAYLOAD_FIELD:
        raise ValueError(f"payload of {length} bytes does not fit the 24-bit length field")
    if not 0 <= request_id <= 0xFFFF or not 0 <= stream_id <= 0xFF:
        raise ValueError("request id or stream id out of range")
    if not 0 <= stream_flags <= 0xFF or not 0 <= ftype <= 0xF or not 0 <= flags <= 0xF:
        raise ValueError("flags or type out of range")
    # bytes + any buffer is bytes: the payload is copied once, into the frame.
    return pack_header(length, request_id, stream_id, stream_flags, ftype, flags) + payload


# Plain-int tables for the per-frame checks (IntEnum and IntFlag arithmetic is slow on a
# path that runs for every frame).
_TYPE_BY_ID: dict[int, FrameType] = {int(t): t for t in FrameType}
_DEFINED_FLAGS: dict[int, int] = {
    int(t): sum(int(m) for m in flags) for t, flags in FLAG_TYPES.items()
}
_PAIRS: dict[int, tuple[int, int, str]] = {int(t): p for t, p in _EXCLUSIVE_PAIRS.items()}
_ALLOWED: dict[bool, frozenset[int]] = {
    True: frozenset(int(t) for t in CLIENT_FRAME_TYPES),
    False: frozenset(int(t) for t in SERVER_FRAME_TYPES),
}
_DATA_TYPE = {True: TYPE_DATA, False: TYPE_RESPONSE}


def validate_frame(frame: Frame, *, from_client: bool) -> None:
    """Check the rules of docs/protocol.md section 1 that a single frame must follow by itself:
    known type, allowed for the sender, defined flags, the exclusive flag pairs, ``encoded``
    only on data-carrying frames, request id 0 on settings. Raises :class:`ProtocolError`."""
    ftype = frame.type
    if ftype not in _TYPE_BY_ID:
        raise ProtocolError(f"reserved frame type 0x{ftype:x}")
    if ftype not in _ALLOWED[from_client]:
        sender = "client" if from_client else "server"
        raise ProtocolError(f"a {sender} may not send {_TYPE_BY_ID[ftype].wire_name} frames")
    stream_flags = frame.stream_flags
    if stream_flags & ~ALL_STREAM_FLAGS:
        raise ProtocolError(f"undefined stream flag bits 0x{stream_flags:02x}")
    flags = frame.flags
    if flags & ~_DEFINED_FLAGS[ftype]:
        raise ProtocolError(f"undefined flag bits 0x{flags:x} on {_TYPE_BY_ID[ftype].wire_name}")
    pair = _PAIRS.get(ftype)
    if pair is not None:
        first, second, label = pair
        if bool(flags & first) == bool(flags & second):
            raise ProtocolError(f"{_TYPE_BY_ID[ftype].wire_name} needs exactly one of {label}")
    if stream_flags & STREAM_ENCODED and ftype != _DATA_TYPE[from_client]:
        raise ProtocolError(
            f"the encoded stream flag is not allowed on {_TYPE_BY_ID[ftype].wire_name}"
        )
    if ftype == TYPE_SETTINGS and frame.request_id != 0:
        raise ProtocolError("sender-protocol-settings must carry request id 0")


class FrameDecoder:
    """Incremental frame parser: feed bytes in any split, get complete frames out.

    A header announcing a payload over ``max_payload`` is rejected from the header alone,
    before any of its payload is buffered.
    """

    __slots__ = ("_buffer", "error", "max_payload")

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        #: Set when a header announced an oversize payload; nothing is parsed after it.
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held (for frame timeouts)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes and return every frame now complete, in order. A header announcing an
        oversize payload stops parsing and sets :attr:`error` (the frames before it are still
        returned); the decoder parses nothing after that."""
        if self.error is not None:
            return []
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        offset = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - offset >= HEADER_SIZE:
                low, high, request_id, stream_id, stream_flags, type_flags = HEADER.unpack_from(
                    view, offset
                )
                length = low | (high << 16)
                if length > self.max_payload:
                    self.error = ProtocolError(
                        f"frame payload of {length} bytes exceeds max_frame_size {self.max_payload}"
                    )
                    break
                stop = offset + HEADER_SIZE + length
                if stop > end:
                    break
                frames.append(
                    Frame(
                        request_id,
                        stream_id,
                        stream_flags,
                        type_flags >> 4,
                        type_flags & 0xF,
                        bytes(view[offset + HEADER_SIZE : stop]),
                    )
                )
                offset = stop
        finally:
            view.release()
            if offset:
                del buf[:offset]
        return frames


def decode_frames(data: bytes, max_payload: int = MAX_PAYLOAD_FIELD) -> list[Frame]:
    """Parse a complete capture; raises :class:`ProtocolError` on trailing partial data."""
    decoder = FrameDecoder(max_payload)
    frames = decoder.feed(data)
    if decoder.error is not None:
        raise decoder.error
    if decoder.buffered:
        raise ProtocolError(f"{decoder.buffered} trailing bytes do not form a frame")
    return frames
