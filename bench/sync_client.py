"""The synchronous zplex client: :class:`Client`, one non-blocking socket driven by a selector
while a call waits (no event loop, no threads) around the shared calls of
:class:`~bench.client_base.ClientBase`, plus :meth:`Client.pipeline`."""

from __future__ import annotations

import builtins
import contextlib
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Self

from bench.client_base import ClientBase
from bench.client_results import ConnectionLost, HandshakeTimeout, Outcome, Response, ServerError
from bench.client_session import ClientSession, check_stream

#: Bytes read from the socket at a time, and written at most per send call.
IO_CHUNK = 256 * 1024

#: One request of :meth:`Client.pipeline`: (name, args, data, stream).
PipelineItem = tuple[str, dict[str, Any] | None, bytes | None, int]


class Client(ClientBase[Response, int, "Client"]):
    """A zplex connection over one blocking-style socket, driven by a selector while a call
    waits: no event loop, no threads. Writes and reads are interleaved, so a long pipeline
    never deadlocks on full socket buffers. Create it with :meth:`connect`."""

    def __init__(self, sock: socket.socket, session: ClientSession, timeout: float) -> None:
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
    def _open(
        cls, session: ClientSession, host: str, port: int, timeout: float, connect_timeout: float
    ) -> Client:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
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
                client._pump(ready, connect_timeout)
            except TimeoutError:
                raise HandshakeTimeout(connect_timeout) from None
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

    # -- the adapter's part of the shared calls ----------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sock is None

    @property
    def _writable(self) -> bool:
        return self._sock is not None

    def _transmit(self, data: bytes, timeout: float | None) -> None:
        self._out += data
        self._pump(lambda: True, timeout)

    def _sent(self, request_id: int, data: bytes, timeout: float | None) -> int:
        self._transmit(data, timeout)
        return request_id

    def _response(self, sent: int, timeout: float | None, deadline: float) -> Response:
        try:
            return self.wait(sent, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._abandon([sent])
            raise

    # -- waiting -------------------------------------------------------------------------

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
            check_stream(stream)
        self._ensure_writable()
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

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; pending requests fail with :class:`ConnectionLost`."""
        self._out.clear()
        self._store(self._session.fail_all(ConnectionLost("closed by the client")))
        self._shutdown()
        self._selector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
