"""The HTTP transport of docs/protocol.md section 7.

``POST /api/zplex-v1/<ro|rw>/<command>`` with a frame sequence as the body; each HTTP request
is one zplex connection whose frames (starting with the server's settings) are the response
body. Write permission comes only from an ``rw`` URL with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
from typing import Any, Protocol

from server.config import ServeConfig
from server.http_request import HttpError, RequestHead, content_length, parse_head
from server.http_request import http_error as _error
from server.protocol.frames import decode_frames
from server.protocol.notation import format_frame
from server.protocol.payloads import WRITE_COMMANDS, ServerSettings, withheld_commands
from server.protocol.server_conn import ServerConnection

log = logging.getLogger("zplex.http")

API = "zplex-v1"
MEDIA_TYPE = "application/x-zplex-frames-1"
#: Every command a URL may name; ``delete`` only on a server started with --allow-delete.
COMMANDS = frozenset(
    {"capabilities", "get", "list", "generate", "echo", "put", "delete", "stats", "multirequest"}
)
MAX_HEADER_BYTES = 16384
#: Seconds to read a whole request (headers and body).
READ_TIMEOUT_S = 30.0
#: Seconds an answer may go without producing a byte before the connection is closed.
ANSWER_TIMEOUT_S = 120.0
#: An answer up to this size is sent whole with a Content-Length; a larger one streams to
#: the client as it is produced, in chunks (Transfer-Encoding: chunked).
STREAM_AFTER_BYTES = 1 << 20
#: Bytes waiting for the HTTP client past which the zplex connection is told to pause (its
#: streams stop getting credit, so its workers stop sending).
HIGH_WATER_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class HttpScope:
    """What an HTTP request's zplex connection may do."""

    command: str
    write: bool


