"""The asyncio zplex client: :class:`AsyncClient`, an asyncio protocol adapter around the
shared calls of :class:`~bench.client_base.ClientBase`."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Coroutine
from typing import Any, Self

from bench.client_base import ClientBase
from bench.client_results import ConnectionLost, HandshakeTimeout, Outcome, Response, fresh
from bench.client_session import ClientSession
from server.protocol.payloads import ServerSettings


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


class AsyncClient(
    ClientBase[
        Coroutine[Any, Any, Response],
        "asyncio.Future[Response]",
        Coroutine[Any, Any, "AsyncClient"],
    ]
):
    """A zplex connection on asyncio. Create it with ``await AsyncClient.connect(...)``.

    :meth:`send` writes a request and returns a future at once, so many requests can be
    pipelined on many streams; :meth:`request` sends and awaits one.
    """

    def __init__(self, session: ClientSession, timeout: float) -> None:
        self._session = session
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._futures: dict[int, asyncio.Future[Response]] = {}
        self._settings: asyncio.Future[ServerSettings] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._can_write = asyncio.Event()
        self._can_write.set()
        #: Requests written during this turn of the loop: they go out in one write.
        self._out: builtins.list[bytes] = []

    @classmethod
    async def _open(
        cls, session: ClientSession, host: str, port: int, timeout: float, connect_timeout: float
    ) -> AsyncClient:
        client = cls(session, timeout)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: _AsyncProtocol(client), host, port), connect_timeout
        )
        try:
            await asyncio.wait_for(asyncio.shield(client._settings), connect_timeout)
        except TimeoutError:
            await client.close()
            raise HandshakeTimeout(connect_timeout) from None
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
            self._settings.set_exception(fresh(failure))
        if session.failure is not None and self._transport is not None:
            self._transport.close()  # the server closes too; nothing more can be used

    def _connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        lost = ConnectionLost(f"the connection closed{reason}")
        self._resolve(self._session.fail_all(lost))
        if not self._settings.done():
            self._settings.set_exception(fresh(self._session.failure or lost))
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

    # -- the adapter's part of the shared calls --------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def _writable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _transmit(self, data: bytes, timeout: float | None) -> None:
        """Queue the bytes; what one turn of the loop queues goes out in one write (one
        system call for a window of pipelined requests, not one per request)."""
        self._ensure_writable()
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _sent(
        self, request_id: int, data: bytes, timeout: float | None
    ) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = self._loop.create_future()
        self._futures[request_id] = future
        self._transmit(data, timeout)
        return future

    async def _response(
        self, sent: asyncio.Future[Response], timeout: float | None, deadline: float
    ) -> Response:
        await self.drain(timeout)
        return await self.wait(sent, timeout)

    # -- waiting -----------------------------------------------------------------------

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
            self._flush()
            transport.close()
        limit = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), limit)
        except TimeoutError:
            transport.abort()
            await asyncio.wait_for(asyncio.shield(self._closed), limit)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
