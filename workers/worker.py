"""A worker process: one DEALER socket per front, driving the sans-I/O :mod:`workers.core`.

The loop polls every front's socket, hands each batch that arrives to the core with the
index of the front it came from, and sends what the core produced, one batch per front: at
the end of each batch handled, or as soon as :data:`workers.core.FLUSH_BYTES` have gathered.
While responses are in progress it polls without waiting and has the core take one step of
them (a chunk of one stream) between polls.
It says READY to every front at start, HEARTBEAT to a front it has sent nothing for
:data:`HEARTBEAT_INTERVAL_S`, exits on SHUTDOWN from any front, and watches its parent (a
local worker) or its fronts' heartbeats (a remote worker, ``zplex worker``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import resource
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from server.ipc.remote import FRONT_KEY, HEARTBEAT_INTERVAL_S, REMOTE_SILENCE_S, WORKER_KEY_SECRET
from server.logs import setup_logging
from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS
from server.protocol.limits import Limits
from workers.commands import Commands, ServerInfo
from workers.core import ProcessUsage, WorkerCore
from workers.store import ObjectStore

log = logging.getLogger("zplex.worker")

#: Bound on queued messages each way: back-pressure instead of unbounded memory.
HIGH_WATER_MARK = 1000
#: How often an idle worker checks that its parent (the front) is still alive.
PARENT_CHECK_S = 1.0
#: Batches taken from one front's socket before the other fronts get a turn.
DRAIN_BATCHES = 64


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    index: int
    #: The first front's endpoint (one front: the only one). With ``endpoints`` given it
    #: may be empty.
    endpoint: str
    store: str
    server: str
    limits: Limits
    max_generate_bytes: int = 256 << 20
    #: Contexts held from which a new zstd context gets small match tables (--small-tables-
    #: from; a remote worker learns it from the front's WELCOME).
    small_tables_from: int = SMALL_TABLES_FROM_CONTEXTS
    #: --allow-delete: offer the ``delete`` extension (a remote worker learns it from the
    #: front's WELCOME).
    allow_delete: bool = False
    log_level: str = "WARNING"
    log_format: str = "text"
    #: A remote worker (``zplex worker``): the directory of its CURVE keys. It joins the
    #: front over TCP, learns its index and limits from the front's WELCOME, and watches
    #: the front with heartbeats instead of its parent process.
    keys: str | None = None
    #: Every front's endpoint, in front order (default: ``(endpoint,)``).
    endpoints: tuple[str, ...] = ()
    #: A local worker sends HEARTBEAT to a front it has sent nothing else for
    #: HEARTBEAT_INTERVAL_S (a restarted front learns of it so, and answers REJOIN). A
    #: remote worker always does.
    heartbeat: bool = True

    def __post_init__(self) -> None:
        if not self.endpoints:
            if not self.endpoint:
                raise ValueError("a worker needs the endpoint of at least one front")
            object.__setattr__(self, "endpoints", (self.endpoint,))
        elif not self.endpoint:
            object.__setattr__(self, "endpoint", self.endpoints[0])
        elif self.endpoint != self.endpoints[0]:
            raise ValueError("endpoint must be the first of endpoints")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))

    def to_dict(self) -> dict[str, Any]:
        """The keyword arguments of this config (shallow: ``limits`` stays a Limits)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class Worker:
    """The ZeroMQ loop around one :class:`WorkerCore`."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.remote = config.keys is not None
        commands = Commands(
            # The server swept the local store at start; a remote worker sweeps its own.
            ObjectStore(config.store, sweep=config.keys is not None),
            ServerInfo(
                config.server, config.limits, config.max_generate_bytes, config.allow_delete
            ),
        )
        self.core = WorkerCore(
            commands,
            config.limits,
            index=config.index,
            endpoints=config.endpoints,
            pid=os.getpid(),
            host=socket.gethostname(),
            remote=self.remote,
            usage=process_usage,
            on_full=self.flush,
            small_tables_from=config.small_tables_from,
        )
        self._ctx = zmq.Context()
        self._curve: tuple[bytes, bytes, bytes] | None = None
        if config.keys is None:
            self._identity = f"w{config.index}"
        else:
            self._identity = f"r-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
            keys = Path(config.keys)
            public, secret = zmq.auth.load_certificate(keys / WORKER_KEY_SECRET)
            front_public, _ = zmq.auth.load_certificate(keys / FRONT_KEY)
            if secret is None:
                raise ValueError(f"{WORKER_KEY_SECRET} has no secret key")
            self._curve = (public, secret, front_public)
        self.socks: list[zmq.Socket[bytes]] = []
        self._front_of: dict[zmq.Socket[bytes], int] = {}
        #: Batches a front's full queue refused, sent in order when it has room: a front
        #: that is slow, or gone and not yet back, never blocks the others.
        self._backlog: list[collections.deque[bytes]] = []
        self._poller = zmq.Poller()
        self._last_sent: list[float] = []
        self._last_heard: list[float] = []
        #: Whether each front ever answered (a front never heard from is a likely key problem).
        self._answered: list[bool] = []
        self._connect_new_fronts()
        self._parent = os.getppid()

    # -- sockets -------------------------------------------------------------------------

    def _connect_new_fronts(self) -> None:
        """A DEALER for each front the core serves and no socket reaches yet: all of them
        at start, later those a WELCOME named."""
        for endpoint in self.core.endpoints[len(self.socks) :]:
            sock = self._ctx.socket(zmq.DEALER)
            if self._curve is not None:
                public, secret, front_public = self._curve
                sock.curve_publickey = public
                sock.curve_secretkey = secret
                sock.curve_serverkey = front_public
            sock.setsockopt(zmq.IDENTITY, self._identity.encode())
            sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
            sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(endpoint)
            self._poller.register(sock, zmq.POLLIN)
            self._front_of[sock] = len(self.socks)
            self.socks.append(sock)
            self._backlog.append(collections.deque())
            now = time.monotonic()
            self._last_sent.append(now)
            self._last_heard.append(now)
            self._answered.append(False)

    def flush(self) -> None:
        """Send what the core produced, one batch per front."""
        if len(self.socks) < len(self.core.endpoints):
            self._connect_new_fronts()
        batches = self.core.take()
        if not batches:
            return
        for front, blob in batches:
            backlog = self._backlog[front]
            if not backlog and self._send(front, blob):
                continue
            if not backlog:
                self._poller.modify(self.socks[front], zmq.POLLIN | zmq.POLLOUT)
            backlog.append(blob)

    def _send(self, front: int, blob: bytes) -> bool:
        """False when the front's queue is full."""
        try:
            self.socks[front].send(blob, zmq.NOBLOCK, copy=len(blob) < 65536)
        except zmq.Again:
            return False
        self._last_sent[front] = time.monotonic()
        return True

    def _send_backlog(self, front: int) -> None:
        backlog = self._backlog[front]
        while backlog and self._send(front, backlog[0]):
            backlog.popleft()
        if not backlog:
            self._poller.modify(self.socks[front], zmq.POLLIN)

    # -- loop ----------------------------------------------------------------------------

    def run(self) -> None:
        self.core.start()
        self.flush()
        tick_ms = int(min(HEARTBEAT_INTERVAL_S, PARENT_CHECK_S) * 1000)
        core = self.core
        try:
            while True:
                # With responses in progress, a step of one between looks at the sockets.
                for sock, event in self._poller.poll(0 if core.has_work() else tick_ms):
                    front = self._front_of[sock]
                    if event & zmq.POLLOUT:
                        self._send_backlog(front)
                    if event & zmq.POLLIN and not self._drain(front):
                        return
                if core.has_work():
                    core.work()
                    self.flush()
                if not self.remote and os.getppid() != self._parent:
                    log.warning("front is gone; worker %d exits", self.core.index)
                    return
                self._keep_alive(time.monotonic())
        finally:
            if self.remote:  # the fronts drop this worker now, not after its silence
                for front in range(len(self.socks)):
                    self.core.goodbye(front)
                self.flush()
            for sock in self.socks:
                sock.close()
            self._ctx.term()

    def _drain(self, front: int) -> bool:
        """Handle the batches waiting on one front's socket; False on SHUTDOWN."""
        sock = self.socks[front]
        try:
            for _ in range(DRAIN_BATCHES):
                try:
                    blob = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._last_heard[front] = time.monotonic()
                self._answered[front] = True
                if not self.core.receive(front, blob):
                    return False
            return True
        finally:
            self.flush()

    def _keep_alive(self, now: float) -> None:
        """Heartbeats to the fronts sent nothing lately; a remote worker whose front fell
        silent drops that front's streams and joins it again."""
        for front in range(len(self.socks)):
            if self.remote and now - self._last_heard[front] > REMOTE_SILENCE_S:
                if self._answered[front]:
                    log.warning(
                        "front %d silent for %.0f s; joining again",
                        front,
                        now - self._last_heard[front],
                    )
                else:
                    log.warning(
                        "front %d (%s) has not answered for %.0f s: is it up and is that its "
                        "--worker-listen endpoint? Do the keys match: the front's --worker-keys "
                        "must hold this worker's worker.key, and this worker's front.key must be "
                        "that front's (a front refusing a key logs it)",
                        front,
                        self.core.endpoints[front] if front < len(self.core.endpoints) else "?",
                        now - self._last_heard[front],
                    )
                self._last_heard[front] = now
                self.core.rejoin(front)
            elif (
                (self.remote or self.config.heartbeat)
                and not self._backlog[front]
                and now - self._last_sent[front] >= HEARTBEAT_INTERVAL_S
            ):
                self.core.heartbeat(front)
        self.flush()


