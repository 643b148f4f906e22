"""The workers a front talks to: local ones (started by the supervisor, on a private ipc://
endpoint) and remote ones that join over CURVE-authenticated TCP (``zplex worker``).

The fleet keeps a slot per worker (identity, pid, ready, host, when last heard), decodes
what workers send and hands it on (:class:`FleetEvents`), greets remote workers, watches
them with heartbeats, and gathers every worker's figures for ``stats``. Its links are
injected (anything with ``send``, ``flush`` and ``close``), so it runs without sockets in
tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

from server.ipc.envelope import Envelope, Kind
from server.ipc.messages import Fatal, Ready, Welcome, WorkerStats
from server.ipc.remote import REMOTE_SILENCE_S
from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS
from server.protocol.limits import Limits

log = logging.getLogger("zplex.fleet")

STATS_TIMEOUT_S = 2.0
#: Default for how long a local worker may stay silent before it is declared lost.
LOCAL_SILENCE_S = 10.0


class Link(Protocol):
    def send(self, identity: bytes, message: list[bytes]) -> None: ...
    def flush(self) -> None: ...
    def drop(self, identity: bytes) -> None: ...
    def close(self) -> None: ...


class FleetEvents(Protocol):
    """What the fleet tells the front."""

    def worker_ready(self, index: int) -> None: ...
    def worker_lost(self, index: int) -> None: ...
    def frames(self, worker: int, env: Envelope, data: bytes) -> None: ...
    def fatal(self, worker: int, env: Envelope, fatal: Fatal) -> None: ...
    def worker_backlogged(self, index: int, backlogged: bool) -> None: ...
    def worker_silent(self, index: int) -> None: ...


@dataclasses.dataclass
class WorkerSlot:
    index: int
    identity: bytes
    remote: bool = False
    pid: int | None = None
    ready: bool = False
    host: str = ""
    last_seen: float = 0.0  # remote workers: when it was last heard from


class Fleet:
    def __init__(
        self,
        local_count: int,
        server_name: str,
        limits: Limits,
        events: FleetEvents,
        clock: Callable[[], float],
        remote_fronts: tuple[str, ...] = (),
        local_silence_s: float = LOCAL_SILENCE_S,
        small_tables_from: int = SMALL_TABLES_FROM_CONTEXTS,
        allow_delete: bool = False,
    ) -> None:
        self.server_name = server_name
        #: Told to remote workers in their WELCOME (local ones have them in their config):
        #: every worker of a server has the same tables rule and offers the same commands.
        self.small_tables_from = small_tables_from
        self.allow_delete = allow_delete
        #: The endpoints where the other fronts accept remote workers (named in WELCOME).
        self.remote_fronts = remote_fronts
        #: A local worker heard from for this long is declared lost (it heartbeats every
        #: HEARTBEAT_INTERVAL_S when it has nothing else to say).
        self.local_silence_s = local_silence_s
        self.limits = limits
        self.events = events
        self.clock = clock
        self.slots = [WorkerSlot(i, f"w{i}".encode()) for i in range(local_count)]
        #: A local worker's index by its identity (looked up for every message).
        self._local_index = {slot.identity: slot.index for slot in self.slots}
        self.local: Link | None = None
        self.remote: Link | None = None
        self._remote_slots: dict[bytes, WorkerSlot] = {}
        self._stats: dict[int, tuple[asyncio.Future[None], dict[int, dict[str, Any]]]] = {}
        self._next_stats = 1
        #: Workers this front has lost (died, silent, or started over).
        self.losses = 0

    @property
    def local_ready(self) -> bool:
        return all(slot.ready for slot in self.slots if not slot.remote)

    def ready_count(self) -> int:
        return sum(slot.ready for slot in self.slots)

    def remote_workers(self) -> list[dict[str, Any]]:
        return [
            {"index": s.index, "pid": s.pid, "host": s.host}
            for s in self.slots
            if s.remote and s.ready
        ]

    def send(self, index: int, message: list[bytes]) -> None:
        slot = self.slots[index]
        link = self.remote if slot.remote else self.local
        if link is not None:
            link.send(slot.identity, message)

    def flush(self) -> None:
        for link in (self.local, self.remote):
            if link is not None:
                link.flush()

    def close(self) -> None:
        for link in (self.local, self.remote):
            if link is not None:
                link.close()

    def shutdown_remote(self) -> None:
        """Tell every ready remote worker to stop (local ones are the supervisor's)."""
        for slot in self.slots:
            if slot.ready and slot.remote:
                self.send(slot.index, [Envelope(Kind.SHUTDOWN).pack()])
        self.flush()

    # -- losing workers -------------------------------------------------------------------

    def worker_exited(self, index: int) -> None:
        slot = self.slots[index]
        slot.ready = False
        slot.pid = None
        self.losses += 1
        link = self.remote if slot.remote else self.local
        if link is not None:
            link.drop(slot.identity)
        self.events.worker_lost(index)

    def backlogged(self, identity: bytes, backlogged: bool) -> None:
        """A worker's queue is full (True), or takes messages again (False)."""
        slot = self._remote_slots.get(identity)
        if slot is None:
            index = self._local_index.get(identity)
            slot = self.slots[index] if index is not None else None
        if slot is not None:
            self.events.worker_backlogged(slot.index, backlogged)

    def heartbeat(self) -> None:
        """Every HEARTBEAT_INTERVAL_S: declare silent workers lost (a local one is also
        stopped: it may be hung rather than gone), greet the remote ones."""
        now = self.clock()
        for slot in self.slots:
            if not slot.ready:
                continue
            if not slot.remote:
                if now - slot.last_seen > self.local_silence_s:
                    log.warning(
                        "worker %d (pid %s) silent for %.0f s: lost",
                        slot.index, slot.pid, now - slot.last_seen,
                    )  # fmt: skip
                    self.events.worker_silent(slot.index)
                continue
            if now - slot.last_seen > REMOTE_SILENCE_S:
                log.warning(
                    "remote worker %d silent for %.0f s: lost", slot.index, now - slot.last_seen
                )
                self.worker_exited(slot.index)
            else:
                self.send(slot.index, [Envelope(Kind.HEARTBEAT).pack()])

    # -- messages from workers ------------------------------------------------------------

    def from_local(self, identity: bytes, parts: list[bytes]) -> None:
        env = Envelope.unpack(parts[0])
        index = self._local_index.get(identity)
        if index is None:
            raise ValueError(f"message from unknown worker {identity!r}")
        slot = self.slots[index]
        if env.kind is Kind.FRAMES and slot.ready:  # the usual message first
            slot.last_seen = self.clock()
            self.events.frames(index, env, parts[1])
            return
        if env.kind is Kind.READY:
            ready = Ready.decode(parts[1])
            if ready.index != index:
                raise ValueError(f"READY for worker {ready.index} from {identity!r}")
            if slot.ready:  # a new process, or one that started over: its streams are gone
                self.worker_exited(index)
            slot.pid = ready.pid
            slot.ready = True
            slot.last_seen = self.clock()
            log.info("worker %d ready (pid %d)", slot.index, slot.pid)
            self.events.worker_ready(slot.index)
            return
        if not slot.ready:
            # A worker this front does not know (this front was restarted, or lost it):
            # whatever it sends is stale; it drops this front's streams and says READY.
            if self.local is not None:
                self.local.send(identity, [Envelope(Kind.REJOIN).pack()])
            return
        slot.last_seen = self.clock()
        if env.kind is not Kind.HEARTBEAT:
            self._from_worker(index, env, parts)

    def from_remote(self, identity: bytes, parts: list[bytes]) -> None:
        env = Envelope.unpack(parts[0])
        slot = self._remote_slots.get(identity)
        if env.kind is Kind.READY:
            ready = Ready.decode(parts[1])
            if slot is None:
                slot = WorkerSlot(len(self.slots), identity, remote=True)
                self.slots.append(slot)
                self._remote_slots[identity] = slot
            elif slot.ready:  # it started over: whatever it held is gone
                self.worker_exited(slot.index)
            slot.pid = ready.pid
            slot.host = ready.host
            slot.ready = True
            slot.last_seen = self.clock()
            welcome = Welcome(
                slot.index,
                self.server_name,
                self.limits,
                self.remote_fronts,
                self.small_tables_from,
                self.allow_delete,
            )
            self.send(slot.index, [Envelope(Kind.WELCOME).pack(), welcome.encode()])
            log.info("remote worker %d joined from %s (pid %d)", slot.index, slot.host, slot.pid)
            self.events.worker_ready(slot.index)
            return
        if slot is None or not slot.ready:
            # Unknown, or declared lost meanwhile: its streams were answered; it starts over.
            if self.remote is not None:
                self.remote.send(identity, [Envelope(Kind.REJOIN).pack()])
            return
        if env.kind is Kind.GOODBYE:
            log.info("remote worker %d (%s) stopped: dropped", slot.index, slot.host)
            self.worker_exited(slot.index)
            return
        slot.last_seen = self.clock()
        if env.kind is not Kind.HEARTBEAT:
            self._from_worker(slot.index, env, parts)

    def _from_worker(self, index: int, env: Envelope, parts: list[bytes]) -> None:
        if env.kind is Kind.FRAMES:
            self.events.frames(index, env, parts[1])
        elif env.kind is Kind.CONN_FATAL:
            self.events.fatal(index, env, Fatal.decode(parts[1]))
        elif env.kind is Kind.STATS_REPLY:
            waiter = self._stats.get(env.conn)
            if waiter is not None:
                future, replies = waiter
                stats = WorkerStats.decode(parts[1])
                replies[stats.index] = stats.to_map()
                if len(replies) >= self.ready_count() and not future.done():
                    future.set_result(None)
        else:
            raise ValueError(f"unexpected {env.kind.name} from worker {index}")

    # -- stats ----------------------------------------------------------------------------

    async def gather_stats(self, timeout: float = STATS_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every ready worker's figures (those that answer within ``timeout``)."""
        token = self._next_stats
        self._next_stats += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replies: dict[int, dict[str, Any]] = {}
        self._stats[token] = (future, replies)
        try:
            for slot in self.slots:
                if slot.ready:
                    self.send(slot.index, [Envelope(Kind.STATS, conn=token).pack()])
            if self.ready_count():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, timeout)
        finally:
            del self._stats[token]
        return [replies[i] for i in sorted(replies)]
