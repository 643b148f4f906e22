"""Error-response frames: request-level ones on a server stream, connection-level ones on
the control stream (stream 0, request id 0). Error responses are never encoded."""

from __future__ import annotations

from typing import Any

from .errors import ErrorCode, PayloadError
from .frames import HEADER_SIZE, FrameType, encode_frame
from .payloads import ErrorResponse, pack, unpack_map

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


def final_error_code(data: bytes) -> str | None:
    """The error code if the last whole frame of ``data`` (wire-ready frames) is an
    error-response, else None. Reads only the frame headers, and the payload of an error."""
    offset = 0
    last = -1
    end = len(data)
    while end - offset >= HEADER_SIZE:
        last = offset
        offset += HEADER_SIZE + (data[offset] | data[offset + 1] << 8 | data[offset + 2] << 16)
    if last < 0 or offset > end or data[last + 7] >> 4 != FrameType.ERROR_RESPONSE:
        return None
    try:
        m = unpack_map(data[last + HEADER_SIZE : offset], "error-response")
        return ErrorResponse.from_wire(m).code
    except PayloadError:
        return None
