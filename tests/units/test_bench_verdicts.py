"""What the bench concludes from its figures, without processes: thresholds and the exit
status, --repeat's median and spread, compare, the headline, the phase warnings, the corpus
sample, --json - and the report's warnings."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench import chaos, compare, phase_checks, repeats, tables, thresholds
from bench.config import BenchConfig, BenchError, check_output_paths
from bench.corpus_selection import spread_sample
from bench.main import BenchOutcome, run_bench
from bench.report import render_html
from bench.results import BenchResult, RunResult, fill_ratio_vs_request, project_runs
from bench.runner import Runner
from bench.tables import headline


def run(policy: str, *, rps: float = 100.0, wire: int = 250, workload: str = "w") -> RunResult:
    result = RunResult.from_measurements(
        workload=workload,
        policy=policy,
        encoding="zstd-8mb",
        level=3,
        streams=1,
        connections=1,
        requests=int(rps),
        duration_s=1.0,
        raw_bytes=1000,
        wire_bytes=wire,
        cpu_seconds={"front": 0.001, "workers": 0.004, "client": 0.002},
    )
    result.latency_ms = {"p50": 2.0, "p90": 3.0, "p99": 40.0, "p999": 50.0}
    return result


def two_policies() -> list[RunResult]:
    runs = [run("request", rps=100, wire=500), run("stream", rps=90, wire=250)]
    fill_ratio_vs_request(runs)
    return runs


# --- thresholds ------------------------------------------------------------------------------


def test_threshold_parsing() -> None:
    t = thresholds.parse_threshold("stream.latency_ms.p99 < 50")
    assert (t.policy, t.figure, t.op, t.value) == ("stream", "latency_ms.p99", "<", 50.0)
    for bad in ("stream.ratio", "ratio>2", "stream.ratio>>2", "fast.ratio>2", "stream.ratio>x"):
        with pytest.raises(thresholds.ThresholdError):
            thresholds.parse_threshold(bad)


def test_a_misspelt_figure_is_refused_with_the_figure_names() -> None:
    with pytest.raises(thresholds.ThresholdError) as info:
        thresholds.parse_threshold("stream.ratoi_vs_request>=2")
    message = str(info.value)
    assert "'stream.ratoi_vs_request>=2'" in message and "unknown figure" in message
    assert "did you mean ratio_vs_request?" in message
    assert "cpu_s_per_gb.workers" in message and "latency_ms.p99" in message


def test_the_figure_names_are_the_numbers_of_a_runs_json() -> None:
    """Every name resolves to a number of a measured run's JSON, and every number of it has
    a name (chaos counters included): the list cannot drift from the JSON."""
    measured = run("stream")
    for part in (measured, measured.peak_rss):  # every figure measured, none null
        for f in dataclasses.fields(part):
            skip = ("latency_cdf", "each_worker", "repeats")  # plot points, lists, --repeat
            if getattr(part, f.name) is None and f.name not in skip:
                setattr(part, f.name, 1)
    measured.chaos = chaos.chaos_figures(3, {"answered": 5})

    def numbers(node: Any, prefix: str = "") -> set[str]:
        if isinstance(node, dict):
            return {n for key, value in node.items() for n in numbers(value, f"{prefix}{key}.")}
        is_number = isinstance(node, int | float) and not isinstance(node, bool)
        return {prefix[:-1]} if is_number else set()

    data = measured.to_json()
    assert numbers(data) | {"error_count"} == set(thresholds.FIGURES)
    assert all(thresholds.figure_of(measured, name) is not None for name in thresholds.FIGURES)


def test_thresholds_checked_against_every_workload() -> None:
    runs = [*two_policies(), run("stream", workload="v", wire=900)]
    fill_ratio_vs_request(runs)
    checks = thresholds.check_thresholds(
        [
            thresholds.parse_threshold("stream.ratio_vs_request>=2"),
            thresholds.parse_threshold("stream.latency_ms.p99<50"),
            thresholds.parse_threshold("stream.error_count==0"),
            thresholds.parse_threshold("stream.cpu_s_per_gb.front<1"),
            thresholds.parse_threshold("frame.ratio>1"),
        ],
        runs,
    )
    verdicts = [(c.threshold.expression, c.workload, c.met) for c in checks]
    assert verdicts == [
        ("stream.ratio_vs_request>=2", "w", True),
        ("stream.ratio_vs_request>=2", "v", False),  # v has no request run: not measured
        ("stream.latency_ms.p99<50", "w", True),
        ("stream.latency_ms.p99<50", "v", True),
        ("stream.error_count==0", "w", True),
        ("stream.error_count==0", "v", True),
        ("stream.cpu_s_per_gb.front<1", "w", False),
        ("stream.cpu_s_per_gb.front<1", "v", False),
        ("frame.ratio>1", None, False),  # no frame run finished (an interrupted run)
    ]
    assert checks[1].describe() == "stream.ratio_vs_request>=2 on v: not measured"
    assert checks[6].describe() == "stream.cpu_s_per_gb.front<1 on w: 1000 -> NOT MET"
    assert checks[8].describe() == "frame.ratio>1: not measured (no frame run finished)"


def fake_bench(runs: list[RunResult], warnings: list[str] | None = None) -> Any:
    async def _bench(config: BenchConfig, runner: Runner) -> BenchOutcome:
        return BenchOutcome(BenchResult({}, runs, project_runs(runs)), [], [], warnings or [])

    return _bench


def test_a_threshold_not_met_makes_the_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("bench.main._bench", fake_bench(two_policies()))
    met = BenchConfig(thresholds=("stream.ratio_vs_request>=2",), json_path=tmp_path / "a.json")
    assert run_bench(met, sys.stdout, sys.stderr) == 0
    assert "threshold stream.ratio_vs_request>=2 on w: 2 -> met" in capsys.readouterr().err
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["thresholds"] == [
        {"expression": "stream.ratio_vs_request>=2", "workload": "w", "actual": 2.0, "met": True}
    ]
    not_met = BenchConfig(thresholds=("stream.ratio_vs_request>=2", "stream.requests_per_s>95"))
    assert run_bench(not_met, sys.stdout, sys.stderr) == 1
    assert "stream.requests_per_s>95 on w: 90 -> NOT MET" in capsys.readouterr().err


def test_a_figure_not_measured_says_so_and_makes_the_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = two_policies()
    runs[1].cpu_s_per_gb.front = None  # a phase too short for CPU figures
    monkeypatch.setattr("bench.main._bench", fake_bench(runs))
    config = BenchConfig(thresholds=("stream.cpu_s_per_gb.front<5",))
    assert run_bench(config, sys.stdout, sys.stderr) == 1
    err = capsys.readouterr().err
    assert "threshold stream.cpu_s_per_gb.front<5 on w: not measured\n" in err
    assert "NOT MET" not in err


def test_json_to_stdout_puts_the_tables_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.main._bench", fake_bench(two_policies(), ["careful"]))
    out, err = io.StringIO(), io.StringIO()
    assert run_bench(BenchConfig(json_path=Path("-")), out, err) == 0
    data = json.loads(out.getvalue())
    assert data["warnings"] == ["careful"] and len(data["runs"]) == 2
    assert "workload w" in err.getvalue() and "warning: careful" in err.getvalue()


def test_output_paths_checked_before_the_run(tmp_path: Path) -> None:
    check_output_paths(tmp_path / "a.json", tmp_path / "new" / "report")
    check_output_paths(Path("-"), None)
    with pytest.raises(BenchError, match="no such directory"):
        check_output_paths(tmp_path / "missing" / "a.json", None)
    with pytest.raises(BenchError, match="is a directory"):
        check_output_paths(tmp_path, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BenchError, match="not a directory"):
        check_output_paths(None, tmp_path / "file")
    with pytest.raises(BenchError, match="cannot create"):
        check_output_paths(None, tmp_path / "file" / "report")
    # Paths whose directory allows writing but which cannot be made (root included): tried
    # for real, and nothing the tries made is left behind.
    too_long = "x" * 300
    with pytest.raises(BenchError, match=f"--json .*{too_long}.json: not writable"):
        check_output_paths(tmp_path / f"{too_long}.json", None)
    with pytest.raises(BenchError, match=f"--report .*{too_long}: cannot create or write in it"):
        check_output_paths(None, tmp_path / "new" / too_long)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_output_paths(fifo, None)  # not opened: with no reader that would block
    fifo.unlink()


def test_an_output_that_cannot_be_written_after_the_run_loses_nothing_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A --json or --report that fails at the end (its directory gone meanwhile) is said in
    one line naming the flag, never a traceback; the tables and the other output follow and
    the exit status is 1."""
    monkeypatch.setattr("bench.main._bench", fake_bench(two_policies()))
    out, err = io.StringIO(), io.StringIO()
    config = BenchConfig(
        json_path=tmp_path / "gone" / "a.json",
        report_dir=tmp_path / "report",
        thresholds=("stream.ratio_vs_request>=2",),
    )
    assert run_bench(config, out, err) == 1
    said = err.getvalue()
    assert f"zplex bench: cannot write --json {tmp_path}/gone/a.json: No such file" in said
    assert "Traceback" not in said and "threshold stream.ratio_vs_request>=2" in said
    assert (tmp_path / "report" / "index.html").exists()
    assert "workload w" in out.getvalue()
    (tmp_path / "file").write_text("x")
    config = BenchConfig(json_path=tmp_path / "a.json", report_dir=tmp_path / "file" / "r")
    assert run_bench(config, out, io.StringIO()) == 1
    assert json.loads((tmp_path / "a.json").read_text())["runs"]


