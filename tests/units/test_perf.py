"""Tests for bench.perf: the targets of ``make perf`` from the runs' JSON documents."""

from __future__ import annotations

from typing import Any

import pytest

from bench import perf


def _doc(runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"runs": runs, "projection": [], "metadata": {"phases": []}, **extra}


def _run(workload: str, **figures: Any) -> dict[str, Any]:
    base = {"workload": workload, "errors": {}, "requests": 100, "streams": 61}
    base.update(figures)
    return base


def test_targets_against_their_goals() -> None:
    main = _doc(
        [
            _run(
                "stdlib",
                server_efficiency=0.8,
                worker_efficiency=0.5,
                front_overhead=0.1,
                client_worker_ratio=0.4,
            ),
            _run("versioned", server_efficiency=None),
        ],
        projection=[{"workload": "stdlib", "rows": [{"cores": 8, "gb_per_s": 0.5},
                                                     {"cores": 64, "gb_per_s": 3.5}]}],
    )  # fmt: skip
    one = _doc([_run("versioned", cpu_s_per_gb={"workers": 6.0})])
    many = _doc([_run("versioned", cpu_s_per_gb={"workers": 12.0})])
    phases = [{"front_connections": {"11": 3, "12": 0}}]
    scaled = _doc([_run("stdlib")], metadata={"phases": phases})
    rows = {row.figure: row for row in perf.targets(main, one, many, scaled)}
    assert rows["server efficiency, stdlib"].met is True
    assert rows["server efficiency, versioned"].met is None  # not measured: no verdict
    assert rows["worker_efficiency, stdlib"].met is False
    assert rows["front_overhead, stdlib"].met is True
    assert rows["client CPU/GB / workers CPU/GB, stdlib"].met is False
    hot = rows["64 hot streams vs 1 on one worker (throughput)"]
    assert hot.value == pytest.approx(0.5) and hot.met is False
    scale = rows["projected GB/s at 64 cores / at 8, stdlib"]
    assert scale.value == pytest.approx(7.0) and scale.met is True
    assert rows["--fronts 2 --clients 2"].met is False  # one front got no connection
    text = perf.render(list(rows.values()))
    assert "not met" in text and "3 of 8 targets met" in text
