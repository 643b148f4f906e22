"""Errors of the zplex protocol, each carrying its wire code (docs/protocol.md section 5).

Two families are kept apart:

* :class:`RemoteError` -- the peer broke a rule or asked for something we refuse. It carries
  the code and a message that is safe to send back (no paths, no tracebacks).
* :class:`LocalError` -- our own bug or an internal failure. Its details stay in our logs; the
  peer only ever sees ``internal``.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Every error code of docs/protocol.md section 5."""

    BAD_REQUEST = "bad-request"
    UNKNOWN_COMMAND = "unknown-command"
    NOT_FOUND = "not-found"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too-large"
    TOO_MANY_STREAMS = "too-many-streams"
    OVERLOADED = "overloaded"
    WORKER_LOST = "worker-lost"
    SHUTTING_DOWN = "shutting-down"
    INTERNAL = "internal"
    PROTOCOL = "protocol"
    GOAWAY = "goaway"


#: Codes whose failure is retryable by default (``worker-lost`` depends on whether any
#: response frame was sent, so callers decide it).
RETRYABLE_CODES = frozenset({ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN, ErrorCode.GOAWAY})


class ZplexError(Exception):
    """Base of every error this package raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class RemoteError(ZplexError):
    """The peer's fault; ``message`` is safe to send back to it."""


class ProtocolError(RemoteError):
    """Connection-level: a malformed frame or a broken rule. The connection ends."""

    code = ErrorCode.PROTOCOL


class PayloadError(ProtocolError):
    """A control payload (msgpack map) is undecodable or has a field of the wrong type.

    ``field`` names the offending field (``None`` when the payload itself is not a map). The
    receiver decides the scope: a settings payload ends the connection, a command-request map
    fails only its request (``bad-request``).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DecodeError(RemoteError):
    """Connection-level ``too-large``: encoded data that is corrupt, asks for a window over the
    limit or decodes past a limit. The decoding context cannot be kept in step."""

    code = ErrorCode.TOO_LARGE


class RequestError(RemoteError):
    """Request-level: that request failed and is over; the connection goes on."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message, code=code)
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        if self._retryable is not None:
            return self._retryable
        return self.code in RETRYABLE_CODES


class LocalError(ZplexError):
    """Our own failure; the peer sees only ``internal``."""

    code = ErrorCode.INTERNAL
