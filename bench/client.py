"""The zplex client library: a synchronous :class:`Client` (one blocking socket, no event loop,
no threads) and an :class:`AsyncClient` (asyncio), both thin I/O adapters around the sans-I/O
:class:`~server.protocol.client_conn.ClientConnection`.

Requests are placed on client streams (odd ids). The requests of one stream share one server
compression context, in order; different streams are served in parallel. :class:`StreamPool`
maps an affinity key (a file's path, a table's name) onto a fixed set of streams so related
objects share a context (docs/design.md, "Choosing streams")::

    with Client.connect("127.0.0.1", 7410) as client:
        pool = StreamPool(4)
        response = client.get("src/a.py", stream=pool.stream_for("src"))
        print(response.header["digest"], len(response.body), response.wire_bytes)

Security: a compression context sees every byte of its stream. Do not put secrets and data an
attacker can influence on one stream (CRIME/BREACH).

Every wait has a timeout (the ``timeout`` given to ``connect``, or a per-call one); running out
raises :class:`TimeoutError`. A request-level error-response raises :class:`ServerError` with
the request's id; a connection-level one (``protocol``, ``too-large``, ``goaway``) fails the
pending requests with :class:`ServerError` (``request_id`` None), except, for ``goaway``, the
requests the server listed as still in flight. A lost connection fails every pending request
with :class:`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import hashlib
import selectors
import socket
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from server.protocol.client_conn import ClientConnection
from server.protocol.errors import RemoteError
from server.protocol.events import (
    ConnectionErrorReceived,
    ProgressReceived,
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ResponseHeader,
    ServerSettingsReceived,
    TextOutputReceived,
)
from server.protocol.limits import MAX_FRAME_SIZE_LIMIT, MAX_WINDOW_LOG, MIN_CLIENT_FRAME_SIZE
from server.protocol.payloads import (
    CONTEXTS,
    ClientSettings,
    ErrorResponse,
    ServerSettings,
    StreamSettings,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7410
DEFAULT_ENCODINGS = ("zstd-8mb", "zlib", "identity")
DEFAULT_TIMEOUT = 30.0
#: Bytes read from the socket at a time, and written at most per send call.
IO_CHUNK = 256 * 1024
#: Text-output messages kept (the most recent ones).
MAX_MESSAGES = 256

#: One request of :meth:`Client.pipeline`: (name, args, data, stream).
PipelineItem = tuple[str, dict[str, Any] | None, bytes | None, int]


# ---- results and errors -----------------------------------------------------------------


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


def _fresh(exc: ServerError | ConnectionLost) -> ServerError | ConnectionLost:
    return exc.copy() if isinstance(exc, ServerError) else ConnectionLost(*exc.args)


# ---- stream placement -------------------------------------------------------------------


class StreamPool:
    """``n_streams`` odd client stream ids from ``first`` (1, 3, 5, ...); an affinity key maps
    to one of them by ``zlib.crc32`` of its UTF-8 bytes, stable across runs and processes."""

    def __init__(self, n_streams: int, first: int = 1) -> None:
        if n_streams < 1:
            raise ValueError("a stream pool needs at least one stream")
        if first % 2 == 0 or first < 1:
            raise ValueError(f"client streams have odd ids, not {first}")
        last = first + 2 * (n_streams - 1)
        if last > 255:
            raise ValueError(f"{n_streams} streams from {first} go past stream id 255")
        self.streams: tuple[int, ...] = tuple(range(first, last + 1, 2))

    def __len__(self) -> int:
        return len(self.streams)

    def stream_for(self, key: str) -> int:
        return self.streams[zlib.crc32(key.encode("utf-8")) % len(self.streams)]

    __call__ = stream_for


# ---- shared request bookkeeping ---------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Call:
    request_id: int
    stream_id: int
    name: str
    started: float
    header: dict[str, Any] | None = None
    parts: builtins.list[bytes] = dataclasses.field(default_factory=builtins.list)
    progress: tuple[int, int | None] | None = None


Outcome = Response | ServerError | ConnectionLost


class _Session:
    """The protocol state shared by both clients: the core connection, the calls in flight,
    counters. Turns received bytes into (request id, outcome) pairs."""

    def __init__(self, settings: ClientSettings) -> None:
        self.conn = ClientConnection(settings)
        self.settings = settings
        self.calls: dict[int, _Call] = {}
        self.server_settings: ServerSettings | None = None
        #: Set when the connection can take no new request (connection-level error, loss).
        self.failure: ServerError | ConnectionLost | None = None
        self.goaway: ServerError | None = None
        self.messages: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_MESSAGES)
        self.bytes_sent = 0
        self.bytes_received = 0  # every byte read from the socket
        self.raw_bytes_received = 0  # decoded response bytes (headers and bodies)
        self.wire_bytes_received = 0  # response frames as received
        self.responses = 0
        self.errors = 0

    def check_usable(self) -> None:
        """Raise if no new request may be sent: after a goaway (retryable, even once the
        connection has closed), a connection-level error or the connection's loss."""
        if self.goaway is not None:
            raise self.goaway.copy()
        if self.failure is not None:
            raise _fresh(self.failure)

    def request(
        self,
        name: str,
        args: dict[str, Any] | None,
        data: bytes | None,
        stream: int,
        end_stream: bool,
    ) -> tuple[int, bytes]:
        self.check_usable()
        if data is not None and not isinstance(data, bytes):
            data = bytes(data)
        rid, out = self.conn.send_request(stream, name, args, data, end_stream=end_stream)
        self.calls[rid] = _Call(rid, stream, name, time.monotonic())
        self.bytes_sent += len(out)
        return rid, out

    def data_encoding(self, stream: int, encoding: str, level: int | None, context: str) -> bytes:
        self.check_usable()
        if level is None:
            level = self.settings.level
        settings = StreamSettings(
            encoding,
            level if encoding != "identity" else None,
            MAX_WINDOW_LOG if encoding == "zstd-8mb" else None,
            context,
        )
        out = self.conn.set_data_encoding(stream, settings)
        self.bytes_sent += len(out)
        return out

    def end_stream(self, stream: int) -> bytes:
        _check_stream(stream)
        out = self.conn.end_stream(stream)
        self.bytes_sent += len(out)
        return out

    def fail_all(self, exc: ServerError | ConnectionLost) -> builtins.list[tuple[int, Outcome]]:
        if self.failure is None:
            self.failure = exc
        done: builtins.list[tuple[int, Outcome]] = [(rid, _fresh(exc)) for rid in self.calls]
        self.calls.clear()
        return done

    def feed(self, data: bytes) -> builtins.list[tuple[int, Outcome]]:
        self.bytes_received += len(data)
        if self.failure is not None:
            return []
        try:
            events = self.conn.receive_data(data)
        except RemoteError as exc:
            broken = ServerError(
                str(exc.code),
                f"the server broke the protocol: {exc.message}",
                details={"detected_by": "client"},
            )
            return self.fail_all(broken)
        done: builtins.list[tuple[int, Outcome]] = []
        for event in events:
            match event:
                case ServerSettingsReceived(settings=settings):
                    self.server_settings = settings
                case ResponseHeader(request_id=rid, header=header):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.header = header
                case ResponseBody(request_id=rid, data=chunk):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.parts.append(chunk)
                case ResponseComplete(request_id=rid, raw_bytes=raw, wire_bytes=wire):
                    self.raw_bytes_received += raw
                    self.wire_bytes_received += wire
                    self.responses += 1
                    call = self.calls.pop(rid, None)
                    if call is not None:
                        response = Response(
                            rid,
                            call.stream_id,
                            call.header or {},
                            b"".join(call.parts),
                            raw,
                            wire,
                            time.monotonic() - call.started,
                        )
                        done.append((rid, response))
                case ResponseError(request_id=rid, error=error, partial=partial, wire_bytes=w):
                    self.wire_bytes_received += w
                    self.errors += 1
                    if self.calls.pop(rid, None) is not None:
                        done.append((rid, ServerError.from_wire(error, rid, partial)))
                case ConnectionErrorReceived(error=error):
                    done += self._connection_error(error)
                case TextOutputReceived(level=level, message=message):
                    self.messages.append((level, message))
                case ProgressReceived(request_id=rid, progress=progress):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.progress = (progress.done, progress.total)
                case _:
                    pass  # ServerStreamEnded: the core already dropped the stream's decoder
        return done

    def _connection_error(self, error: ErrorResponse) -> builtins.list[tuple[int, Outcome]]:
        exc = ServerError.from_wire(error, None)
        if error.code != "goaway":
            return self.fail_all(exc)
        self.goaway = exc
        listed = error.details.get("in_flight")
        keep = {r for r in listed if isinstance(r, int)} if isinstance(listed, list) else set()
        done: builtins.list[tuple[int, Outcome]] = []
        for rid in builtins.list(self.calls):
            if rid not in keep:
                del self.calls[rid]
                done.append((rid, exc.copy()))
        return done


