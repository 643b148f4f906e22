"""The zplex client library: a synchronous :class:`Client` (one blocking socket, no event loop,
no threads) and an :class:`AsyncClient` (asyncio), both thin I/O adapters
(:mod:`bench.sync_client`, :mod:`bench.async_client`) around one implementation of the calls
(:mod:`bench.client_base`) and of the protocol state (:mod:`bench.client_session`, over the
sans-I/O :class:`~server.protocol.client_conn.ClientConnection`).

Requests are placed on client streams (odd ids). The requests of one stream share one server
compression context, in order; different streams are served in parallel. :class:`StreamPool`
maps an affinity key (a file's path, a table's name) onto a fixed set of streams so related
objects share a context (README, "Choosing streams")::

    with Client.connect("127.0.0.1", 7410) as client:
        pool = StreamPool(4)
        response = client.get("src/a.py", stream=pool.stream_for("src"))
        print(response.header["digest"], len(response.body), response.wire_bytes)

Security: a compression context sees every byte of its stream. Do not put secrets and data an
attacker can influence on one stream (CRIME/BREACH).

Every wait has a timeout (the ``timeout`` given to ``connect``, or a per-call one); running out
raises :class:`TimeoutError`. ``connect`` itself waits at most ``connect_timeout`` (default:
``timeout``) for the connection and then for the server's settings (:class:`HandshakeTimeout`:
what listens there does not speak zplex). A request-level error-response raises
:class:`ServerError` with the request's id; a connection-level one (``protocol``, ``too-large``,
``goaway``) fails the pending requests with :class:`ServerError` (``request_id`` None), except,
for ``goaway``, the requests the server listed as still in flight. A lost connection fails
every pending request with :class:`ConnectionLost`.
"""

from __future__ import annotations

from bench.async_client import AsyncClient
from bench.client_results import (
    ConnectionLost,
    HandshakeTimeout,
    Response,
    ServerError,
    body_digest,
)
from bench.client_session import (
    DEFAULT_ENCODINGS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    MAX_MESSAGES,
)
from bench.stream_pool import StreamPool
from bench.sync_client import IO_CHUNK, Client, PipelineItem

__all__ = [
    "DEFAULT_ENCODINGS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "IO_CHUNK",
    "MAX_MESSAGES",
    "AsyncClient",
    "Client",
    "ConnectionLost",
    "HandshakeTimeout",
    "PipelineItem",
    "Response",
    "ServerError",
    "StreamPool",
    "body_digest",
]
