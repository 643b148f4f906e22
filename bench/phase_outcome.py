"""What one measured phase (a policy on a workload) ended with, beside its
:class:`~bench.results.RunResult`: passes, requests attempted, client use, worker restarts,
memory, the other load on the host, the connections each front accepted and the client
processes, as the JSON's ``metadata.phases`` holds them, and the line the display prints."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench import results


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