def _check_stream(stream: int) -> None:
    if not isinstance(stream, int) or stream % 2 == 0 or not 0 < stream < 256:
        raise ValueError(f"client streams have odd ids in [1, 255], not {stream!r}")


def _client_settings(
    encodings: Iterable[str],
    level: int | None,
    context: str,
    max_frame_size: int,
    token: str | None,
) -> ClientSettings:
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
    if not MIN_CLIENT_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
        raise ValueError(
            f"max_frame_size must be in [{MIN_CLIENT_FRAME_SIZE}, {MAX_FRAME_SIZE_LIMIT}]"
        )
    return ClientSettings(
        encodings=tuple(encodings),
        level=level,
        context=context,
        max_frame_size=max_frame_size,
        token=token,
    )


def _get_args(key: str, offset: int | None, length: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {"key": key}
    if offset is not None:
        args["offset"] = offset
    if length is not None:
        args["length"] = length
    return args


def _list_args(prefix: str | None, limit: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if prefix is not None:
        args["prefix"] = prefix
    if limit is not None:
        args["limit"] = limit
    return args


def _settings_timeout(timeout: float) -> TimeoutError:
    return TimeoutError(f"no server settings within {timeout} s")


# ---- asyncio client ---------------------------------------------------------------------


class _AsyncProtocol(asyncio.Protocol):
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client._connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.client._data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(exc)

    def pause_writing(self) -> None:
        self.client._can_write.clear()

    def resume_writing(self) -> None:
        self.client._can_write.set()


R = TypeVar("R")


class _ClientBase(Generic[R]):
    """What both clients share: counters of the session and one method per command. ``R``
    is what :meth:`request` returns: a :class:`Response`, or an awaitable of one."""

    _session: _Session

    def request(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> R:
        raise NotImplementedError

    @property
    def in_flight(self) -> int:
        return len(self._session.calls)

    @property
    def goaway(self) -> ServerError | None:
        return self._session.goaway

    @property
    def messages(self) -> collections.deque[tuple[str, str]]:
        """Recent text-output (level, message) pairs from the server."""
        return self._session.messages

    @property
    def bytes_sent(self) -> int:
        return self._session.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Every byte read from the socket."""
        return self._session.bytes_received

    @property
    def raw_bytes_received(self) -> int:
        """Decoded response bytes (headers and bodies)."""
        return self._session.raw_bytes_received

    @property
    def wire_bytes_received(self) -> int:
        """Response frames as sent, frame headers included."""
        return self._session.wire_bytes_received

    # -- commands (docs/protocol.md section 4) ---------------------------------------------

    def capabilities(self, *, stream: int = 1) -> R:
        return self.request("capabilities", stream=stream)

    def get(
        self, key: str, offset: int | None = None, length: int | None = None, *, stream: int = 1
    ) -> R:
        return self.request("get", _get_args(key, offset, length), stream=stream)

    def list(self, prefix: str | None = None, limit: int | None = None, *, stream: int = 1) -> R:
        return self.request("list", _list_args(prefix, limit), stream=stream)

    def generate(self, size: int, kind: str = "text", seed: int = 0, *, stream: int = 1) -> R:
        return self.request("generate", {"size": size, "kind": kind, "seed": seed}, stream=stream)

    def echo(self, data: bytes | None = None, *, stream: int = 1) -> R:
        return self.request("echo", None, data, stream=stream)

    def put(self, key: str, data: bytes, *, stream: int = 1) -> R:
        return self.request("put", {"key": key}, data, stream=stream)

    def stats(self, *, stream: int = 1) -> R:
        return self.request("stats", stream=stream)


class AsyncClient(_ClientBase[Coroutine[Any, Any, Response]]):
    """A zplex connection on asyncio. Create it with :meth:`connect`.

    :meth:`send` writes a request and returns a future at once, so many requests can be
    pipelined on many streams; :meth:`request` sends and awaits one.
    """

    def __init__(self, session: _Session, timeout: float) -> None:
        self._session = session
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._futures: dict[int, asyncio.Future[Response]] = {}
        self._settings: asyncio.Future[ServerSettings] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._can_write = asyncio.Event()
        self._can_write.set()

    @classmethod
    async def connect(
        cls,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        encodings: Iterable[str] = DEFAULT_ENCODINGS,
        level: int | None = 3,
        context: str = "stream",
        max_frame_size: int = 32768,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncClient:
        """Open a TCP connection, send the client settings, wait for the server's."""
        session = _Session(_client_settings(encodings, level, context, max_frame_size, token))
        client = cls(session, timeout)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: _AsyncProtocol(client), host, port), timeout
        )
        try:
            await asyncio.wait_for(asyncio.shield(client._settings), timeout)
        except TimeoutError:
            await client.close()
            raise _settings_timeout(timeout) from None
        except BaseException:
            await client.close()
            raise
        return client

    # -- transport callbacks -----------------------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        transport.write(self._session.conn.initiate())

    def _data_received(self, data: bytes) -> None:
        session = self._session
        self._resolve(session.feed(data))
        if session.server_settings is not None and not self._settings.done():
            self._settings.set_result(session.server_settings)
        failure = session.failure or session.goaway
        if failure is not None and not self._settings.done():
            self._settings.set_exception(_fresh(failure))
        if session.failure is not None and self._transport is not None:
            self._transport.close()  # the server closes too; nothing more can be used

    def _connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        lost = ConnectionLost(f"the connection closed{reason}")
        self._resolve(self._session.fail_all(lost))
        if not self._settings.done():
            self._settings.set_exception(_fresh(self._session.failure or lost))
            self._settings.exception()  # retrieved: no "never retrieved" log if unused
        self._can_write.set()
        if not self._closed.done():
            self._closed.set_result(None)

    def _resolve(self, done: builtins.list[tuple[int, Outcome]]) -> None:
        for rid, outcome in done:
            future = self._futures.pop(rid, None)
            if future is None or future.done():
                continue
            if isinstance(outcome, Response):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    # -- state ---------------------------------------------------------------------------

    @property
    def server_settings(self) -> ServerSettings:
        settings = self._session.server_settings
        if settings is None:
            raise ConnectionLost("no server settings received")
        return settings

    @property
    def closed(self) -> bool:
        return self._closed.done()

    # -- requests ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._session.check_usable()
            raise ConnectionLost("the connection is closed")
        if data:
            transport.write(data)

    def send(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
    ) -> asyncio.Future[Response]:
        """Write one request now; the future resolves to its :class:`Response` (or raises
        :class:`ServerError` / :class:`ConnectionLost`). Await it with a timeout, or use
        :meth:`wait`; call :meth:`drain` now and then when pipelining a lot of data."""
        _check_stream(stream)
        self._write(b"")  # raises if the connection is unusable
        rid, out = self._session.request(name, args, data, stream, end_stream)
        future: asyncio.Future[Response] = self._loop.create_future()
        self._futures[rid] = future
        self._write(out)
        return future

    async def wait(
        self, future: asyncio.Future[Response], timeout: float | None = None
    ) -> Response:
        """Await a future from :meth:`send`, at most ``timeout`` seconds (default: the
        client's). On a timeout the response, if it comes, is discarded."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise TimeoutError(f"no response within {limit} s") from None

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._can_write.is_set():
            limit = self.timeout if timeout is None else timeout
            try:
                await asyncio.wait_for(self._can_write.wait(), limit)
            except TimeoutError:
                raise TimeoutError(f"the server read nothing for {limit} s") from None

    async def request(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and await its response (:class:`ServerError` for an error)."""
        future = self.send(name, args, data, stream=stream, end_stream=end_stream)
        await self.drain(timeout)
        return await self.wait(future, timeout)

    def set_data_encoding(
        self,
        stream: int,
        encoding: str,
        level: int | None = None,
        *,
        context: str = "stream",
    ) -> None:
        """Encode this stream's command data from now on (a stream-settings frame)."""
        _check_stream(stream)
        self._write(b"")
        self._write(self._session.data_encoding(stream, encoding, level, context))

    def end_stream(self, stream: int) -> None:
        """End client stream ``stream`` (if open); the server ends ``stream + 1`` in turn."""
        out = self._session.end_stream(stream)
        if out:
            self._write(out)

    # -- closing -------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Close the connection; pending requests fail with :class:`ConnectionLost`."""
        transport = self._transport
        if transport is None:
            if not self._closed.done():
                self._closed.set_result(None)
            self._resolve(self._session.fail_all(ConnectionLost("closed by the client")))
            return
        if not transport.is_closing():
            transport.close()
        limit = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), limit)
        except TimeoutError:
            transport.abort()
            await asyncio.wait_for(asyncio.shield(self._closed), limit)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# ---- synchronous client -----------------------------------------------------------------