# --- repeats and compare ---------------------------------------------------------------------


def test_repeats_median_and_spread() -> None:
    runs = [run("stream", rps=r) for r in (100.0, 120.0, 80.0)]
    assert runs[repeats.median_index(runs)].requests_per_s == 100.0
    spread = repeats.spread_of(runs)
    assert spread["requests_per_s"] == {
        "n": 3.0,
        "median": 100.0,
        "min": 80.0,
        "max": 120.0,
        "spread": pytest.approx(20.0),
    }
    assert spread["ratio"]["spread"] == 0.0


def result_file(path: Path, rps: list[float]) -> Path:
    runs = [run("stream", rps=r) for r in rps]
    chosen = runs[repeats.median_index(runs)]
    chosen.repeats = repeats.spread_of(runs) if len(runs) > 1 else None
    BenchResult({}, [chosen]).write_json(path)
    return path


def test_compare_weighs_changes_against_the_noise(tmp_path: Path) -> None:
    a = result_file(tmp_path / "a.json", [100.0, 101.0, 99.0])
    b = result_file(tmp_path / "b.json", [150.0, 151.0, 149.0])  # far beyond the noise
    c = result_file(tmp_path / "c.json", [101.0, 103.0, 99.0])  # within it
    once = result_file(tmp_path / "once.json", [130.0])
    rows = compare.comparison_rows([compare.load(p) for p in (a, b, c, once)])["w"]
    rps = next(row for row in rows if row[1] == "req/s")
    assert rps[:2] == ["stream", "req/s"]
    assert rps[3:6] == ["150 \u00b1 1", "+50.0%", "beyond noise"]
    assert rps[7:9] == ["+1.0%", "within noise"]
    assert rps[10:12] == ["+30.0%", "?"]
    console = Console(record=True, width=200, color_system=None)
    assert compare.compare_files([a, b], console) == 0
    assert "beyond noise" in console.export_text()


