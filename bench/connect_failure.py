"""Why a connection to a zplex server failed, in words that name the thing at fault: a host
name that does not resolve, an address that refuses the connection or does not answer, a port
where something other than a zplex server listens. One wording for the command-line client
(``zplex get``, ``stats``, ...) and the bench (``--connect``)."""

from __future__ import annotations

import os
import socket

from bench.client_results import ConnectionLost, HandshakeTimeout, ServerError

#: Seconds the tools give a server to accept the connection and send its settings (or their
#: ``--timeout`` if shorter): a port where something else listens, silent, fails within this.
HANDSHAKE_TIMEOUT_S = 10.0

#: What connecting can raise, besides the caller's own errors.
CONNECT_ERRORS = (OSError, ServerError, ConnectionLost)


def _host_of(address: str) -> str:
    """The host of ``HOST:PORT`` (or ``[v6]:PORT``)."""
    return address.rpartition(":")[0].strip("[]")


def describe_connect_failure(address: str, exc: BaseException, seconds: float) -> str:
    """What to tell a person whose connection to ``address`` (``HOST:PORT``) failed with
    ``exc``; ``seconds`` is the time the connection was given."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {_host_of(address)}: {exc.strerror or exc}"
    if isinstance(exc, HandshakeTimeout):
        return (
            f"{address} did not answer the zplex handshake within {exc.seconds:g} s: "
            "is it a zplex server?"
        )
    if isinstance(exc, TimeoutError):
        return (
            f"cannot connect to {address}: no answer within {seconds:g} s (is the address "
            "right, or is a firewall dropping the connection?)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {address}: connection refused (is a zplex server running there?)"
    if isinstance(exc, ServerError) and exc.code == "protocol":
        return f"{address} did not answer with zplex frames ({exc.message}): is it a zplex server?"
    if isinstance(exc, ConnectionLost):
        return f"{address} closed the connection before the zplex handshake: is it a zplex server?"
    if isinstance(exc, OSError) and exc.errno:
        return f"cannot connect to {address}: {os.strerror(exc.errno)}"
    return f"cannot connect to {address}: {exc}"
