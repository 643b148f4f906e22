"""``--sweep-workers`` and ``--sweep-fronts``: the ``stream`` policy measured for real with each
worker count and each front count (every pair when both are given) that the host has cores for
(``fronts + workers <= cores``), a fresh server each, and its table beside the scaling
projection of the main run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from bench import results
from bench.config import BenchConfig, default_workers
from bench.runner import Runner


@dataclasses.dataclass
class SweepPoint:
    """The runs of one worker count."""

    workers: int
    runs: list[results.RunResult]
    fronts: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "fronts": self.fronts,
            "runs": [run.to_json() for run in self.runs],
        }


def sweep_pairs(config: BenchConfig) -> list[tuple[int, int]]:
    """The (workers, fronts) of the sweep: every pair of ``--sweep-workers`` (else
    ``--workers`` or the default) and ``--sweep-fronts`` (else ``--fronts`` or 1)."""
    if not config.sweep_workers and not config.sweep_fronts:
        return []
    workers = config.sweep_workers or (config.workers or default_workers(),)
    fronts = config.sweep_fronts or (config.fronts or 1,)
    return [(w, f) for w in workers for f in fronts]


async def run_sweep(
    config: BenchConfig, runner: Runner
) -> tuple[list[SweepPoint], list[tuple[int, int]]]:
    """The ``stream`` policy with each (workers, fronts) of :func:`sweep_pairs` that the host
    can hold; returns the points and the pairs skipped."""
    cores = default_workers()
    points: list[SweepPoint] = []
    skipped: list[tuple[int, int]] = []
    for workers, fronts in sweep_pairs(config):
        if workers + fronts > cores:
            skipped.append((workers, fronts))
            continue
        endpoint = runner.start_server(workers, fronts)
        await runner.attach(endpoint, spawned=True)
        point = SweepPoint(workers, [], fronts)
        for name in config.workloads:
            corpus = runner.corpora[name]
            await runner.fill(corpus)
            outcome = await runner.run_phase(
                corpus, "stream", record=False, note=f" ({workers} workers, {fronts} fronts)"
            )
            point.runs.append(outcome.run)
        points.append(point)
        await runner.close()
        runner.servers[-1].stop()
    return points, skipped


def sweep_table(points: Sequence[SweepPoint], projections: Sequence[results.Projection]) -> Table:
    table = Table(
        title=Text("worker and front sweep (stream policy, measured)", style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in (
        "workload",
        "workers",
        "fronts",
        "raw MB/s",
        "req/s",
        "front s/GB",
        "workers s/GB",
    ):
        table.add_column(header, justify="left" if header == "workload" else "right")
    table.add_column("projected MB/s", justify="right")
    base = {p.workload: p for p in projections}
    for point in points:
        for run in point.runs:
            projection = base.get(run.workload)
            projected = None
            if projection is not None:
                gbps = _carries(
                    point.fronts,
                    point.workers,
                    projection.front_cpu_s_per_gb,
                    projection.workers_cpu_s_per_gb,
                )
                projected = gbps * 1000 if gbps is not None else None
            table.add_row(
                run.workload,
                str(point.workers),
                str(point.fronts),
                _num(run.raw_mb_per_s, ",.1f"),
                _num(run.requests_per_s, ",.0f"),
                _num(run.cpu_s_per_gb.front, ".2f"),
                _num(run.cpu_s_per_gb.workers, ".2f"),
                _num(projected, ",.1f"),
            )
    return table


def _carries(
    fronts: int, workers: int, front_cost: float | None, workers_cost: float | None
) -> float | None:
    """GB/s that ``fronts`` and ``workers`` carry at the main run's costs (None if unknown)."""
    if front_cost is None or workers_cost is None:
        return None
    caps = [n / cost for n, cost in ((fronts, front_cost), (workers, workers_cost)) if cost > 0]
    return min(caps) if caps else None


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def skipped_note(skipped: Sequence[tuple[int, int]]) -> Text:
    """The line under the table: the (workers, fronts) this host has too few cores for."""
    pairs = ", ".join(f"{w} workers + {f} fronts" for w, f in skipped)
    return Text(
        f"sweep: skipped {pairs} (needs workers + fronts cores; this host has {default_workers()})",
        style="dim",
    )