def test_compare_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    err = io.StringIO()
    console = Console(file=io.StringIO())
    assert compare.compare_files([tmp_path / "bad.json", tmp_path / "x.json"], console, err) == 2
    assert "not the JSON of zplex bench" in err.getvalue()
    assert compare.compare_files([tmp_path / "missing.json"] * 2, console, err) == 2
    assert "cannot read" in err.getvalue()
    # Runs of different workloads: nothing to put side by side, said rather than an empty table.
    a = tmp_path / "a.json"
    BenchResult({}, [run("stream", workload="stdlib")]).write_json(a)
    b = tmp_path / "b.json"
    BenchResult({}, [run("stream", workload="generate:json")]).write_json(b)
    err = io.StringIO()
    assert compare.compare_files([a, b], Console(file=io.StringIO()), err) == 2
    assert err.getvalue() == (
        "zplex bench compare: no workload and policy is in every file "
        f"({a}: stdlib / stream; {b}: generate:json / stream)\n"
    )


# --- headline, warnings, sample --------------------------------------------------------------


def test_headline() -> None:
    runs = two_policies()
    line = headline(runs, project_runs(runs)[0])
    assert line == (
        "stream: 2.00\u00d7 the ratio of request (\u221250% wire bytes), \u221210% req/s, "
        "\u00b10% server CPU/GB, front-bound at 4.0 workers"
    )
    assert headline([run("stream")]) == "stream: ratio 4.00"
    request = dataclasses.replace(run("request"), ratio=2.0)
    assert headline([run("stream"), request]).startswith("stream: 2.00\u00d7 the ratio of request")


