"""The front's side of the ZeroMQ link to workers: a ROUTER socket driven by the event loop.

A plain (non-asyncio) socket: its FD wakes the loop (edge-triggered, so every wake-up drains
what is ready), sends never block, and what a full worker queue refuses waits in order in that
worker's own backlog: a stalled worker never delays messages to the others. A worker with a
backlog is retried on a timer that backs off (1 ms doubling to 100 ms), and the link says when
a worker's backlog starts and ends (``on_backlog``) so that the front can stop reading from
the connections that feed it. Messages for a worker queued during one turn of the loop go as
one batch (:class:`server.ipc.Batch`). This costs a few microseconds per message where pyzmq's
asyncio wrapper costs a future each way.
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

#: First and longest wait before a worker with a backlog is tried again.
RETRY_FIRST_S = 0.001
RETRY_MAX_S = 0.1

#: Called with the sender's identity and each message of a batch it sent.
OnMessage = Callable[[bytes, list[bytes]], None]
#: Called with a worker's identity when its backlog starts (True) and when it is gone (False).
OnBacklog = Callable[[bytes, bool], None]


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
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[bytes],
        on_message: OnMessage,
        on_backlog: OnBacklog | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self.on_backlog = on_backlog
        self._fd = int(sock.getsockopt(zmq.FD))
        self._batches: dict[bytes, Batch] = collections.defaultdict(Batch)
        #: Per worker: batches its full queue refused, in order, and the retry's next wait.
        self._backlogs: dict[bytes, collections.deque[bytes]] = {}
        self._retry_wait: dict[bytes, float] = {}
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

    def backlog(self, identity: bytes) -> int:
        """Batches waiting for the worker's queue to have room."""
        waiting = self._backlogs.get(identity)
        return len(waiting) if waiting else 0

    def flush(self) -> None:
        self._flush_scheduled = False
        for identity, batch in self._batches.items():
            if not batch.records:
                continue
            blob = batch.take()
            waiting = self._backlogs.get(identity)
            if waiting is not None:
                waiting.append(blob)
            elif not self._send_now(identity, blob):
                self._start_backlog(identity, blob)
        self._kick()

    def _send_now(self, identity: bytes, blob: bytes) -> bool:
        """False when the worker's queue is full (the batch must wait)."""
        try:
            self.sock.send_multipart([identity, blob], flags=zmq.NOBLOCK, copy=len(blob) < 65536)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the worker is gone; its loss is handled
            log.warning("cannot reach worker %r: %s", identity, exc)
        return True

    def _start_backlog(self, identity: bytes, blob: bytes) -> None:
        self._backlogs[identity] = collections.deque([blob])
        self._retry_wait[identity] = RETRY_FIRST_S
        self.loop.call_later(RETRY_FIRST_S, self._retry, identity)
        if self.on_backlog is not None:
            self.on_backlog(identity, True)

    def _retry(self, identity: bytes) -> None:
        """Send what the worker's queue now takes; back off while it takes nothing."""
        waiting = self._backlogs.get(identity)
        if waiting is None or self.sock.closed:
            return
        sent = False
        while waiting and self._send_now(identity, waiting[0]):
            waiting.popleft()
            sent = True
        if not waiting:
            del self._backlogs[identity], self._retry_wait[identity]
            if self.on_backlog is not None:
                self.on_backlog(identity, False)
            self._kick()
            return
        wait = RETRY_FIRST_S if sent else min(RETRY_MAX_S, self._retry_wait[identity] * 2)
        self._retry_wait[identity] = wait
        self.loop.call_later(wait, self._retry, identity)

    def drop(self, identity: bytes) -> None:
        """Forget what waits for a worker that is gone (its loss is being handled)."""
        if self._backlogs.pop(identity, None) is not None:
            del self._retry_wait[identity]
            if self.on_backlog is not None:
                self.on_backlog(identity, False)

    def _kick(self) -> None:
        """Look at the socket again soon: after any send or receive the FD may not signal
        what became ready."""
        if self._kicked:
            return
        self._kicked = True
        self.loop.call_soon(self._on_events)

    def _on_events(self) -> None:
        self._kicked = False
        if self.sock.closed:
            return
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

    def close(self) -> None:
        self.loop.remove_reader(self._fd)
        self.sock.close(linger=0)
