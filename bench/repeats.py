"""``--repeat N``: the same phase measured N times, reported as its median run with the spread
of its figures (as hyperfine and pyperf report), the noise ``zplex bench compare`` weighs a
change against."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.results import RunResult
from bench.thresholds import figure_of

#: The figures whose spread over repeats is recorded (dotted paths into a run's JSON).
NOISE_FIGURES = (
    "requests_per_s",
    "raw_mb_per_s",
    "ratio",
    "ratio_vs_ideal",
    "cpu_s_per_gb.front",
    "cpu_s_per_gb.workers",
    "cpu_s_per_gb.client",
    "front_overhead",
    "latency_ms.p50",
    "latency_ms.p99",
)


def median_index(runs: Sequence[RunResult]) -> int:
    """The index of the run with the median request rate (the lower median for an even N)."""
    order = sorted(range(len(runs)), key=lambda i: runs[i].requests_per_s or 0.0)
    return order[(len(order) - 1) // 2]


def spread_of(runs: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """Per figure of :data:`NOISE_FIGURES` measured in every run: ``{n, median, min, max,
    spread}`` (``spread``: the standard deviation, 0 for one run)."""
    out: dict[str, dict[str, float]] = {}
    for figure in NOISE_FIGURES:
        values = [figure_of(run, figure) for run in runs]
        known = [v for v in values if v is not None]
        if len(known) != len(values) or not known:
            continue
        out[figure] = {
            "n": float(len(known)),
            "median": statistics.median(known),
            "min": min(known),
            "max": max(known),
            "spread": statistics.stdev(known) if len(known) > 1 else 0.0,
        }
    return out
