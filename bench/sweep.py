"""``--sweep-workers``: the ``stream`` policy measured for real with each worker count the host
has cores for (``workers + 1 <= cores``), a fresh server each, and its table beside the scaling
projection of the main run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from bench import results, stats
from bench.config import BenchConfig, default_workers
from bench.runner import Runner


@dataclasses.dataclass
class SweepPoint:
    """The runs of one worker count."""

    workers: int
    runs: list[results.RunResult]

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "runs": [run.to_json() for run in self.runs]}


async def run_sweep(config: BenchConfig, runner: Runner) -> tuple[list[SweepPoint], list[int]]:
    """``--sweep-workers``: the ``stream`` policy with each worker count the host can hold."""
    if not config.sweep_workers:
        return [], []
    cores = default_workers()
    points: list[SweepPoint] = []
    skipped: list[int] = []
    for workers in config.sweep_workers:
        if workers + 1 > cores:
            skipped.append(workers)
            continue
        endpoint = runner.start_server(workers)
        await runner.attach(endpoint, spawned=True)
        point = SweepPoint(workers, [])
        for name in config.workloads:
            corpus = runner.corpora[name]
            await runner.fill(corpus)
            outcome = await runner.run_phase(
                corpus, "stream", record=False, note=f" ({workers} workers)"
            )
            point.runs.append(outcome.run)
        points.append(point)
        await runner.close()
        runner.servers[-1].stop()
    return points, skipped


def sweep_table(points: Sequence[SweepPoint], projections: Sequence[results.Projection]) -> Table:
    table = Table(
        title=Text("worker sweep (stream policy, measured)", style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in ("workload", "workers", "raw MB/s", "req/s", "front s/GB", "workers s/GB"):
        table.add_column(header, justify="left" if header == "workload" else "right")
    table.add_column("projected MB/s", justify="right")
    base = {p.workload: p for p in projections}
    for point in points:
        for run in point.runs:
            projection = base.get(run.workload)
            projected = None
            if projection is not None:
                rows = stats.scaling_projection(
                    projection.front_cpu_s_per_gb,
                    projection.workers_cpu_s_per_gb,
                    [point.workers + 1],
                )
                gbps = rows[0]["gb_per_s"]
                projected = gbps * 1000 if gbps is not None else None
            table.add_row(
                run.workload,
                str(point.workers),
                _num(run.raw_mb_per_s, ",.1f"),
                _num(run.requests_per_s, ",.0f"),
                _num(run.cpu_s_per_gb.front, ".2f"),
                _num(run.cpu_s_per_gb.workers, ".2f"),
                _num(projected, ",.1f"),
            )
    return table


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def skipped_note(skipped: Sequence[int]) -> Text:
    """The line under the table: the worker counts this host has too few cores for."""
    return Text(
        f"sweep: skipped {', '.join(map(str, skipped))} workers "
        f"(needs workers + 1 cores; this host has {default_workers()})",
        style="dim",
    )
