"""Error-response frames: request-level ones on a server stream, connection-level ones on
the control stream (stream 0, request id 0). Error responses are never encoded."""

from __future__ import annotations

from typing import Any

from .errors import ErrorCode
from .frames import FrameType, encode_frame
from .payloads import ErrorResponse, pack

CONTROL_STREAM = 0


def error_frame(
    request_id: int,
    stream_id: int,
    code: ErrorCode | str,
    message: str,
    retryable: bool = False,
    *,
    stream_flags: int = 0,
    details: dict[str, Any] | None = None,
) -> bytes:
    """An error-response frame (never encoded)."""
    payload = pack(ErrorResponse(str(code), message, retryable, details or {}).to_wire())
    return encode_frame(request_id, stream_id, stream_flags, FrameType.ERROR_RESPONSE, 0, payload)


def connection_error_frame(
    code: ErrorCode, message: str, retryable: bool = False, **details: Any
) -> bytes:
    """A connection-level error-response on the control stream (request id 0)."""
    return error_frame(0, CONTROL_STREAM, code, message, retryable, details=details)
