"""The server's three state machines as tables: the connection (settings first), each client
stream (closed, open, rejected) and each request (assembling its map, receiving data,
complete, or being discarded after a rejection).

Every transition is in a table: ``(state, input) -> next state``; a pair in the matching
``*_ERRORS`` table is a protocol error with that message; any other pair cannot occur.
:mod:`server.protocol.server_conn` drives them.
"""

from __future__ import annotations

import enum

# ---- connection state machine -----------------------------------------------------------


class ConnState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    AWAIT_SETTINGS = "await-settings"
    SETTINGS_PARTIAL = "settings-partial"
    READY = "ready"
    FAILED = "failed"


class ConnInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    SETTINGS_MORE = "settings-continuation"
    SETTINGS_EOS = "settings-eos"
    OTHER = "other-frame"


CONN_TABLE: dict[tuple[ConnState, ConnInput], ConnState] = {
    (ConnState.AWAIT_SETTINGS, ConnInput.SETTINGS_MORE): ConnState.SETTINGS_PARTIAL,
    (ConnState.AWAIT_SETTINGS, ConnInput.SETTINGS_EOS): ConnState.READY,
    (ConnState.AWAIT_SETTINGS, ConnInput.OTHER): ConnState.READY,
    (ConnState.SETTINGS_PARTIAL, ConnInput.SETTINGS_MORE): ConnState.SETTINGS_PARTIAL,
    (ConnState.SETTINGS_PARTIAL, ConnInput.SETTINGS_EOS): ConnState.READY,
    (ConnState.READY, ConnInput.OTHER): ConnState.READY,
}

CONN_ERRORS: dict[tuple[ConnState, ConnInput], str] = {
    (ConnState.SETTINGS_PARTIAL, ConnInput.OTHER): "settings interrupted by another frame",
    (ConnState.READY, ConnInput.SETTINGS_MORE): "sender-protocol-settings after other frames",
    (ConnState.READY, ConnInput.SETTINGS_EOS): "sender-protocol-settings after other frames",
}

# ---- client stream state machine --------------------------------------------------------


class StreamState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    CLOSED = "closed"
    OPEN = "open"
    REJECTED = "rejected"  # opened over max_streams: its requests get too-many-streams


class StreamInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    BEGIN = "begin"
    BEGIN_OVER_LIMIT = "begin-over-limit"
    FRAME = "frame"  # no begin
    END = "end"  # the frame carried ``end`` (applied after the frame itself)


STREAM_TABLE: dict[tuple[StreamState, StreamInput], StreamState] = {
    (StreamState.CLOSED, StreamInput.BEGIN): StreamState.OPEN,
    (StreamState.CLOSED, StreamInput.BEGIN_OVER_LIMIT): StreamState.REJECTED,
    (StreamState.OPEN, StreamInput.BEGIN): StreamState.OPEN,  # reset: a new stream, same id
    (StreamState.OPEN, StreamInput.BEGIN_OVER_LIMIT): StreamState.OPEN,
    (StreamState.OPEN, StreamInput.FRAME): StreamState.OPEN,
    (StreamState.REJECTED, StreamInput.BEGIN): StreamState.OPEN,
    (StreamState.REJECTED, StreamInput.BEGIN_OVER_LIMIT): StreamState.REJECTED,
    (StreamState.REJECTED, StreamInput.FRAME): StreamState.REJECTED,
    (StreamState.OPEN, StreamInput.END): StreamState.CLOSED,
    (StreamState.REJECTED, StreamInput.END): StreamState.CLOSED,
}

STREAM_ERRORS: dict[tuple[StreamState, StreamInput], str] = {
    (StreamState.CLOSED, StreamInput.FRAME): "frame on a stream that is not open, without begin",
    (StreamState.CLOSED, StreamInput.END): "frame on a stream that is not open, without begin",
}

# ---- request state machine --------------------------------------------------------------


class ReqState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    MAP = "map"  # receiving command-request frames
    DATA = "data"  # map complete, receiving command-data
    DONE = "done"  # every frame received
    MAP_DISCARD = "map-discard"  # rejected; swallowing the rest of its frames
    DATA_DISCARD = "data-discard"


class ReqInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow

    MAP_MORE = "request-continuation-more"
    MAP_LAST = "request-continuation-last"  # the map is complete; no command data
    MAP_LAST_DATA = "request-continuation-last-have-data"  # complete; command data follows
    DATA_MORE = "data-continuation"
    DATA_EOS = "data-eos"
    REJECT = "reject"  # over a limit while it arrives (only in MAP or DATA): discard the rest


REQUEST_TABLE: dict[tuple[ReqState, ReqInput], ReqState] = {
    (ReqState.MAP, ReqInput.MAP_MORE): ReqState.MAP,
    (ReqState.MAP, ReqInput.MAP_LAST): ReqState.DONE,
    (ReqState.MAP, ReqInput.MAP_LAST_DATA): ReqState.DATA,
    (ReqState.MAP, ReqInput.REJECT): ReqState.MAP_DISCARD,
    (ReqState.MAP_DISCARD, ReqInput.MAP_MORE): ReqState.MAP_DISCARD,
    (ReqState.MAP_DISCARD, ReqInput.MAP_LAST): ReqState.DONE,
    (ReqState.MAP_DISCARD, ReqInput.MAP_LAST_DATA): ReqState.DATA_DISCARD,
    (ReqState.DATA, ReqInput.DATA_MORE): ReqState.DATA,
    (ReqState.DATA, ReqInput.DATA_EOS): ReqState.DONE,
    (ReqState.DATA, ReqInput.REJECT): ReqState.DATA_DISCARD,
    (ReqState.DATA_DISCARD, ReqInput.DATA_MORE): ReqState.DATA_DISCARD,
    (ReqState.DATA_DISCARD, ReqInput.DATA_EOS): ReqState.DONE,
}

REQUEST_ERRORS: dict[tuple[ReqState, ReqInput], str] = {
    (ReqState.MAP, ReqInput.DATA_MORE): "command-data before the command-request is complete",
    (ReqState.MAP, ReqInput.DATA_EOS): "command-data before the command-request is complete",
    (ReqState.MAP_DISCARD, ReqInput.DATA_MORE): (
        "command-data before the command-request is complete"
    ),
    (ReqState.MAP_DISCARD, ReqInput.DATA_EOS): (
        "command-data before the command-request is complete"
    ),
    (ReqState.DATA, ReqInput.MAP_MORE): "command-request continuation after its data began",
    (ReqState.DATA, ReqInput.MAP_LAST): "command-request continuation after its data began",
    (ReqState.DATA, ReqInput.MAP_LAST_DATA): "command-request continuation after its data began",
    (ReqState.DATA_DISCARD, ReqInput.MAP_MORE): (
        "command-request continuation after its data began"
    ),
    (ReqState.DATA_DISCARD, ReqInput.MAP_LAST): (
        "command-request continuation after its data began"
    ),
    (ReqState.DATA_DISCARD, ReqInput.MAP_LAST_DATA): (
        "command-request continuation after its data began"
    ),
    (ReqState.DONE, ReqInput.MAP_MORE): "frame for a request that is already complete",
    (ReqState.DONE, ReqInput.MAP_LAST): "frame for a request that is already complete",
    (ReqState.DONE, ReqInput.MAP_LAST_DATA): "frame for a request that is already complete",
    (ReqState.DONE, ReqInput.DATA_MORE): "frame for a request that is already complete",
    (ReqState.DONE, ReqInput.DATA_EOS): "frame for a request that is already complete",
}
