"""What one measured phase (a policy on a workload) ended with, beside its
:class:`~bench.results.RunResult`: passes, requests attempted, client use, worker restarts,
memory, the other load on the host, the connections each front accepted and the client
processes, as the JSON's ``metadata.phases`` holds them, and the line the display prints."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench import results
from bench.config import POLICY_CONTEXT, BenchConfig
from bench.corpus import Corpus
from bench.cpu import Samples
from bench.passes import Tally


@dataclasses.dataclass
class PhaseOutcome:
    run: results.RunResult
    passes: int
    attempted: int
    client_utilisation: float | None
    same_workers: bool
    max_rss: dict[str, Any]
    #: CPU seconds the rest of the host used during the phase (None if not measured here).
    other_cpu_s: float | None = None
    #: Connections each front (by pid) accepted during the phase.
    front_connections: dict[int, int] = dataclasses.field(default_factory=dict)
    client_processes: int = 1

    def metadata(self) -> dict[str, Any]:
        return {
            "workload": self.run.workload,
            "policy": self.run.policy,
            "passes": self.passes,
            "requests_attempted": self.attempted,
            "client_cpu_utilisation": self.client_utilisation,
            "worker_restarts_during_phase": not self.same_workers,
            "lifetime_max_rss": self.max_rss,
            "other_processes_cpu_s": self.other_cpu_s,
            "client_processes": self.client_processes,
            "front_connections": {str(pid): n for pid, n in self.front_connections.items()},
        }

    def summary(self, label: str) -> str:
        """The phase's line on the display."""
        run = self.run
        ratio = f"{run.ratio:.2f}" if run.ratio is not None else "-"
        mbps = f"{run.raw_mb_per_s:,.1f}" if run.raw_mb_per_s is not None else "-"
        return (
            f"{label}: {self.passes} pass(es), {run.requests:,} requests in "
            f"{run.duration_s:.1f} s, {mbps} MB/s raw, ratio {ratio}, {run.error_count:,} errors"
        )


def run_result(
    config: BenchConfig,
    corpus: Corpus,
    policy: str,
    tally: Tally,
    elapsed: float,
    cpu_seconds: dict[str, float | None],
    samples: Samples,
) -> results.RunResult:
    """A phase's figures from what it counted: requests, bytes, latency, CPU per role, the
    ideal wire bytes of the bodies it answered, memory."""
    c = config
    ideal = 0
    for indexes in tally.answered.values():
        if indexes:
            ideal += corpus.ideal_wire_bytes(tuple(sorted(indexes)), c.level, c.encoding)
    used = {
        where for where in corpus.placement(policy, c.connections, c.streams)[: tally.attempted]
    }
    each_worker = sorted(samples.worker_rss.values(), reverse=True)
    return results.RunResult.from_measurements(
        workload=corpus.name,
        policy=policy,
        encoding=c.encoding,
        level=c.level if c.encoding != "identity" else None,
        streams=len(used) or 1,
        connections=len({conn for conn, _stream in used}) or 1,
        requests=tally.ok,
        duration_s=elapsed,
        raw_bytes=tally.raw,
        wire_bytes=tally.wire,
        cpu_seconds=cpu_seconds,
        latency=tally.latency,
        errors=dict(tally.errors),
        peak_rss={"front": samples.front_rss, "client": samples.client_rss},
        peak_rss_each_worker=each_worker or None,
        memory_per_stream=samples.memory_per_stream,
        ideal_wire_bytes=ideal if tally.ok else None,
        inprocess_cpu_s_per_gb=corpus.inprocess.get(POLICY_CONTEXT[policy]),
    )
