"""One client process of ``zplex bench --clients N``: ``python -m bench.load_process``.

It replays its share of a phase (the connections :class:`LoadJob` names, every pass, in the
same per-stream order as a single client would) on its own event loop, with the same
:class:`bench.passes.PassDriver`, verification and latency recording. The parent
(:mod:`bench.client_processes`) talks to it over its standard streams:

- stdin: one line with the byte length of a pickled :class:`LoadJob`, the pickle, then (after
  the warm-up) a line ``go``, which starts the measured passes;
- stdout: JSON lines: ``{"event": "warm", "errors": {...}}`` once warmed up; ``{"event":
  "progress", ...}`` every :data:`PROGRESS_PERIOD_S` while measuring; then ``{"event": "done",
  ...}`` with the share's :class:`~bench.passes.Tally` (the latency histogram in HDR's encoded
  form, so the parent adds histograms, not percentiles), its CPU seconds and peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pickle
import resource
import sys
import time
from typing import IO, Any

from bench.chaos_driver import make_driver
from bench.client import AsyncClient
from bench.config import BenchConfig
from bench.corpus import Corpus, Request
from bench.passes import Tally
from bench.workload_items import Workload

#: Seconds between progress lines while measuring.
PROGRESS_PERIOD_S = 0.2


@dataclasses.dataclass(frozen=True)
class LoadJob:
    """What a client process replays: the phase's requests and placement, and its share."""

    config: BenchConfig
    limits: dict[str, Any]
    host: str
    port: int
    workload: str
    requests: list[Request]
    policy: str
    connections: frozenset[int]


def tally_report(tally: Tally) -> dict[str, Any]:
    """The JSON form of a share's :class:`Tally` (see :func:`bench.client_processes.add_report`)."""
    return {
        "ok": tally.ok,
        "raw": tally.raw,
        "wire": tally.wire,
        "errors": dict(tally.errors),
        "answered": {str(k): v for k, v in tally.answered.items()},
        "latency": tally.latency.encode() if tally.latency.count else None,
        "clamped": tally.latency.clamped,
        "chaos": dict(tally.chaos),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(out: IO[str], event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


async def run_job(job: LoadJob, go: IO[bytes], out: IO[str]) -> None:
    c = job.config
    corpus = Corpus(job.workload, Workload(job.workload, []), job.requests, [])

    async def connect(*, context: str) -> AsyncClient:
        plain = c.encoding == "identity"
        return await AsyncClient.connect(
            job.host,
            job.port,
            encodings=(c.encoding,),
            level=None if plain else c.level,
            context=context,
            timeout=c.timeout_s,
        )

    driver = make_driver(c, job.limits, connect, job.connections)
    loop = asyncio.get_running_loop()
    warm = Tally()
    if c.warmup_s > 0:
        await driver.run_passes(
            corpus,
            job.policy,
            warm,
            duration=None,
            stop_at=time.monotonic() + c.warmup_s,
            on_pass=lambda _n: None,
        )
    _emit(out, "warm", errors=dict(warm.errors))
    line = await loop.run_in_executor(None, go.readline)
    if line.strip() != b"go":
        return
    tally = Tally()
    passes = 0

    def on_pass(n: int) -> None:
        nonlocal passes
        passes = n

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_PERIOD_S)
            errors = dict(tally.errors)
            _emit(out, "progress", ok=tally.ok, raw=tally.raw, errors=errors, passes=passes)

    cpu_before = _cpu_s()
    reporter = asyncio.create_task(progress())
    try:
        await driver.run_passes(
            corpus,
            job.policy,
            tally,
            duration=c.effective_duration_s,
            stop_at=None,
            on_pass=on_pass,
        )
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    cpu = _cpu_s() - cpu_before
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _emit(out, "done", passes=passes, cpu_s=cpu, max_rss=max_rss, **tally_report(tally))


def main() -> int:
    stdin = sys.stdin.buffer
    size = int(stdin.readline())
    job = pickle.loads(stdin.read(size))
    # Run as ``-m``, this module is ``__main__``; the job's class is bench.load_process's.
    if type(job).__name__ != LoadJob.__name__:
        raise TypeError("expected a LoadJob")
    asyncio.run(run_job(job, stdin, sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
