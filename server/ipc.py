"""Messages between the front and its workers over ZeroMQ.

Data messages are multipart: a fixed :data:`ENVELOPE` struct, then raw parts (frame bytes,
command data) that are never re-encoded. Control parts are MessagePack. Nothing is pickled.

This module is shared by the front (``server/``) and the workers (``workers/``); it imports
only the protocol core.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any, NamedTuple

from server.protocol.payloads import pack, unpack_map

#: Remote workers: the front's key pair and the workers' public keys (``zplex keys DIR``).
FRONT_KEY = "front.key"
FRONT_KEY_SECRET = "front.key_secret"
WORKER_KEY_SECRET = "worker.key_secret"
#: How often the front and a remote worker tell each other they are alive, and how long a
#: silence means the other side is gone.
HEARTBEAT_INTERVAL_S = 1.0
REMOTE_SILENCE_S = 5.0

#: Per-stream flow control: a worker sends at most this many response bytes of a stream
#: ahead of what the front has written to the client (the front grants credit back as the
#: client reads, in grants of at least CREDIT_GRANT_BYTES).
STREAM_CREDIT_BYTES = 4 << 20
CREDIT_GRANT_BYTES = 1 << 20
_CREDIT = struct.Struct("<Q")

#: kind, flags, connection id, request id, stream id (the client stream).
ENVELOPE = struct.Struct("<BBIHB")


class Kind(enum.IntEnum):
    # front -> worker
    STREAM_OPEN = 1  # parts: [env, msgpack stream parameters]
    REQUEST = 2  # parts: [env, msgpack {name, args, ...}, chunk flags, *data payloads]
    REJECT = 3  # parts: [env, msgpack {code, message, retryable}]
    CLIENT_STREAM_SETTINGS = 4  # parts: [env, msgpack stream-settings]
    STREAM_END = 5  # the client ended its stream with no request left to carry ``end``
    STREAM_RESET = 6  # ``begin`` on an open stream: drop its contexts
    CONN_CLOSED = 7  # drop every stream of the connection
    STATS = 8  # parts: [env] -> STATS_REPLY
    SHUTDOWN = 9
    WELCOME = 10  # to a remote worker: [env, msgpack {index, server, limits}]
    REJOIN = 11  # to a remote worker the front does not know (any more): start over
    HEARTBEAT = 12  # both ways, front <-> remote worker
    CREDIT = 13  # parts: [env, u64 bytes]: the stream may send that many more bytes
    # worker -> front
    READY = 20  # parts: [env, msgpack {pid, index}]
    FRAMES = 21  # parts: [env, wire bytes]
    CONN_FATAL = 22  # parts: [env, msgpack {code, message}]: end the connection
    STATS_REPLY = 23  # parts: [env, msgpack stats]


class Flag:
    """Bits of an envelope's flags: plain ints, since every message tests them."""

    END_STREAM = 0x01  # REQUEST/REJECT: the client ended its stream with this request
    HAS_DATA = 0x02  # REQUEST: the request carried command-data
    DONE = 0x04  # FRAMES: these bytes include the request's last frame
    STREAM_OPEN = 0x08  # FRAMES: the server stream is open (begun, not ended) after them


_KINDS = {int(kind): kind for kind in Kind}  # a dict lookup is much cheaper than Kind(n)


class Envelope(NamedTuple):
    """The fixed header of every front <-> worker message (a named tuple: one is built per
    message)."""

    kind: Kind
    flags: int = 0
    conn: int = 0
    request: int = 0
    stream: int = 0

    def pack(self) -> bytes:
        return ENVELOPE.pack(self.kind, self.flags, self.conn, self.request, self.stream)

    @classmethod
    def unpack(cls, data: bytes) -> Envelope:
        kind, flags, conn, request, stream = ENVELOPE.unpack(data)
        return cls(_KINDS[kind], flags, conn, request, stream)


#: Messages about one stream, kept in order behind the stream's response being sent.
STREAM_SCOPED = frozenset(
    {
        Kind.STREAM_OPEN,
        Kind.REQUEST,
        Kind.REJECT,
        Kind.CLIENT_STREAM_SETTINGS,
        Kind.STREAM_END,
        Kind.STREAM_RESET,
    }
)


def credit(amount: int) -> bytes:
    return _CREDIT.pack(amount)


def read_credit(data: bytes) -> int:
    (amount,) = _CREDIT.unpack(data)
    return int(amount)


def control(value: dict[str, Any]) -> bytes:
    return pack(value)


def read_control(data: bytes) -> dict[str, Any]:
    return unpack_map(data, "control message")


@dataclasses.dataclass(frozen=True, slots=True)
class StreamParams:
    """What a worker needs to serve one client stream of a connection."""

    encoding: str
    level: int | None
    context: str
    max_frame_size: int
    write: bool

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> StreamParams:
        return cls(
            encoding=str(m["encoding"]),
            level=m["level"],
            context=str(m["context"]),
            max_frame_size=int(m["max_frame_size"]),
            write=bool(m["write"]),
        )


# -- batches ----------------------------------------------------------------------------------
#
# Each ZeroMQ message carries a batch of messages (everything one side produced in one turn of
# its loop), so the per-message cost of ZeroMQ is paid once per batch: a message is a part
# count (u8), then each part as a u32 length and its bytes.

_COUNT = struct.Struct("<B")
_LENGTH = struct.Struct("<I")


def encode_message(parts: list[bytes]) -> bytes:
    out = [_COUNT.pack(len(parts))]
    for part in parts:
        out.append(_LENGTH.pack(len(part)))
        out.append(part)
    return b"".join(out)


def decode_batch(blob: bytes) -> list[list[bytes]]:
    """The messages of a batch; ValueError if it is truncated."""
    messages: list[list[bytes]] = []
    offset = 0
    end = len(blob)
    try:
        while offset < end:
            (count,) = _COUNT.unpack_from(blob, offset)
            offset += 1
            parts: list[bytes] = []
            for _ in range(count):
                (size,) = _LENGTH.unpack_from(blob, offset)
                offset += 4
                if offset + size > end:
                    raise ValueError("truncated batch")
                parts.append(blob[offset : offset + size])
                offset += size
            messages.append(parts)
    except struct.error:
        raise ValueError("truncated batch") from None
    return messages


class Batch:
    """Messages waiting to go out as one ZeroMQ message."""

    __slots__ = ("records", "size")

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.size = 0

    def add(self, parts: list[bytes]) -> None:
        record = encode_message(parts)
        self.records.append(record)
        self.size += len(record)

    def take(self) -> bytes:
        blob = b"".join(self.records)
        self.records.clear()
        self.size = 0
        return blob