class _AnswerTransport(asyncio.Transport):
    """Carries a zplex connection's output to the HTTP client. A small answer is kept and
    sent whole with a Content-Length; once it passes STREAM_AFTER_BYTES it streams as a
    chunked body, and the connection is paused while the client does not keep up (its write
    buffer is what ``get_write_buffer_size`` reports, so max_output_buffer_bytes applies)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.writer = writer
        self.conn: _Connection | None = None
        self.buffer = bytearray()
        self.streaming = False
        self.closed = asyncio.Event()
        self.wrote = asyncio.Event()  # set at every write: the answer makes progress
        self._paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self.closed.is_set():
            return
        self.wrote.set()
        if not self.streaming:
            self.buffer += data
            if len(self.buffer) <= STREAM_AFTER_BYTES:
                return
            self.streaming = True
            self.writer.write(_head(200, "OK", {"Content-Type": MEDIA_TYPE}, chunked=True))
            data, self.buffer = bytes(self.buffer), bytearray()
        if self.writer.transport.is_closing():  # the client went away
            self.closed.set()
            return
        self.writer.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        if not self._paused and self.get_write_buffer_size() > HIGH_WATER_BYTES:
            self._paused = True
            if self.conn is not None:
                self.conn.pause_writing()
            asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self._paused = False
        if self.conn is not None and not self.closed.is_set():
            self.conn.resume_writing()

    async def finish(self) -> None:
        """The connection closed: send what was kept, or end the chunked body."""
        if self.streaming:
            self.writer.write(b"0\r\n\r\n")
        else:
            headers = {"Content-Type": MEDIA_TYPE, "Content-Length": str(len(self.buffer))}
            self.writer.write(_head(200, "OK", headers) + bytes(self.buffer))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        self.closed.set()

    def get_write_buffer_size(self) -> int:
        return len(self.buffer) + self.writer.transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        pass  # the body was read whole before the connection started

    def resume_reading(self) -> None:
        pass


def _head(status: int, reason: str, headers: dict[str, str], *, chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    headers = {**headers, "Connection": "close"}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self, exc: Exception | None) -> None: ...


@dataclasses.dataclass(frozen=True)
class _Run:
    """A request body to run as a zplex connection."""

    scope: HttpScope
    body: bytes


class _Front(Protocol):
    """What the HTTP transport needs of the front."""

    config: ServeConfig
    server_settings: ServerSettings

    def new_connection(self, http: HttpScope | None = None) -> _Connection: ...
    def connection_count(self) -> int: ...


class HttpServer:
    def __init__(self, front: _Front, *, debugreflect: bool = False) -> None:
        self.front = front
        self.debugreflect = debugreflect
        #: Extension commands this server does not offer: their URLs are unknown (404).
        self.withheld = withheld_commands(front.config.allow_delete)
        #: HTTP connections accepted that do not run a zplex connection (yet): with the
        #: front's connections, they count against max_connections.
        self.pending = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.pending += 1
        try:
            await self._answer(reader, writer)
        finally:
            self.pending -= 1

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        whole: tuple[int, str, dict[str, str], bytes] | None = None
        try:
            answer = await asyncio.wait_for(self._respond(reader), READ_TIMEOUT_S)
            if isinstance(answer, _Run):
                await self._run(answer, writer)
            else:
                whole = answer
        except HttpError as exc:
            headers = {"Content-Type": "text/plain; charset=utf-8", **exc.headers}
            whole = (exc.status, exc.reason, headers, (str(exc) + "\n").encode())
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # nothing more to say: the connection is closed
        if whole is not None:
            status, reason, headers, body = whole
            headers = {**headers, "Content-Length": str(len(body))}
            with contextlib.suppress(ConnectionError):
                writer.write(_head(status, reason, headers) + body)
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> RequestHead:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            raise _error(431, "Request Header Fields Too Large", "headers too large") from None
        if len(raw) > MAX_HEADER_BYTES:
            raise _error(431, "Request Header Fields Too Large", "headers too large")
        return parse_head(raw)

    def _check_capacity(self) -> None:
        """Over max_connections (the front's connections and the HTTP ones not yet running),
        the request is refused before its body is read."""
        if self.front.connection_count() + self.pending > self.front.config.limits.max_connections:
            message = "too many connections; try again later"
            raise HttpError(503, "Service Unavailable", message, {"Retry-After": "1"})

    def _route(self, method: str, target: str, headers: dict[str, str]) -> HttpScope | str:
        """Apply the checks of docs/protocol.md section 7 in their order. Returns the scope of a
        zplex request, or the text body of ``GET /api/``."""
        path = target.split("?", 1)[0]
        if path in ("/api", "/api/"):
            if method != "GET":
                raise _error(405, "Method Not Allowed", "use GET", Allow="GET")
            return API + "\n"
        segments = path.split("/")
        if len(segments) != 5 or segments[:2] != ["", "api"] or segments[2] != API:
            raise _error(404, "Not Found", "unknown API")
        permission, command = segments[3], segments[4]
        known = (COMMANDS | ({"debugreflect"} if self.debugreflect else set())) - self.withheld
        if permission not in ("ro", "rw") or command not in known:
            raise _error(404, "Not Found", "unknown permission or command")
        if method != "POST":
            raise _error(405, "Method Not Allowed", "use POST", Allow="POST")
        if permission == "rw":
            refusal = self._write_refusal(headers.get("authorization", ""))
        else:
            refusal = "write permission needed: an rw URL and a bearer token"
        write = refusal is None
        if command in WRITE_COMMANDS and refusal is not None:
            raise _error(403, "Forbidden", refusal)
        if headers.get("accept", "").split(";")[0].strip() != MEDIA_TYPE:
            raise _error(406, "Not Acceptable", f"Accept must be {MEDIA_TYPE}")
        if headers.get("content-type", "").split(";")[0].strip() != MEDIA_TYPE:
            raise _error(415, "Unsupported Media Type", f"Content-Type must be {MEDIA_TYPE}")
        return HttpScope(command, write)

    def _write_refusal(self, authorization: str) -> str | None:
        """Why the ``Authorization`` of an ``rw`` request grants no write permission (None:
        it does). The token is never echoed."""
        token = self.front.config.write_token
        if token is None:
            return "write permission needed: this server has no write token, it takes no writes"
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return "write token missing: send Authorization: Bearer <write token>"
        if not hmac.compare_digest(value.strip().encode(), token.encode()):
            return "write token wrong: the bearer token is not the server's write token"
        return None

    async def _read_body(self, reader: asyncio.StreamReader, head: RequestHead) -> bytes:
        if "transfer-encoding" in head.headers:
            raise _error(411, "Length Required", "send the body with a Content-Length")
        length = content_length(head.content_lengths)
        limits = self.front.config.limits
        if length > limits.max_request_data_bytes + limits.max_request_map_bytes:
            raise _error(413, "Content Too Large", "request body too large")
        return await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT_S)

    async def _respond(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, str, dict[str, str], bytes] | _Run:
        """Read the request: a whole answer (an HTTP error, ``GET /api/``, debugreflect),
        or the zplex connection to run."""
        head = await self._read_request(reader)
        self._check_capacity()
        scope = self._route(head.method, head.target, head.headers)
        if isinstance(scope, str):
            return 200, "OK", {"Content-Type": "text/plain; charset=utf-8"}, scope.encode()
        body = await self._read_body(reader, head)
        if scope.command == "debugreflect":
            return 200, "OK", {"Content-Type": "text/plain; charset=utf-8"}, self._reflect(body)
        return _Run(scope, body)

    async def _run(self, run: _Run, writer: asyncio.StreamWriter) -> None:
        """Run the body as one zplex connection, its answer going to the client as it comes
        (see :class:`_AnswerTransport`); an answer that produces nothing for
        ANSWER_TIMEOUT_S is cut off."""
        transport = _AnswerTransport(writer)
        self.pending -= 1  # from here on, its zplex connection counts
        conn = self.front.new_connection(http=run.scope)
        transport.conn = conn
        try:
            conn.connection_made(transport)
            conn.data_received(run.body)
            conn.eof_received()
            while not transport.closed.is_set():
                transport.wrote.clear()
                closed = asyncio.ensure_future(transport.closed.wait())
                wrote = asyncio.ensure_future(transport.wrote.wait())
                done, _ = await asyncio.wait(
                    {closed, wrote}, timeout=ANSWER_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
                closed.cancel()
                wrote.cancel()
                if not done:
                    log.warning(
                        "HTTP answer made no progress for %.0f s; cut off", ANSWER_TIMEOUT_S
                    )
                    transport.close()
                    raise ConnectionError("answer cut off")
        finally:
            self.pending += 1
            conn.connection_lost(None)
        await transport.finish()

    def _reflect(self, body: bytes) -> bytes:
        """The frames of the body and the server's reading of them, as text."""
        out: list[str] = []
        try:
            frames = decode_frames(body, self.front.config.limits.max_frame_size)
        except Exception as exc:
            return f"cannot parse the body: {exc}\n".encode()
        reading = ServerConnection(self.front.config.limits, self.front.server_settings)
        for frame in frames:
            out.append(format_frame(frame))
            events: list[Any] = reading.receive_frame(frame)
            out.extend(f"  -> {event!r}" for event in events)
        return ("\n".join(out) + "\n").encode()
