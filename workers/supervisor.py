"""Server processes (workers, and fronts): spawn (``spawn`` start method), watch (process
sentinels), replace.

The fronts own the ZeroMQ side (ready handshake, routing); this module only manages
processes. It is handed each role's entry point, so it imports nothing of the front.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("zplex.supervisor")

Entry = Callable[[dict[str, Any]], None]

#: A worker that lived this long is considered healthy: its next death restarts it at once.
STABLE_AFTER_S = 10.0
#: Longest wait between respawns of a worker that dies at start-up.
MAX_BACKOFF_S = 5.0


class Supervisor:
    """Keeps ``count`` processes of one role running, each started with its own config."""

    def __init__(
        self,
        count: int,
        entry: Entry,
        config_for: Callable[[int], dict[str, Any]],
        role: str = "worker",
        stop_signal: int | None = None,
    ):
        self.role = role
        #: Sent by :meth:`stop` to ask the processes to exit (None: they are asked some
        #: other way, and only the stragglers are terminated).
        self.stop_signal = stop_signal
        self.count = count
        self.entry = entry
        self.config_for = config_for
        self._mp = multiprocessing.get_context("spawn")
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self._on_exit: Callable[[int, int | None], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.restarts = 0
        self._started: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}

    def start(
        self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int, int | None], None]
    ) -> None:
        self._loop = loop
        self._on_exit = on_exit
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        proc = self._mp.Process(
            target=self.entry, args=(self.config_for(index),), name=f"zplex-{self.role}-{index}"
        )
        if self.stopping:
            return
        proc.daemon = True
        proc.start()
        self.procs[index] = proc
        self._started[index] = time.monotonic()
        assert self._loop is not None
        self._loop.add_reader(proc.sentinel, self._exited, index, proc)

    def _exited(self, index: int, proc: multiprocessing.process.BaseProcess) -> None:
        assert self._loop is not None
        self._loop.remove_reader(proc.sentinel)
        proc.join(0.5)  # the sentinel fires at exit; the exit code follows shortly
        code = proc.exitcode
        if self.procs.get(index) is proc:
            del self.procs[index]
        if self.stopping:
            return
        # A worker that keeps dying at start-up is respawned ever more slowly (up to
        # MAX_BACKOFF_S) instead of in a tight loop; one that ran a while comes back at once.
        lived = time.monotonic() - self._started.get(index, 0.0)
        quick = self._quick_deaths.get(index, 0) + 1 if lived < STABLE_AFTER_S else 0
        self._quick_deaths[index] = quick
        delay = min(MAX_BACKOFF_S, 0.1 * 2 ** (quick - 1)) if quick else 0.0
        log.info(
            "%s %d (pid %s) exited with %s; replacing it in %.1f s",
            self.role,
            index,
            proc.pid,
            code,
            delay,
        )
        if self._on_exit is not None:
            self._on_exit(index, code)
        self.restarts += 1
        self._loop.call_later(delay, self.spawn, index)

    def pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self.procs.items() if p.pid is not None}

    def quiesce(self) -> None:
        """From now on a worker that exits is not replaced (the front is about to tell
        them all to stop)."""
        self.stopping = True
        for proc in self.procs.values():
            if self._loop is not None:
                self._loop.remove_reader(proc.sentinel)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every running process of the pool."""
        for proc in self.procs.values():
            if proc.pid is not None and proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the pool: send the stop signal (if it has one), wait until ``timeout`` from
        now for every process to exit (one deadline for all), then terminate and finally
        kill the stragglers."""
        self.quiesce()
        if self.stop_signal is not None:
            self.signal(self.stop_signal)
        procs = list(self.procs.values())
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.procs.clear()
