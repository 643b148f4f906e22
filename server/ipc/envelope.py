"""The fixed header of every front <-> worker message, and the message kinds.

A message is a list of parts: the packed :class:`Envelope`, then the parts its kind lists
(codecs in :mod:`server.ipc.messages`). Raw parts (frame bytes, command data) are never
re-encoded; control parts are MessagePack; nothing is pickled.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

#: kind, flags, connection id, request id, stream id (the client stream).
ENVELOPE = struct.Struct("<BBIHB")


class Kind(enum.IntEnum):
    # front -> worker
    STREAM_OPEN = 1  # [env, StreamParams]
    REQUEST = 2  # [env, client's command-request map, stats snapshot, ChunkFlags?, *data]
    REJECT = 3  # [env, Rejection]
    CLIENT_STREAM_SETTINGS = 4  # [env, the client's stream-settings map]
    STREAM_END = 5  # the client ended its stream with no request left to carry ``end``
    STREAM_RESET = 6  # ``begin`` on an open stream: drop its contexts
    CONN_CLOSED = 7  # drop every stream of the connection
    STATS = 8  # [env] -> STATS_REPLY (env.conn is the front's token)
    SHUTDOWN = 9
    WELCOME = 10  # to a remote worker: [env, Welcome]
    REJOIN = 11  # to a remote worker the front does not know (any more): start over
    HEARTBEAT = 12  # both ways, front <-> remote worker
    CREDIT = 13  # [env, credit]: the stream may send that many more bytes
    # worker -> front
    READY = 20  # [env, Ready]
    FRAMES = 21  # [env, wire bytes]
    CONN_FATAL = 22  # [env, Fatal]: end the connection
    STATS_REPLY = 23  # [env, WorkerStats]
    GOODBYE = 24  # a remote worker that stops: drop it now, not after its silence


class Flag:
    """Bits of an envelope's flags: plain ints, since every message tests them."""

    END_STREAM = 0x01  # REQUEST/REJECT: the client ended its stream with this request
    HAS_DATA = 0x02  # REQUEST: the request carried command-data
    DONE = 0x04  # FRAMES: these bytes include the request's last frame
    STREAM_OPEN = 0x08  # FRAMES: the server stream is open (begun, not ended) after them


_KINDS = {int(kind): kind for kind in Kind}  # a dict lookup is much cheaper than Kind(n)


class Envelope(NamedTuple):
    """The fixed header of every message (a named tuple: one is built per message)."""

    kind: Kind
    flags: int = 0
    conn: int = 0
    request: int = 0
    stream: int = 0

    def pack(self) -> bytes:
        return ENVELOPE.pack(self.kind, self.flags, self.conn, self.request, self.stream)

    @classmethod
    def unpack(cls, data: bytes) -> Envelope:
        """ValueError for a part that is not an envelope of a known kind."""
        try:
            kind, flags, conn, request, stream = ENVELOPE.unpack(data)
            return cls(_KINDS[kind], flags, conn, request, stream)
        except (struct.error, KeyError):
            raise ValueError("not a message envelope") from None


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
