"""Typed events produced by the connection state machines."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ErrorCode
from .payloads import ClientSettings, ErrorResponse, Progress, ServerSettings, StreamSettings

# ---- server side: what a client's bytes mean ---------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsReceived:
    """The client's sender-protocol-settings (or the defaults, ``explicit=False``, when its
    first frame was something else)."""

    settings: ClientSettings
    explicit: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class StreamSettingsReceived:
    """The client announced a new encoding context for its command data on ``stream_id``."""

    stream_id: int
    settings: StreamSettings


@dataclasses.dataclass(frozen=True, slots=True)
class DataChunk:
    """One command-data frame's payload; ``encoded`` payloads go through the stream's
    decoder (on the worker that owns the stream)."""

    encoded: bool
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RequestReady:
    """A complete, valid request: route it to the worker of ``stream_id``. ``end_stream``:
    the client ended its stream with this request's last frame."""

    request_id: int
    stream_id: int
    name: str
    args: dict[str, Any]
    data: tuple[DataChunk, ...]
    has_data: bool
    end_stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRejected:
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


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnded:
    """The client ended ``stream_id`` with a frame that completes no request."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamReset:
    """``begin`` on an open stream: drop the old stream's contexts before what follows."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionFailed:
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


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSettingsReceived:
    settings: ServerSettings


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseHeader:
    request_id: int
    header: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseBody:
    request_id: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseComplete:
    """The response's ``eos`` arrived. ``raw_bytes``: decoded bytes (header and body);
    ``wire_bytes``: frames as sent, headers included (stream-settings frames counted with
    the response they preceded)."""

    request_id: int
    raw_bytes: int
    wire_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseError:
    """A request-level error-response; ``partial``: some of the response had arrived (the
    client discards it)."""

    request_id: int
    error: ErrorResponse
    partial: bool
    wire_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionErrorReceived:
    """A connection-level error-response (stream 0): ``protocol``, ``too-large``, ``goaway``."""

    error: ErrorResponse


@dataclasses.dataclass(frozen=True, slots=True)
class TextOutputReceived:
    level: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class ProgressReceived:
    request_id: int
    progress: Progress


@dataclasses.dataclass(frozen=True, slots=True)
class ServerStreamEnded:
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
