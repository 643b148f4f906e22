"""Tests for bench.results and bench.report: derived figures, stable JSON keys, renderings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from bench.report import PLOTS, render_html, write_report
from bench.results import (
    POLICIES,
    BenchResult,
    RunResult,
    collect_metadata,
    fill_ratio_vs_request,
    project_runs,
)
from bench.stats import LatencyRecorder
from bench.tables import render_tables

RUN_KEYS = {
    "policy", "encoding", "level", "requests", "raw_bytes", "wire_bytes", "ratio",
    "ratio_vs_request", "ratio_vs_ideal", "requests_per_s", "cpu_s_per_gb", "worker_efficiency",
    "front_overhead", "latency_ms", "errors", "server_efficiency", "client_worker_ratio",
    "workload", "streams", "connections", "duration_s", "raw_mb_per_s", "wire_mb_per_s",
    "space_savings", "peak_rss", "memory_per_stream", "latency_cdf",
}  # fmt: skip
METADATA_KEYS = {
    "zplex", "python", "zstd", "python_zstandard", "pyzmq", "libzmq", "cpu_model", "cores",
    "config",
}  # fmt: skip

RATIOS = {"frame": 2.0, "request": 2.5, "stream": 5.0, "connection": 4.5}


def _run(workload: str, policy: str, raw: int = 10_000_000, **overrides: object) -> RunResult:
    latency = LatencyRecorder()
    for ms in range(1, 101):
        latency.record_s(ms / 1000 * (1 + POLICIES.index(policy)))
    kwargs: dict[str, object] = {
        "workload": workload,
        "policy": policy,
        "encoding": "zstd-8mb",
        "level": 3,
        "streams": 4,
        "connections": 4 if policy == "connection" else 1,
        "requests": 100,
        "duration_s": 0.5,
        "raw_bytes": raw,
        "wire_bytes": int(raw / RATIOS[policy]),
        "cpu_seconds": {"front": 0.004, "workers": 0.04, "client": 0.01},
        "latency": latency,
        "errors": {"overloaded": 3} if policy == "frame" else {},
        "peak_rss": {"front": 30 << 20, "client": 50 << 20},
        "peak_rss_each_worker": [80 << 20, 90 << 20],
        "memory_per_stream": 9.5 * (1 << 20),
        "ideal_wire_bytes": raw // 5,
        "inprocess_cpu_s_per_gb": 3.6,
    }
    kwargs.update(overrides)
    return RunResult.from_measurements(**kwargs)  # type: ignore[arg-type]


def _result(workloads: tuple[str, ...] = ("stdlib", "versioned")) -> BenchResult:
    runs = [_run(w, p) for w in workloads for p in POLICIES]
    fill_ratio_vs_request(runs)
    metadata = {"zplex": "0.1.0", "config": {"workers": 2, "streams": 4}}
    return BenchResult(metadata, runs, project_runs(runs))


def test_from_measurements_derives_every_figure() -> None:
    run = _run("stdlib", "stream")
    assert run.ratio == pytest.approx(5.0)
    assert run.space_savings == pytest.approx(0.8)
    assert run.ratio_vs_ideal == pytest.approx(1.0)  # wire bytes equal the ideal stream's
    assert run.requests_per_s == pytest.approx(200)
    assert run.raw_mb_per_s == pytest.approx(20.0)
    assert run.wire_mb_per_s == pytest.approx(4.0)
    assert run.cpu_s_per_gb.front == pytest.approx(0.4)
    assert run.cpu_s_per_gb.workers == pytest.approx(4.0)
    assert run.cpu_s_per_gb.client == pytest.approx(1.0)
    assert run.worker_efficiency == pytest.approx(0.9)
    assert run.front_overhead == pytest.approx(0.1)
    assert run.server_efficiency == pytest.approx(3.6 / 4.4)  # in-process / (front + workers)
    assert run.client_worker_ratio == pytest.approx(0.25)
    assert run.latency_ms["p50"] == pytest.approx(150, rel=1e-3)
    assert run.latency_cdf is not None
    assert run.latency_cdf[-1][1] == 1.0
    assert run.ideal_ratio == pytest.approx(5.0)
    assert run.peak_rss.workers == 90 << 20  # the largest worker
    assert run.peak_rss.each_worker == [80 << 20, 90 << 20]


def test_fill_ratio_vs_request() -> None:
    runs = [_run("a", p) for p in POLICIES] + [_run("b", "stream")]
    fill_ratio_vs_request(runs)
    by = {(r.workload, r.policy): r.ratio_vs_request for r in runs}
    assert by["a", "request"] == pytest.approx(1.0)
    assert by["a", "stream"] == pytest.approx(2.0)
    assert by["a", "frame"] == pytest.approx(0.8)
    assert by["b", "stream"] is None  # no request run for workload b


def test_degenerate_run_has_nulls_not_errors() -> None:
    run = _run(
        "empty",
        "stream",
        raw=0,
        wire_bytes=0,
        duration_s=0.0,
        cpu_seconds={},
        latency=None,
        ideal_wire_bytes=None,
        inprocess_cpu_s_per_gb=None,
    )
    data = run.to_json()
    for key in ("ratio", "space_savings", "ratio_vs_ideal", "requests_per_s", "front_overhead"):
        assert data[key] is None
    assert data["cpu_s_per_gb"] == {"front": None, "workers": None, "client": None}
    assert data["latency_ms"] == {"p50": None, "p90": None, "p99": None, "p999": None}
    json.dumps(data, allow_nan=False)


def test_json_has_the_stable_keys(tmp_path: Path) -> None:
    result = _result()
    result.metadata = collect_metadata({"workers": 2, "streams": 4, "level": 3})
    path = tmp_path / "bench.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {"schema", "metadata", "runs", "projection"}
    assert set(data["metadata"]) >= METADATA_KEYS
    assert data["metadata"]["config"] == {"workers": 2, "streams": 4, "level": 3}
    assert len(data["runs"]) == 8
    for run in data["runs"]:
        assert set(run) >= RUN_KEYS
        assert set(run["cpu_s_per_gb"]) == {"front", "workers", "client"}
        assert set(run["latency_ms"]) == {"p50", "p90", "p99", "p999"}
        assert set(run["peak_rss"]) >= {"front", "workers", "client"}
    assert data["runs"][0]["errors"] == {"overloaded": 3}
    projection = data["projection"][0]
    assert projection["policy"] == "stream"
    assert projection["workers_one_front_can_feed"] == pytest.approx(10.0)
    assert [row["cores"] for row in projection["rows"]] == [4, 8, 16, 32, 64]
    keys = {"cores", "fronts", "workers", "clients", "gb_per_s", "bound"}
    assert set(projection["rows"][0]) == keys
    assert set(projection["rows_with_clients"][0]) == keys
    assert projection["client_cpu_s_per_gb"] == pytest.approx(1.0)
    assert BenchResult.read_json(path).to_json() == data  # round trip


def test_json_never_holds_infinity(tmp_path: Path) -> None:
    runs = [_run("w", "stream", cpu_seconds={"front": 0.0, "workers": 0.04, "client": 0.01})]
    result = BenchResult({"x": math.inf}, runs, project_runs(runs))
    result.write_json(tmp_path / "r.json")  # allow_nan=False would raise on inf
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["projection"][0]["workers_one_front_can_feed"] is None
    assert data["metadata"]["x"] is None


def test_collect_metadata() -> None:
    meta = collect_metadata({"policy": "stream"})
    assert set(meta) >= METADATA_KEYS
    assert meta["zstd"].count(".") == 2
    assert isinstance(meta["cores"], int)
    assert meta["cpu_model"]
    json.dumps(meta, allow_nan=False)


def test_render_tables_wide() -> None:
    console = Console(record=True, width=200, color_system=None)
    render_tables(_result(("stdlib", "versioned", "dir:/tmp/[/odd]")), console)
    text = console.export_text()
    assert "workload dir:/tmp/[/odd]" in text  # a path is never read as rich markup
    assert "workload stdlib" in text
    assert "workload versioned" in text
    for word in ("policy", "req/s", "ideal", "ovh.", "p99", "errors"):
        assert word in text
    for word in ("savings", "p99.9", "wire\nMB/s"):  # in the JSON and the report only
        assert word not in text
    for policy in POLICIES:
        assert policy in text
    assert "2.00x" in text  # stream vs request
    assert "stream: 2.00\u00d7 the ratio of request (\u221250% wire bytes)" in text  # headline
    assert "overloaded 3" in text
    assert "scaling projection" in text
    assert "one front can feed 10.0 workers" in text


def test_a_run_too_short_to_project_says_so_in_one_line(tmp_path: Path) -> None:
    no_cpu = {"front": None, "workers": None, "client": None}  # as a phase too short leaves it
    runs = [_run(w, p, cpu_seconds=no_cpu) for w in ("stdlib", "versioned") for p in POLICIES]
    result = BenchResult({}, runs, project_runs(runs))
    line = (
        "scaling projection: the run was too short to project (no CPU figures in its stream "
        "phase); measure each policy for 5 s or more (-d 5)"
    )
    console = Console(record=True, width=200, color_system=None)
    render_tables(result, console)
    text = console.export_text()
    assert line in text
    assert "fronts+workers" not in text and "one front can feed" not in text  # no dashes
    page = render_html(result)
    assert f"<p>{line}</p>" in page
    assert page.count("<table>") == 2  # the two workloads, no projection of dashes
    # One workload measured, one not: the table of the one, the line names the other.
    runs[4:] = [_run("versioned", p) for p in POLICIES]
    console = Console(record=True, width=200, color_system=None)
    render_tables(BenchResult({}, runs, project_runs(runs)), console)
    text = console.export_text()
    assert "scaling projection (the cores split" in text  # versioned's table
    assert "scaling projection of stdlib: the run was too short to project" in text
    assert "versioned (stream): one front can feed 10.0 workers" in text
    assert "stdlib (stream): one front" not in text


def test_render_tables_narrow_terminal_splits_columns() -> None:
    console = Console(record=True, width=80, color_system=None)
    render_tables(_result(), console)
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing truncated
    for word in ("req/s", "workers", "ovh.", "p99", "errors"):
        assert word in text


def test_write_report(tmp_path: Path) -> None:
    result = _result(("stdlib", "<b>dir:/tmp/x&y</b>"))
    written = write_report(result, tmp_path / "report")
    names = {p.name for p in written}
    assert names == {*PLOTS, "index.html"}
    for name in PLOTS:
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5_000
    page = (tmp_path / "report" / "index.html").read_text()
    for name in PLOTS:
        assert f'<img src="{name}"' in page
    assert "&lt;b&gt;dir:/tmp/x&amp;y&lt;/b&gt;" in page
    assert "<b>dir" not in page
    assert page.count("<table>") == 3  # two workloads and the projection
    # The projection is said as the terminal says it: fronts and workers split for the most
    # GB/s (never "one front on one core", which the table contradicts).
    assert "<p>The cores split between fronts and workers, and clients on the same host" in page
    assert "One front on one core" not in page
    assert "80.0%" in page


def test_report_without_data(tmp_path: Path) -> None:
    empty = BenchResult({}, [], [])
    write_report(empty, tmp_path)
    assert all((tmp_path / name).stat().st_size > 0 for name in PLOTS)
    assert "<h1>" in render_html(empty)
    console = Console(record=True, width=100)
    render_tables(empty, console)