def test_phase_warnings() -> None:
    cpu: dict[str, float | None] = {"front": 0.2, "workers": 0.5, "client": 0.1}
    assert phase_checks.too_short_for_cpu("p", 2.0, cpu) is None and cpu["front"] == 0.2
    warning = phase_checks.too_short_for_cpu("p", 0.3, cpu)
    assert warning is not None and "too short for CPU figures" in warning
    assert cpu == {"front": None, "workers": None, "client": None}
    tiny: dict[str, float | None] = {"front": 0.01, "workers": 0.5, "client": 0.1}
    assert phase_checks.too_short_for_cpu("p", 5.0, tiny) is not None
    fast = run("stream", rps=1000)
    assert phase_checks.rate_not_reached("p", fast, 1000.0) is None
    slow = phase_checks.rate_not_reached("p", fast, 2000.0)
    assert slow is not None and "achieved 1,000 req/s (50%)" in slow and "p50 2.0 ms" in slow


def test_projection_plot_marks_the_measured_point(tmp_path: Path) -> None:
    from bench.plots import _measured_point, write_plots

    runs = two_policies()
    result = BenchResult({"server": {"workers": 2}}, runs, project_runs(runs))
    assert _measured_point(result, "w", "stream") == (3, pytest.approx(1e-6))  # 1 kB in 1 s
    assert _measured_point(BenchResult({}, runs), "w", "stream") is None
    written = write_plots(result, tmp_path)
    assert all(path.stat().st_size > 0 for path in written)


def test_report_carries_the_warnings() -> None:
    page = render_html(BenchResult({}, two_policies()), warnings=["phase <x> too short"])
    assert "phase &lt;x&gt; too short" in page
    assert "2.00\u00d7 the ratio of request" in page


def test_spread_sample() -> None:
    assert spread_sample([5, 5, 5], None) == [0, 1, 2]
    assert spread_sample([5, 5, 5], 15) == [0, 1, 2]
    kept = spread_sample([10] * 100, 250)
    assert len(kept) == 25 and kept[0] < 5 and kept[-1] > 94  # across the whole order
    assert sum(10 for _ in kept) <= 250
    assert spread_sample([100, 1, 1], 50) == [1, 2]
    assert spread_sample([1] * 10, 0) == []


def test_few_streams_warns_when_the_groups_leave_streams_empty() -> None:
    """Two affinity groups that hash onto one of eight streams: the run is warned that the
    policy used one stream, so stream and connection measured the same thing."""
    assert phase_checks.few_streams("dir / stream", 8, 8, 50) is None
    assert phase_checks.few_streams("versioned / stream", 61, 64, 216) is None  # hashing
    assert phase_checks.few_streams("dir / stream", 4, 8, 4) is not None
    warning = phase_checks.few_streams("dir / stream", 1, 8, 2)
    assert warning is not None
    assert warning.startswith("dir / stream: the workload's 2 affinity group(s) hash onto 1 of")


def test_the_caption_gives_the_span_of_the_policies_requests() -> None:
    """Under -d each policy answers as many requests as its time allows: the caption gives
    their range, not the first policy's count."""
    fast = dataclasses.replace(run("frame"), requests=25_655, raw_bytes=397_700_000)
    slow = dataclasses.replace(run("stream"), requests=17_592, raw_bytes=272_700_000)
    caption = tables.workload_caption([fast, slow])
    assert caption.startswith("17,592\u201325,655 requests, 272.7\u2013397.7 MB raw, ")
    same = tables.workload_caption([fast, dataclasses.replace(slow, requests=25_655)])
    assert same.startswith("25,655 requests, 272.7\u2013397.7 MB raw")
