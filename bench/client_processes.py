"""``zplex bench --clients N``: a phase's load from N client processes, as ``h2load -t`` and
``wrk -t`` spread theirs over threads.

Each process (:mod:`bench.load_process`, started as ``python -m bench.load_process``) has its
own event loop and the connections ``k, k + N, k + 2N, ...`` of every pass, so together they
send the same requests in the same per-stream order as one client. They warm up on their own,
then measure together when the runner says ``go`` (after its CPU snapshot). What they report is
merged exactly: counts and bytes added, errors added by code, the HDR latency histograms added
bucket by bucket (:func:`add_report`), never percentiles averaged. The client role's CPU is the
sum of the processes' own CPU while measuring; its peak RSS the sum of their peaks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from bench import stats
from bench.config import BenchConfig, BenchFailure
from bench.corpus import Corpus
from bench.load_process import LoadJob
from bench.passes import Tally
from bench.server_process import Endpoint

#: Seconds a client process may take to start and warm up beyond ``--warmup`` and
#: ``--timeout``.
START_GRACE_S = 30.0
#: Seconds to wait for a stopped client process before killing it.
STOP_DEADLINE_S = 5.0


def shares(connections: int, processes: int) -> list[frozenset[int]]:
    """The connection indexes of each client process: ``k, k + N, ...`` for process ``k``."""
    return [frozenset(range(k, connections, processes)) for k in range(processes)]


def add_report(tally: Tally, report: dict[str, Any]) -> None:
    """Add one client process's report (:func:`bench.load_process.tally_report`) to
    ``tally``: counts, bytes and errors summed, the answered requests of each pass joined,
    the latency histogram added to ``tally``'s."""
    tally.ok += int(report["ok"])
    tally.raw += int(report["raw"])
    tally.wire += int(report["wire"])
    for code, count in report["errors"].items():
        tally.error(code, int(count))
    tally.chaos.update({name: int(n) for name, n in report.get("chaos", {}).items()})
    for number, indexes in report["answered"].items():
        tally.answered.setdefault(int(number), []).extend(indexes)
    if report.get("latency"):
        part = stats.LatencyRecorder.decode(report["latency"])
        part.clamped = int(report.get("clamped", 0))
        tally.latency.merge(part)


class ClientProcesses:
    """The client processes of one phase; :meth:`close` always ends them."""

    def __init__(
        self, config: BenchConfig, limits: dict[str, Any], endpoint: Endpoint, count: int
    ) -> None:
        self.config = config
        self.limits = limits
        self.endpoint = endpoint
        self.count = count
        self.procs: list[asyncio.subprocess.Process] = []
        self.logs: list[IO[bytes]] = []
        #: Sums over the processes once measured: CPU seconds, peak RSS bytes.
        self.cpu_s = 0.0
        self.max_rss = 0

    async def start(self, corpus: Corpus, policy: str) -> collections.Counter[str]:
        """Start the processes and wait until each has warmed up; returns the warm-up's
        errors by code."""
        for share in shares(self.config.connections, self.count):
            job = LoadJob(
                self.config,
                self.limits,
                self.endpoint.host,
                self.endpoint.port,
                corpus.name,
                corpus.requests,
                policy,
                share,
            )
            data = pickle.dumps(job)
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
            self.logs.append(log)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.load_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=1 << 26,
            )
            self.procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(b"%d\n" % len(data) + data)
            await proc.stdin.drain()
        errors: collections.Counter[str] = collections.Counter()
        deadline = self.config.warmup_s + self.config.timeout_s + START_GRACE_S
        for k in range(self.count):
            event = await self._next_event(k, deadline)
            if event["event"] != "warm":
                raise self._failure(k, f"unexpected {event['event']!r}")
            errors.update({code: int(n) for code, n in event["errors"].items()})
        return errors

    async def run(self, tally: Tally, on_pass: Callable[[int], None]) -> int:
        """Measure: tell every process to go, keep ``tally`` current with their progress, and
        once all are done make it the exact merge of their reports; returns the passes (the
        most any process started)."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        progress: list[dict[str, Any]] = [{} for _ in self.procs]
        reports: list[dict[str, Any] | None] = [None] * self.count

        def show() -> None:
            tally.ok = sum(int(p.get("ok", 0)) for p in progress)
            tally.raw = sum(int(p.get("raw", 0)) for p in progress)
            tally.errors = collections.Counter()
            for p in progress:
                tally.errors.update(p.get("errors", {}))
            on_pass(max(int(p.get("passes", 0)) for p in progress))

        async def follow(k: int) -> None:
            while True:
                event = await self._next_event(k, self.config.timeout_s + START_GRACE_S)
                progress[k] = event
                if event["event"] == "done":
                    reports[k] = event
                    return
                show()

        await asyncio.gather(*(follow(k) for k in range(self.count)))
        merged = Tally()
        for report in reports:
            assert report is not None
            add_report(merged, report)
            self.cpu_s += float(report["cpu_s"])
            self.max_rss += int(report["max_rss"])
        tally.ok, tally.raw, tally.wire = merged.ok, merged.raw, merged.wire
        tally.errors, tally.answered, tally.latency = merged.errors, merged.answered, merged.latency
        tally.chaos = merged.chaos
        passes = max(int(report["passes"]) for report in reports if report is not None)
        on_pass(passes)
        return passes

    async def _next_event(self, k: int, timeout: float) -> dict[str, Any]:
        stdout = self.procs[k].stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise self._failure(k, f"silent for {timeout:.0f} s") from None
        if not line:
            await self.procs[k].wait()
            raise self._failure(k, f"exited with status {self.procs[k].returncode}")
        event: dict[str, Any] = json.loads(line)
        return event

    def _failure(self, k: int, what: str) -> BenchFailure:
        log = self.logs[k]
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
        return BenchFailure(f"client process {k + 1} of {self.count} {what}: {' | '.join(tail)}")

    async def close(self) -> None:
        """End every process (those still running are terminated, then killed)."""
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.close()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + STOP_DEADLINE_S
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs = []
        for log in self.logs:
            log.close()
        self.logs = []
