"""What a request of the zplex client ends with: a :class:`Response`, or one of the
exceptions :class:`ServerError` (an error-response) and :class:`ConnectionLost`; and what a
connect that got no server settings in time ends with (:class:`HandshakeTimeout`)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Self

from server.protocol.payloads import ErrorResponse


@dataclasses.dataclass(slots=True)
class Response:
    """A complete response. ``raw_bytes``: decoded bytes (header and body); ``wire_bytes``:
    the frames as received, 8-byte headers included (stream-settings frames counted with the
    response they preceded); ``latency_s``: monotonic seconds from send to ``eos``."""

    request_id: int
    stream_id: int
    header: dict[str, Any]
    body: bytes
    raw_bytes: int
    wire_bytes: int
    latency_s: float

    @property
    def status(self) -> str:
        return str(self.header.get("status", ""))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ratio(self) -> float:
        """Raw bytes per wire byte (above 1 when compression paid)."""
        return self.raw_bytes / self.wire_bytes if self.wire_bytes else 0.0

    def raise_for_status(self) -> Self:
        if not self.ok:
            raise ServerError(
                "bad-status",
                f"response status {self.status!r}",
                request_id=self.request_id,
            )
        return self

    def verify_digest(self) -> bool | None:
        """Whether the body matches the header's ``digest`` (None when it has none)."""
        digest = self.header.get("digest")
        if not isinstance(digest, str) or not digest.startswith("blake2b-256:"):
            return None
        return digest == body_digest(self.body)


def body_digest(data: bytes) -> str:
    """The ``digest`` the protocol puts in response headers."""
    return "blake2b-256:" + hashlib.blake2b(data, digest_size=32).hexdigest()


class ServerError(Exception):
    """An error-response from the server. ``request_id`` is None for a connection-level
    error; ``partial``: some of the response had arrived (and was discarded)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
        request_id: int | None = None,
        partial: bool = False,
    ) -> None:
        where = "connection" if request_id is None else f"request {request_id}"
        super().__init__(f"{code}: {message} ({where})")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = dict(details or {})
        self.request_id = request_id
        self.partial = partial

    @classmethod
    def from_wire(
        cls, error: ErrorResponse, request_id: int | None, partial: bool = False
    ) -> ServerError:
        return cls(
            error.code,
            error.message,
            retryable=error.retryable,
            details=error.details,
            request_id=request_id,
            partial=partial,
        )

    @property
    def connection_level(self) -> bool:
        return self.request_id is None

    def copy(self) -> ServerError:
        """A fresh instance (one exception object is never raised in two places)."""
        return ServerError(
            self.code,
            self.message,
            retryable=self.retryable,
            details=self.details,
            request_id=self.request_id,
            partial=self.partial,
        )


class ConnectionLost(Exception):
    """The connection closed (or broke) before the request completed."""


class HandshakeTimeout(TimeoutError):
    """The connection was made, but the server's settings did not come within ``seconds``:
    what listens there does not speak zplex first (or is stuck)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no server settings within {seconds:g} s")
        self.seconds = seconds


def fresh(exc: ServerError | ConnectionLost) -> ServerError | ConnectionLost:
    return exc.copy() if isinstance(exc, ServerError) else ConnectionLost(*exc.args)


#: What a pending request ends with.
Outcome = Response | ServerError | ConnectionLost
