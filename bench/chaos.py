"""``zplex bench --chaos SECONDS``: kill a server process now and then, retry as a user would,
and count what became of every request.

The killer (:class:`Killer`) runs beside a measured phase: every ``SECONDS`` it sends SIGKILL
to a random worker of the server the bench started (with ``--chaos-fronts``, a random worker or
front), found in the server's ready file, which the server keeps current as it replaces them.
It kills only processes of that server (children of its main process), never the supervisor.

The client side (:class:`bench.chaos_driver.ChaosPassDriver`, the pass driver of every client
process when ``--chaos`` is on) retries what a user would retry, with bounded
attempts and exponential backoff:

- ``worker-lost`` when nothing of the response had arrived (the server says so with
  ``retryable``; the client knows whether a part had come), ``overloaded`` and
  ``shutting-down``;
- a lost connection or a failed connect (its front was killed): on a new connection, since the
  bench's requests are reads.

Every request ends as exactly one of: ``answered`` (a right answer: size and digest checked
against the object's known digest, possibly after retries), ``failed`` (a documented error the
user would not retry, or retries exhausted) or ``lost`` (no answer within ``--timeout``, or a
wrong answer: both must never happen). ``retried`` counts the requests that needed at least one
retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psutil

from bench.client import AsyncClient, ConnectionLost, ServerError

if TYPE_CHECKING:
    from bench.server_process import ServerProcess

#: Attempts per request (the first one included).
MAX_ATTEMPTS = 6
#: The wait before the first retry; it doubles at each retry, up to :data:`MAX_BACKOFF_S`.
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
#: Error codes a user retries (``worker-lost`` only when nothing of the response arrived).
RETRYABLE_CODES = frozenset({"worker-lost", "overloaded", "shutting-down"})
#: The counters of a run under chaos, besides ``kills``.
OUTCOMES = ("answered", "retried", "failed", "lost")


def is_retryable(exc: BaseException) -> bool:
    """Whether a user would send the request again after ``exc``."""
    if isinstance(exc, ServerError):
        if exc.connection_level:
            return exc.code in ("shutting-down", "overloaded")
        if exc.code == "worker-lost":
            return exc.retryable and not exc.partial
        return exc.code in RETRYABLE_CODES
    return isinstance(exc, ConnectionLost | OSError)


def backoff_s(retry: int) -> float:
    """The wait before retry number ``retry`` (1, 2, ...)."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (retry - 1)))


Connector = Callable[..., Awaitable[AsyncClient]]


def retrying_connect(connect: Connector) -> Connector:
    """``connect`` retried with backoff: a connect that reached a front being killed."""

    async def connect_again(**kwargs: Any) -> AsyncClient:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await connect(**kwargs)
            except (ConnectionLost, OSError, ServerError) as exc:
                if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                    raise
            await asyncio.sleep(backoff_s(attempt))
        raise AssertionError("unreachable")

    return connect_again


class StreamConnection:
    """The connection a stream's requests go on: the pass's own, then a new one whenever it
    was lost or is draining (its front was killed or stops)."""

    def __init__(self, client: AsyncClient, connect: Connector, context: str) -> None:
        self.client = client
        self.connect = connect
        self.context = context
        self.opened: list[AsyncClient] = []
        self._lock = asyncio.Lock()

    async def live(self) -> AsyncClient:
        async with self._lock:
            if self.client.closed or self.client.goaway is not None:
                self.client = await self.connect(context=self.context)
                self.opened.append(self.client)
            return self.client

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.opened))


class Killer:
    """Sends SIGKILL to a random worker (or front, with ``fronts``) of ``server`` every
    ``period_s`` seconds while it runs; ``kills`` counts the processes killed."""

    def __init__(self, server: ServerProcess, period_s: float, fronts: bool, seed: int) -> None:
        self.server = server
        self.period_s = period_s
        self.fronts = fronts
        self.random = random.Random(seed)
        self.kills = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.kills

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            pid = self.pick()
            if pid is not None and self.kill(pid):
                self.kills += 1

    def pick(self) -> int | None:
        """A random worker (or front) of the server as its ready file lists them now. A front
        is a candidate only while at least two serve: one is always left to accept the
        bench's connections (its stats, its reconnects), as a real deployment would keep one."""
        ready = self.server.current_ready()
        candidates = [int(pid) for pid in ready.get("workers") or []]
        serving = [int(pid) for pid in ready.get("fronts") or []]
        if self.fronts and len(serving) >= 2:
            candidates += serving
        candidates = [pid for pid in candidates if pid != ready.get("pid")]
        return self.random.choice(candidates) if candidates else None

    def kill(self, pid: int) -> bool:
        """SIGKILL ``pid`` if it is a live process of the server (not a reused pid)."""
        proc = self.server.proc
        if proc is None or pid not in child_pids(proc.pid):
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True


def chaos_figures(kills: int, counts: dict[str, int]) -> dict[str, int]:
    """The ``chaos`` object of a run's JSON."""
    return {"kills": kills, **{name: int(counts.get(name, 0)) for name in OUTCOMES}}


def describe(figures: dict[str, int]) -> str:
    """``3 kills: 1,234 answered, 12 retried, 0 failed, 0 lost``."""
    outcomes = ", ".join(f"{figures.get(name, 0):,} {name}" for name in OUTCOMES)
    return f"{figures.get('kills', 0):,} kills: {outcomes}"


def child_pids(pid: int) -> set[int]:
    """The live descendants of ``pid``."""
    with contextlib.suppress(psutil.Error):
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return set()
