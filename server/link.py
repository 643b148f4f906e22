"""The front's side of the ZeroMQ link to workers: a ROUTER socket driven by the event loop.

A plain (non-asyncio) socket: its FD wakes the loop (edge-triggered, so every wake-up drains
what is ready), sends never block, and what a full worker queue refuses waits in order in an
outbox. Messages for a worker queued during one turn of the loop go as one batch
(:class:`server.ipc.Batch`). This costs a few microseconds per message where pyzmq's asyncio
wrapper costs a future each way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from server.ipc.batch import Batch, decode_batch
from server.ipc.remote import FRONT_KEY_SECRET

log = logging.getLogger("zplex.link")

HIGH_WATER_MARK = 1000
#: Batches handled per wake-up before connections get a turn.
ZMQ_BATCH = 256

#: Called with the sender's identity and each message of a batch it sent.
OnMessage = Callable[[bytes, list[bytes]], None]


def router_socket(ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # never drop a message silently
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a replacement worker takes over its identity
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


#: A refusal of the same worker key is logged at most once per this many seconds.
REFUSAL_LOG_PERIOD_S = 60.0


class RefusalLog:
    """The CURVE authenticator's log: a worker whose key is refused is a warning with the
    likely cause (its public key is not in the front's key directory), not a silent retry;
    the rest stays at debug level."""

    def __init__(self, keys_dir: str) -> None:
        self.keys_dir = keys_dir
        self.log = logging.getLogger("zplex.auth")
        self._said: dict[str, float] = {}

    def debug(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        if text.startswith("DENIED"):
            now = time.monotonic()
            if now - self._said.get(text, -REFUSAL_LOG_PERIOD_S) < REFUSAL_LOG_PERIOD_S:
                return  # a refused worker retries every few hundred ms: say it once a minute
            self._said[text] = now
            self.log.warning(
                "a remote worker was refused: CURVE authentication failed (%s); its public "
                "key is not among the *.key files of %s (copy its worker.key there)",
                text,
                self.keys_dir,
            )
        else:
            self.log.debug(message, *args)

    def info(self, message: str, *args: Any) -> None:
        self.log.info(message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self.log.warning(message, *args)

    def error(self, message: str, *args: Any) -> None:
        self.log.error(message, *args)


def curve_router_socket(
    ctx: zmq.Context[zmq.Socket[bytes]], keys_dir: str, endpoint: str
) -> tuple[zmq.Socket[bytes], ThreadAuthenticator]:
    """A ROUTER for remote workers on ``endpoint``, authenticated with CURVE: the front's
    key pair and the workers' public keys live in ``keys_dir`` (``zplex keys``)."""
    keys = Path(keys_dir)
    public, secret = zmq.auth.load_certificate(keys / FRONT_KEY_SECRET)
    if secret is None:
        raise ValueError(f"{FRONT_KEY_SECRET} has no secret key")
    auth = ThreadAuthenticator(ctx, log=RefusalLog(str(keys)))
    auth.start()
    auth.configure_curve(domain="*", location=str(keys))
    sock = router_socket(ctx)
    try:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        sock.bind(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        auth.stop()
        raise
    return sock, auth


class WorkerLink:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes], on_message: OnMessage
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self._fd = int(sock.getsockopt(zmq.FD))
        self._outbox: collections.deque[list[bytes]] = collections.deque()
        self._batches: dict[bytes, Batch] = collections.defaultdict(Batch)
        self._flush_scheduled = False
        self._kicked = False
        loop.add_reader(self._fd, self._on_events)

    def send(self, identity: bytes, message: list[bytes]) -> None:
        """Queue a message for a worker; what one turn of the loop queues goes as one
        batch."""
        self._batches[identity].add(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        for identity, batch in self._batches.items():
            if not batch.records:
                continue
            parts = [identity, batch.take()]
            if self._outbox or not self._send_now(parts):
                self._outbox.append(parts)
                self._kick(delay=0.001)
        self._kick()

    def _send_now(self, parts: list[bytes]) -> bool:
        """False when the worker's queue is full (the message must wait)."""
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=len(parts[-1]) < 65536)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the worker is gone; its loss is handled
            log.warning("cannot reach worker %r: %s", parts[0], exc)
        return True

    def _kick(self, delay: float = 0.0) -> None:
        """Look at the socket again soon: after any send or receive the FD may not signal
        what became ready."""
        if self._kicked:
            return
        self._kicked = True
        if delay:
            self.loop.call_later(delay, self._on_events)
        else:
            self.loop.call_soon(self._on_events)

    def _on_events(self) -> None:
        self._kicked = False
        if self.sock.closed:
            return
        while self._outbox and self._send_now(self._outbox[0]):
            self._outbox.popleft()
        for _ in range(ZMQ_BATCH):
            try:
                identity, blob = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                log.error("malformed message from a worker")
                continue
            try:
                for message in decode_batch(blob):
                    self.on_message(identity, message)
            except Exception:
                log.exception("bad message from worker %r", identity)
        else:
            self._kick()  # more may be waiting: let connections run first
            return
        if self._outbox:
            self._kick(delay=0.001)

    def close(self) -> None:
        self.loop.remove_reader(self._fd)
        self.sock.close(linger=0)