class Client(_ClientBase[Response]):
    """A zplex connection over one blocking-style socket, driven by a selector while a call
    waits: no event loop, no threads. Writes and reads are interleaved, so a long pipeline
    never deadlocks on full socket buffers. Create it with :meth:`connect`."""

    def __init__(self, sock: socket.socket, session: _Session, timeout: float) -> None:
        self._sock: socket.socket | None = sock
        self._session = session
        self.timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._out = bytearray()
        self._results: dict[int, Outcome] = {}
        self._abandoned: set[int] = set()
        sock.setblocking(False)

    @classmethod
    def connect(
        cls,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        encodings: Iterable[str] = DEFAULT_ENCODINGS,
        level: int | None = 3,
        context: str = "stream",
        max_frame_size: int = 32768,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Client:
        """Open a TCP connection, send the client settings, wait for the server's."""
        session = _Session(_client_settings(encodings, level, context, max_frame_size, token))
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = cls(sock, session, timeout)
        except BaseException:
            sock.close()
            raise
        try:
            client._out += session.conn.initiate()

            def ready() -> bool:
                return session.server_settings is not None or session.failure is not None

            try:
                client._pump(ready, timeout)
            except TimeoutError:
                raise _settings_timeout(timeout) from None
            if session.server_settings is None:
                session.check_usable()
                raise ConnectionLost("no server settings received")
        except BaseException:
            client.close()
            raise
        return client

    # -- I/O -------------------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        self._out.clear()
        self._store(self._session.fail_all(ConnectionLost(reason)))
        self._shutdown()

    def _shutdown(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    def _store(self, done: builtins.list[tuple[int, Outcome]]) -> None:
        for rid, outcome in done:
            if rid in self._abandoned:
                self._abandoned.discard(rid)
            else:
                self._results[rid] = outcome

    def _pump(self, until: Callable[[], bool], timeout: float | None) -> None:
        """Write what is queued and read, until everything is written and ``until()``
        holds; :class:`TimeoutError` after ``timeout`` seconds."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while self._out or not until():
            sock = self._sock
            if sock is None:
                if until():
                    return
                self._session.check_usable()
                raise ConnectionLost("the connection is closed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no progress within {limit} s")
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
            self._selector.modify(sock, events)
            for _key, mask in self._selector.select(remaining):
                if mask & selectors.EVENT_READ and self._sock is not None:
                    self._read()
                if mask & selectors.EVENT_WRITE and self._sock is not None and self._out:
                    self._write_some()

    def _read(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(IO_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"the connection broke: {exc}")
            return
        if not data:
            self._lost("the server closed the connection")
            return
        self._store(self._session.feed(data))
        if self._session.failure is not None:
            self._out.clear()
            self._shutdown()  # connection-level error: the server closes it too

    def _write_some(self) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(memoryview(self._out)[:IO_CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"the connection broke: {exc}")
            return
        del self._out[:sent]

    def _queue(self, data: bytes) -> None:
        if self._sock is None:
            self._session.check_usable()
            raise ConnectionLost("the connection is closed")
        self._out += data

    # -- state -----------------------------------------------------------------------------

    @property
    def server_settings(self) -> ServerSettings:
        settings = self._session.server_settings
        if settings is None:
            raise ConnectionLost("no server settings received")
        return settings

    @property
    def closed(self) -> bool:
        return self._sock is None

    # -- requests --------------------------------------------------------------------------

    def send(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> int:
        """Write one request (reading responses meanwhile); returns its id for :meth:`wait`."""
        _check_stream(stream)
        self._queue(b"")
        rid, out = self._session.request(name, args, data, stream, end_stream)
        self._out += out
        self._pump(lambda: True, timeout)
        return rid

    def wait(self, request_id: int, timeout: float | None = None) -> Response:
        """The response of a request from :meth:`send` (raises :class:`ServerError`,
        :class:`ConnectionLost` or :class:`TimeoutError`)."""
        if request_id not in self._results and request_id not in self._session.calls:
            raise KeyError(f"request {request_id} is not pending")
        self._pump(lambda: request_id in self._results, timeout)
        outcome = self._results.pop(request_id)
        if isinstance(outcome, Response):
            return outcome
        raise outcome

    def request(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and wait for its response (:class:`ServerError` for an error)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        rid = self.send(name, args, data, stream=stream, end_stream=end_stream, timeout=limit)
        try:
            return self.wait(rid, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._abandon([rid])
            raise

    def _abandon(self, rids: Iterable[int]) -> None:
        for rid in rids:
            if self._results.pop(rid, None) is None and rid in self._session.calls:
                self._abandoned.add(rid)

    def pipeline(
        self, items: Iterable[PipelineItem], timeout: float | None = None
    ) -> builtins.list[Response | ServerError]:
        """Write every request, then read until all are answered; results in item order.
        Error-responses are returned as :class:`ServerError`; a lost connection raises
        :class:`ConnectionLost`, running out of ``timeout`` raises :class:`TimeoutError`."""
        batch = builtins.list(items)
        for _name, _args, _data, stream in batch:
            _check_stream(stream)
        self._queue(b"")
        rids: builtins.list[int] = []
        try:
            for name, args, data, stream in batch:
                rid, out = self._session.request(name, args, data, stream, False)
                rids.append(rid)
                self._out += out
            pending = set(rids)

            def complete() -> bool:
                pending.difference_update(self._results.keys() & pending)
                return not pending

            self._pump(complete, timeout)
        except BaseException:
            self._abandon(rids)
            raise
        results: builtins.list[Response | ServerError] = []
        lost: ConnectionLost | None = None
        for rid in rids:
            outcome = self._results.pop(rid)
            if isinstance(outcome, ConnectionLost):
                lost = outcome
            else:
                results.append(outcome)
        if lost is not None:
            raise lost
        return results

    def set_data_encoding(
        self,
        stream: int,
        encoding: str,
        level: int | None = None,
        *,
        context: str = "stream",
    ) -> None:
        """Encode this stream's command data from now on (a stream-settings frame)."""
        _check_stream(stream)
        self._queue(b"")
        self._out += self._session.data_encoding(stream, encoding, level, context)
        self._pump(lambda: True, None)

    def end_stream(self, stream: int) -> None:
        """End client stream ``stream`` (if open); the server ends ``stream + 1`` in turn."""
        out = self._session.end_stream(stream)
        if out:
            self._queue(out)
            self._pump(lambda: True, None)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; pending requests fail with :class:`ConnectionLost`."""
        self._out.clear()
        self._store(self._session.fail_all(ConnectionLost("closed by the client")))
        self._shutdown()
        self._selector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
