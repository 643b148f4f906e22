"""``zplex bench compare A.json B.json [...]``: the same figures of several runs side by side,
per workload and policy, with each change against the first file and whether it is beyond
the run-to-run noise.

Noise comes from ``--repeat N`` runs (their ``repeats``: median and standard deviation per
figure): a change is *beyond noise* when it exceeds twice the combined standard deviation of
the two runs (and *within noise* otherwise). A run measured once has no noise figure: its
changes are marked ``?`` (measure with ``--repeat 3`` or more to know).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.results import BenchResult, RunResult
from bench.tables import runs_by_workload
from bench.thresholds import figure_of

#: The figures compared: (dotted path in a run's JSON, label, format, higher is better).
COMPARED = (
    ("requests_per_s", "req/s", ",.0f", True),
    ("raw_mb_per_s", "raw MB/s", ",.1f", True),
    ("ratio", "ratio", ".2f", True),
    ("cpu_s_per_gb.front", "front CPU/GB", ".2f", False),
    ("cpu_s_per_gb.workers", "workers CPU/GB", ".2f", False),
    ("latency_ms.p50", "p50 ms", ",.2f", False),
    ("latency_ms.p99", "p99 ms", ",.2f", False),
)
#: A change beyond this many combined standard deviations is beyond the noise.
NOISE_SIGMAS = 2.0


class CompareError(Exception):
    """A file that cannot be compared (missing, not a bench JSON)."""


@dataclass(frozen=True)
class Measure:
    """One figure of one run: its value (the median with ``--repeat``) and spread (None: the
    run was measured once)."""

    value: float | None
    spread: float | None


def measure(run: RunResult, figure: str) -> Measure:
    repeats = (run.repeats or {}).get(figure)
    if repeats:
        return Measure(repeats.get("median"), repeats.get("spread"))
    return Measure(figure_of(run, figure), None)


def verdict(old: Measure, new: Measure) -> str:
    """``beyond noise``, ``within noise`` or ``?`` (no noise figure on one side)."""
    if old.value is None or new.value is None:
        return ""
    if old.spread is None or new.spread is None:
        return "?"
    noise = NOISE_SIGMAS * math.hypot(old.spread, new.spread)
    return "beyond noise" if abs(new.value - old.value) > noise else "within noise"


def load(path: Path) -> BenchResult:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CompareError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CompareError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or "runs" not in data:
        raise CompareError(f"{path} is not the JSON of zplex bench --json")
    try:
        return BenchResult.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CompareError(f"{path}: unexpected content ({exc})") from None


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    if old == 0:
        return "=" if new == 0 else "new"
    return f"{(new / old - 1) * 100:+.1f}%"


def comparison_rows(
    results: Sequence[BenchResult],
) -> dict[str, list[list[str]]]:
    """Per workload of the first result, the rows ``[policy, figure, value A, value B,
    change B, verdict B, ...]`` for every policy every result ran."""
    out: dict[str, list[list[str]]] = {}
    indexed = [{(run.workload, run.policy): run for run in result.runs} for result in results]
    for workload, runs in runs_by_workload(results[0]).items():
        rows: list[list[str]] = []
        for first in runs:
            others = [index.get((workload, first.policy)) for index in indexed[1:]]
            if any(other is None for other in others):
                continue
            for figure, label, spec, _better in COMPARED:
                base = measure(first, figure)
                row = [first.policy, label, _fmt(base, spec)]
                for other in others:
                    assert other is not None
                    new = measure(other, figure)
                    row += [_fmt(new, spec), _change(base.value, new.value), verdict(base, new)]
                rows.append(row)
        out[workload] = rows
    return out


def _phases(result: BenchResult) -> str:
    """The workload / policy pairs of a run, or ``no runs``."""
    return ", ".join(f"{run.workload} / {run.policy}" for run in result.runs) or "no runs"


def _fmt(m: Measure, spec: str) -> str:
    if m.value is None:
        return "-"
    text = f"{m.value:{spec}}"
    if m.spread:
        text += f" \u00b1 {m.spread:{spec}}"
    return text


def compare_files(paths: Sequence[Path], console: Console, err: IO[str] | None = None) -> int:
    """Print the comparison of ``paths`` (at least two), the workloads that some file lacks
    left out; exit status 0, or 2 if a file cannot be read or the files have no workload and
    policy in common (said on ``err``, standard error by default)."""
    try:
        results = [load(path) for path in paths]
    except CompareError as exc:
        print(f"zplex bench compare: {exc}", file=err or sys.stderr)
        return 2
    names = [path.name for path in paths]
    compared = {w: rows for w, rows in comparison_rows(results).items() if rows}
    if not compared:
        held = "; ".join(
            f"{path}: {_phases(result)}" for path, result in zip(paths, results, strict=True)
        )
        print(
            f"zplex bench compare: no workload and policy is in every file ({held})",
            file=err or sys.stderr,
        )
        return 2
    for workload, rows in compared.items():
        table = Table(
            title=Text(f"workload {workload}", style="bold"),
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("policy")
        table.add_column("figure")
        table.add_column(Text(names[0]), justify="right")
        for name in names[1:]:
            table.add_column(Text(name), justify="right")
            table.add_column("change", justify="right")
            table.add_column("noise")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    console.print(
        Text(
            "value \u00b1 spread: median and standard deviation of --repeat runs; noise: "
            f"a change beyond {NOISE_SIGMAS:g} combined standard deviations is beyond noise, "
            "? where a run was measured once (use --repeat 3 or more)",
            style="dim",
        )
    )
    return 0