def process_usage() -> ProcessUsage:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessUsage(
        pid=os.getpid(),
        cpu_user=usage.ru_utime,
        cpu_system=usage.ru_stime,
        rss=_rss(),
        max_rss=usage.ru_maxrss * 1024,
    )


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


#: The signal the supervisor stops a local worker with, once its fronts have drained.
STOP_SIGNAL = signal.SIGUSR1


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(config: dict[str, Any]) -> None:
    """Process entry point (started with the ``spawn`` method by the supervisor)."""
    cfg = WorkerConfig(**config)
    setup_logging(cfg.log_level, cfg.log_format, "worker", cfg.index)
    # The supervisor owns Ctrl-C and shutdown: a SIGTERM or SIGINT sent to the whole process
    # group must not end a worker while its fronts drain. It ends on STOP_SIGNAL from the
    # supervisor, on SHUTDOWN, or when the supervisor is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(STOP_SIGNAL, _stop)
    started = time.monotonic()
    Worker(cfg).run()
    log.info("worker %d exits after %.1f s", cfg.index, time.monotonic() - started)


def run_remote(
    endpoint: str,
    keys: str,
    store: str,
    log_level: str = "WARNING",
    log_format: str = "text",
    max_generate_bytes: int = 256 << 20,
) -> int:
    """``zplex worker``: serve a front on another host until it says SHUTDOWN (or SIGTERM,
    Ctrl-C). Index, server name, limits, small_tables_from and whether ``delete`` is offered
    come from the front's WELCOME."""
    setup_logging(log_level, log_format, "worker")
    config = WorkerConfig(
        index=-1,
        endpoint=endpoint,
        store=store,
        server="zplex",
        limits=Limits(),
        max_generate_bytes=max_generate_bytes,
        log_level=log_level,
        log_format=log_format,
        keys=keys,
    )
    worker = Worker(config)
    signal.signal(signal.SIGTERM, _stop)  # stops the loop: the worker says GOODBYE first
    try:
        worker.run()
    except KeyboardInterrupt:
        return 130
    return 0
