"""The one implementation of the zplex client's calls, shared by the synchronous
:class:`~bench.sync_client.Client` and the asyncio :class:`~bench.async_client.AsyncClient`.

:class:`ClientBase` holds every public call (``connect``, ``send``, ``request``, the commands,
stream settings, the counters) on top of a :class:`~bench.client_session.ClientSession`. A
subclass is only an I/O adapter: it opens the connection (``_open``), says whether it can
still write (``_writable``), writes bytes (``_transmit``), hands back a sent request
(``_sent``) and waits for its response (``_response``). Its type parameters say what the
calls give: a :class:`~bench.client_results.Response` or an awaitable of one, a request id or
a future, the client or an awaitable of it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from bench.client_results import ConnectionLost, ServerError
from bench.client_session import (
    DEFAULT_ENCODINGS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    ClientSession,
    check_stream,
    client_settings,
    generate_args,
    get_args,
    list_args,
)
from server.protocol.payloads import ServerSettings

#: What :meth:`ClientBase.request` gives: a Response, or an awaitable of one.
ResultT = TypeVar("ResultT")
#: What :meth:`ClientBase.send` gives: the request's id, or a future of its Response.
SentT = TypeVar("SentT")
#: What :meth:`ClientBase.connect` gives: the client, or an awaitable of it.
OpenedT = TypeVar("OpenedT")


class ClientBase(Generic[ResultT, SentT, OpenedT]):
    """A zplex connection's calls, whatever drives its socket."""

    _session: ClientSession
    timeout: float

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
        connect_timeout: float | None = None,
    ) -> OpenedT:
        """Open a TCP connection, send the client settings, wait for the server's: each within
        ``connect_timeout`` seconds (default ``timeout``, the calls' default afterwards;
        :class:`~bench.client_results.HandshakeTimeout` when the settings do not come)."""
        settings = client_settings(encodings, level, context, max_frame_size, token)
        opening = timeout if connect_timeout is None else connect_timeout
        return cls._open(ClientSession(settings), host, port, timeout, opening)

    # -- what an I/O adapter provides ------------------------------------------------------

    @classmethod
    def _open(
        cls, session: ClientSession, host: str, port: int, timeout: float, connect_timeout: float
    ) -> OpenedT:
        """Connect, write the session's opening bytes and wait for the server's settings
        (each within ``connect_timeout``); ``timeout`` is the calls' default."""
        raise NotImplementedError

    @property
    def _writable(self) -> bool:
        """Whether bytes can still be written (the socket or transport is open)."""
        raise NotImplementedError

    def _transmit(self, data: bytes, timeout: float | None) -> None:
        """Write ``data`` (the synchronous client also reads meanwhile, for ``timeout`` s)."""
        raise NotImplementedError

    def _sent(self, request_id: int, data: bytes, timeout: float | None) -> SentT:
        """Write a new request's bytes; what :meth:`send` returns for it."""
        raise NotImplementedError

    def _response(self, sent: SentT, timeout: float | None, deadline: float) -> ResultT:
        """The response to a request :meth:`send` just wrote (``timeout`` as given to
        :meth:`request`, ``deadline`` the monotonic time it ends at), or an awaitable of it."""
        raise NotImplementedError

    # -- requests ----------------------------------------------------------------------------

    def _ensure_writable(self) -> None:
        """Raise if nothing more can be written: the reason the session knows (goaway,
        connection-level error, loss), else :class:`ConnectionLost`."""
        if not self._writable:
            self._session.check_usable()
            raise ConnectionLost("the connection is closed")

    def send(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> SentT:
        """Write one request now. :class:`~bench.sync_client.Client` reads responses
        meanwhile (for at most ``timeout`` seconds) and returns the request's id for
        ``wait``; :class:`~bench.async_client.AsyncClient` writes without waiting (it has no
        use for ``timeout``) and returns a future that resolves to the :class:`Response` (or
        raises :class:`ServerError` / :class:`ConnectionLost`): await it with a timeout, or
        use ``wait``, and call ``drain`` now and then when pipelining a lot of data."""
        check_stream(stream)
        self._ensure_writable()
        request_id, out = self._session.request(name, args, data, stream, end_stream)
        return self._sent(request_id, out, timeout)

    def request(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        stream: int = 1,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> ResultT:
        """Send one request and wait for its response (:class:`ServerError` for an error);
        with :class:`~bench.async_client.AsyncClient`, await it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        sent = self.send(name, args, data, stream=stream, end_stream=end_stream, timeout=timeout)
        return self._response(sent, timeout, deadline)

    def set_data_encoding(
        self,
        stream: int,
        encoding: str,
        level: int | None = None,
        *,
        context: str = "stream",
    ) -> None:
        """Encode this stream's command data from now on (a stream-settings frame)."""
        check_stream(stream)
        self._ensure_writable()
        self._transmit(self._session.data_encoding(stream, encoding, level, context), None)

    def end_stream(self, stream: int) -> None:
        """End client stream ``stream`` (if open); the server ends ``stream + 1`` in turn."""
        out = self._session.end_stream(stream)
        if out:
            self._ensure_writable()
            self._transmit(out, None)

    # -- state -------------------------------------------------------------------------------

    @property
    def server_settings(self) -> ServerSettings:
        settings = self._session.server_settings
        if settings is None:
            raise ConnectionLost("no server settings received")
        return settings

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

    # -- commands (docs/protocol.md) ---------------------------------------------------------

    def capabilities(self, *, stream: int = 1) -> ResultT:
        return self.request("capabilities", stream=stream)

    def get(
        self,
        key: str,
        offset: int | None = None,
        length: int | None = None,
        *,
        stream: int = 1,
        digest: bool = True,
    ) -> ResultT:
        """``digest=False`` asks for a header without the body's digest (``size`` only)."""
        return self.request("get", get_args(key, offset, length, digest), stream=stream)

    def list(
        self, prefix: str | None = None, limit: int | None = None, *, stream: int = 1
    ) -> ResultT:
        return self.request("list", list_args(prefix, limit), stream=stream)

    def generate(
        self, size: int, kind: str = "text", seed: int = 0, *, stream: int = 1, digest: bool = True
    ) -> ResultT:
        """``digest=False`` asks for a header without the body's digest (``size`` only)."""
        return self.request("generate", generate_args(size, kind, seed, digest), stream=stream)

    def echo(self, data: bytes | None = None, *, stream: int = 1) -> ResultT:
        return self.request("echo", None, data, stream=stream)

    def put(self, key: str, data: bytes, *, stream: int = 1) -> ResultT:
        return self.request("put", {"key": key}, data, stream=stream)

    def delete(self, key: str, *, stream: int = 1) -> ResultT:
        """Remove an object (header ``size``: its size). A zplex extension: only a server
        started with ``--allow-delete`` offers it (others answer ``unknown-command``)."""
        return self.request("delete", {"key": key}, stream=stream)

    def stats(self, *, stream: int = 1) -> ResultT:
        return self.request("stats", stream=stream)
