"""Typed events produced by the connection state machines: named tuples (one is built per
request and per response chunk, and a tuple is much cheaper to build than a frozen
dataclass)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import ErrorCode
from .payloads import ClientSettings, ErrorResponse, Progress, ServerSettings, StreamSettings

# ---- server side: what a client's bytes mean ---------------------------------------------


class SettingsReceived(NamedTuple):
    """The client's sender-protocol-settings (or the defaults, ``explicit=False``, when its
    first frame was something else)."""

    settings: ClientSettings
    explicit: bool = True


class StreamSettingsReceived(NamedTuple):
    """The client announced a new encoding context for its command data on ``stream_id``."""

    stream_id: int
    settings: StreamSettings


class DataChunk(NamedTuple):
    """One command-data frame's payload; ``encoded`` payloads go through the stream's
    decoder (on the worker that owns the stream)."""

    encoded: bool
    payload: bytes


class RequestReady(NamedTuple):
    """A complete, valid request: route it to the worker of ``stream_id``. ``end_stream``:
    the client ended its stream with this request's last frame. ``command_map``: the
    request's MessagePack map as the client sent it (forwarded to the worker as it is)."""

    request_id: int
    stream_id: int
    name: str
    args: dict[str, Any]
    data: tuple[DataChunk, ...]
    has_data: bool
    end_stream: bool
    command_map: bytes = b""


class RequestRejected(NamedTuple):
    """A request that fails without running: answer it with this error, in request order
    on its stream."""

    request_id: int
    stream_id: int
    code: ErrorCode
    message: str
    end_stream: bool

    @property
    def retryable(self) -> bool:
        return self.code in (ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN)


class StreamEnded(NamedTuple):
    """The client ended ``stream_id`` with a frame that completes no request."""

    stream_id: int


class StreamReset(NamedTuple):
    """``begin`` on an open stream: drop the old stream's contexts before what follows."""

    stream_id: int


class ConnectionFailed(NamedTuple):
    """A connection-level error: send ``data`` (the error-response frame), then close."""

    code: ErrorCode
    message: str
    data: bytes


ServerEvent = (
    SettingsReceived
    | StreamSettingsReceived
    | RequestReady
    | RequestRejected
    | StreamEnded
    | StreamReset
    | ConnectionFailed
)

# ---- client side: what a server's bytes mean ---------------------------------------------


class ServerSettingsReceived(NamedTuple):
    settings: ServerSettings


class ResponseHeader(NamedTuple):
    request_id: int
    header: dict[str, Any]


class ResponseBody(NamedTuple):
    request_id: int
    data: bytes


class ResponseComplete(NamedTuple):
    """The response's ``eos`` arrived. ``raw_bytes``: decoded bytes (header and body);
    ``wire_bytes``: frames as sent, headers included (stream-settings frames counted with
    the response they preceded)."""

    request_id: int
    raw_bytes: int
    wire_bytes: int


class ResponseError(NamedTuple):
    """A request-level error-response; ``partial``: some of the response had arrived (the
    client discards it)."""

    request_id: int
    error: ErrorResponse
    partial: bool
    wire_bytes: int


class ConnectionErrorReceived(NamedTuple):
    """A connection-level error-response (stream 0): ``protocol``, ``too-large``, ``goaway``."""

    error: ErrorResponse


class TextOutputReceived(NamedTuple):
    level: str
    message: str


class ProgressReceived(NamedTuple):
    request_id: int
    progress: Progress


class ServerStreamEnded(NamedTuple):
    stream_id: int


ClientEvent = (
    ServerSettingsReceived
    | ResponseHeader
    | ResponseBody
    | ResponseComplete
    | ResponseError
    | ConnectionErrorReceived
    | TextOutputReceived
    | ProgressReceived
    | ServerStreamEnded
)
