"""A small in-test zplex server on the protocol core, for testing clients without the real
front and workers.

It answers ``echo`` (the request's data back) and ``generate`` (``b"x" * size``), with the
encoding, level and context negotiated from the client's settings, and ``unknown-command``
for anything else, except these test hooks:

* ``hold``: not answered until a ``goaway`` (then answered like ``echo``);
* ``drop``: half of a response goes out, then the connection closes;
* ``fail-connection``: a connection-level ``protocol`` error, then the connection closes;
* ``stats`` (only with ``with_stats=True``, else unknown): a minimal ``stats`` header
  (this process as the front, no workers);
* ``goaway``: a connection-level ``goaway`` listing the held requests in ``in_flight``, a
  ``shutting-down`` error for the ``goaway`` request itself (it came "after" the goaway), the
  held requests answered, then the connection closes.

``delay_s`` delays every ``echo`` and ``generate`` answer by that many seconds (a server of
known latency; answers on one stream keep their order).

Use :class:`FakeServer` inside a running loop (``async with FakeServer() as server``) or
:class:`FakeServerThread` (``with FakeServerThread() as server``) for synchronous clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from types import TracebackType
from typing import Any, Self

from server.protocol.encoding import Decoder, clamp_level, negotiate_encoding, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    SettingsReceived,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ClientSettings, ServerSettings
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection, connection_error_frame

SERVER_NAME = "zplex-fake/0"
#: Largest ``generate`` the fake serves (keeps a typo from eating the test host's memory).
MAX_GENERATE = 64 << 20


def digest(data: bytes) -> str:
    return "blake2b-256:" + hashlib.blake2b(data, digest_size=32).hexdigest()


class _Connection(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.conn = ServerConnection(server.limits, server.server_settings)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client_settings = ClientSettings()
        self.writers: dict[int, ServerStreamWriter] = {}
        self.decoders: dict[int, Decoder] = {}
        self.held: list[RequestReady] = []

    # -- transport callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        transport.write(self.conn.initial_bytes())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if self.transport is None or self.transport.is_closing():
                return
            self._event(event)

    # -- helpers -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        if data:
            self.transport.write(data)

    def _writer(self, client_stream: int) -> ServerStreamWriter:
        writer = self.writers.get(client_stream)
        if writer is None:
            wishes = self.client_settings
            encoding = negotiate_encoding(wishes.encodings, self.server.encodings)
            level = clamp_level(encoding, wishes.level, self.server.limits.max_level)
            settings = stream_settings_for(encoding, level, wishes.context)
            writer = ServerStreamWriter(client_stream + 1, settings, wishes.max_frame_size)
            self.writers[client_stream] = writer
        return writer

    def _fail(self, code: ErrorCode, message: str, **details: Any) -> None:
        self._write(connection_error_frame(code, message, code is ErrorCode.GOAWAY, **details))
        assert self.transport is not None
        self.transport.close()

    def _answer(self, request: RequestReady, header: dict[str, Any], body: bytes) -> None:
        writer = self._writer(request.stream_id)
        self._write(
            writer.response(request.request_id, header, body, end_stream=request.end_stream)
        )
        self.conn.response_sent(request.request_id)

    def _error(
        self, rid: int, stream: int, code: ErrorCode, message: str, end_stream: bool
    ) -> None:
        retryable = code in (ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN)
        writer = self._writer(stream)
        self._write(writer.error(rid, code, message, retryable, end_stream=end_stream))
        self.conn.response_sent(rid)

    # -- events ----------------------------------------------------------------------------

    def _event(self, event: object) -> None:
        match event:
            case SettingsReceived(settings=settings):
                self.client_settings = settings
                self.server.settings_received.append(settings)
            case StreamSettingsReceived(stream_id=sid, settings=settings):
                if settings.encoding == "identity":
                    self.decoders.pop(sid, None)
                else:
                    self.decoders[sid] = Decoder(settings)
            case StreamReset(stream_id=sid):
                self.decoders.pop(sid, None)
                writer = self.writers.get(sid)
                if writer is not None:
                    writer.reset()
            case StreamEnded(stream_id=sid):
                self.decoders.pop(sid, None)
                writer = self.writers.get(sid)
                if writer is not None:
                    self._write(writer.end())
            case RequestRejected(request_id=rid, stream_id=sid, code=code, message=message):
                self._error(rid, sid, code, message, event.end_stream)
            case RequestReady():
                self._request(event)
            case ConnectionFailed(data=data):
                self._write(data)
                assert self.transport is not None
                self.transport.close()

    def _data(self, request: RequestReady) -> bytes:
        parts: list[bytes] = []
        cap = self.server.limits.max_decoded_bytes_per_frame
        for chunk in request.data:
            if chunk.encoded:
                decoder = self.decoders.get(request.stream_id)
                if decoder is None:
                    raise DecodeError("encoded data without a decoder")
                parts.append(decoder.decode(chunk.payload, cap))
            else:
                parts.append(chunk.payload)
        return b"".join(parts)

    def _request(self, request: RequestReady) -> None:
        self.server.requests.append((request.request_id, request.stream_id, request.name))
        try:
            data = self._data(request)
        except DecodeError as exc:
            self._fail(ErrorCode.TOO_LARGE, exc.message)
            return
        delay = self.server.delay_s
        if delay > 0 and request.name in ("echo", "generate"):
            asyncio.get_running_loop().call_later(delay, self._answer_now, request, data)
            return
        self._answer_now(request, data)

    def _answer_now(self, request: RequestReady, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        rid, sid = request.request_id, request.stream_id
        name = request.name
        if name == "echo":
            self._answer(request, {"status": "ok", "size": len(data), "digest": digest(data)}, data)
        elif name == "generate":
            size = request.args.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_GENERATE:
                self._error(rid, sid, ErrorCode.BAD_REQUEST, "bad size", request.end_stream)
                return
            body = b"x" * size
            self._answer(request, {"status": "ok", "size": size, "digest": digest(body)}, body)
        elif name == "stats" and self.server.with_stats:
            front = {"pid": os.getpid(), "cpu_user": 0.0, "cpu_system": 0.0}
            self._answer(request, {"status": "ok", "front": front, "workers": []}, b"")
        elif name == "hold":
            self.held.append(request)
        elif name == "drop":
            out = self._writer(sid).response(rid, {"status": "ok"}, bytes(range(256)) * 400)
            self._write(out[: len(out) // 2])
            assert self.transport is not None
            self.transport.close()
        elif name == "fail-connection":
            self._fail(ErrorCode.PROTOCOL, "the test asked for it")
        elif name == "goaway":
            in_flight = [held.request_id for held in self.held]
            self.conn.start_goaway()
            self._write(
                connection_error_frame(ErrorCode.GOAWAY, "shutting down", True, in_flight=in_flight)
            )
            self._error(
                rid, sid, ErrorCode.SHUTTING_DOWN, "the server is shutting down", request.end_stream
            )
            for held in self.held:
                self._answer(held, {"status": "ok", "size": len(held.data)}, b"held")
            self.held.clear()
            assert self.transport is not None
            self.transport.close()
        else:
            self._error(
                rid, sid, ErrorCode.UNKNOWN_COMMAND, f"unknown command {name!r}", request.end_stream
            )


class FakeServer:
    """The fake server on 127.0.0.1 (port 0 unless given), in the running loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        encodings: tuple[str, ...] = ENCODINGS,
        delay_s: float = 0.0,
        with_stats: bool = False,
    ) -> None:
        self.host = host
        self.delay_s = delay_s
        self.with_stats = with_stats
        self.requested_port = port
        self.limits = limits or Limits()
        self.encodings = encodings
        self.server_settings = ServerSettings(
            server=SERVER_NAME,
            encodings=encodings,
            max_frame_size=self.limits.max_frame_size,
            workers=1,
            limits=self.limits.to_wire(),
        )
        self.connections: set[_Connection] = set()
        self.settings_received: list[ClientSettings] = []
        #: (request id, client stream, command name) of every complete request, in order.
        self.requests: list[tuple[int, int, str]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.requested_port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection and wait until they are closed."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        waiting = []
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
            waiting.append(connection.closed)
        if waiting:
            await asyncio.wait_for(asyncio.gather(*waiting), timeout)
        await asyncio.wait_for(server.wait_closed(), timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeServerThread:
    """:class:`FakeServer` on its own event loop in a background thread."""

    def __init__(self, *, timeout: float = 5.0, **kwargs: Any) -> None:
        self.server = FakeServer(**kwargs)
        self.timeout = timeout
        self._thread = threading.Thread(target=self._run, name="fake-zplex", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        await self.server.start()
        self._ready.set()
        try:
            await self._stop
        finally:
            await self.server.stop(self.timeout)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError("the fake server did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, stop)
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise TimeoutError("the fake server did not stop")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
