"""Tests of a bench phase without processes (bench/corpus.py, passes.py, cpu.py, runner.py,
main.py): placement and passes, the arithmetic of one phase on known inputs, the checks of
each response, CPU deltas and samples, the exit status and the outcome's JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import cpu, passes, stats
from bench.client import ConnectionLost, Response, ServerError, body_digest
from bench.config import BenchConfig
from bench.corpus import Corpus, Request, build_workload
from bench.cpu import Samples
from bench.main import BenchOutcome, run_bench, write_json
from bench.passes import Tally
from bench.phase_outcome import run_result
from bench.results import BenchResult, RunResult, project_runs
from bench.runner import Runner
from bench.sweep import SweepPoint, skipped_note, sweep_pairs, sweep_table
from bench.workloads import Item, Workload, stream_index

# --- helpers ---------------------------------------------------------------------------------


def make_corpus(groups: list[str], size: int = 1000) -> Corpus:
    items = [Item(f"k/{i}", bytes([65 + i % 26]) * size, g) for i, g in enumerate(groups)]
    requests = [
        Request("get", {"key": it.key}, it.group, len(it.data), body_digest(it.data))
        for it in items
    ]
    return Corpus("test", Workload("test", items), requests, [it.data for it in items])


def stream_run(**measurements: Any) -> RunResult:
    """A ``stream`` run of workload ``w`` on one stream, with the given measurements."""
    return RunResult.from_measurements(
        workload="w",
        policy="stream",
        encoding="zstd-8mb",
        level=3,
        streams=1,
        connections=1,
        **measurements,
    )


def response(body: bytes, digest: str | None = None, wire: int = 100) -> Response:
    header: dict[str, Any] = {"status": "ok", "size": len(body)}
    header["digest"] = body_digest(body) if digest is None else digest
    return Response(1, 1, header, body, len(body) + 50, wire, 0.001)


# --- placement and passes --------------------------------------------------------------------


def test_placement_keeps_groups_together_and_policies_differ() -> None:
    groups = [f"g{i % 7}" for i in range(40)]
    corpus = make_corpus(groups)
    stream = corpus.placement("stream", 2, 4)
    for group in set(groups):
        slots = {stream[i] for i, g in enumerate(groups) if g == group}
        assert len(slots) == 1  # one context per affinity group
        (conn, sid) = slots.pop()
        slot = stream_index(group, 8)
        assert (conn, sid) == (slot % 2, 1 + 2 * (slot // 2))
    assert corpus.placement("request", 2, 4) == stream
    assert corpus.placement("frame", 2, 4) == stream
    connection = corpus.placement("connection", 2, 4)
    assert {sid for _conn, sid in connection} == {1}
    assert all(
        conn == stream_index(g, 2) for (conn, _sid), g in zip(connection, groups, strict=True)
    )


def test_plans_cycle_the_workload_and_cut_the_last_pass() -> None:
    corpus = make_corpus(["a", "b", "a"])
    settings = BenchConfig(requests=7, connections=1, streams=1)
    plans = list(passes.plan_passes(corpus, "stream", settings))
    assert [p.size for p in plans] == [3, 3, 1]
    assert [p.first for p in plans] == [0, 3, 6]
    assert plans[2].slots == {(0, 1): [0]}  # a prefix of the workload order
    assert plans[0].slots == {(0, 1): [0, 1, 2]}


def test_schedule_is_open_loop() -> None:
    schedule = passes.Schedule(100.0, 50.0)
    assert schedule.due(0) == 100.0
    assert schedule.due(50) == pytest.approx(101.0)


# --- arithmetic of one phase on known inputs -------------------------------------------------


def test_run_result_from_a_known_tally() -> None:
    corpus = make_corpus(["a", "a", "b", "b"], size=1000)
    settings = BenchConfig(connections=1, streams=2, requests=10)
    tally = Tally()
    for ms in range(1, 101):  # 1..100 ms
        tally.latency.record_s(ms / 1000)
    tally.ok, tally.raw, tally.wire = 10, 10_000, 2_500
    tally.answered = {0: [0, 1, 2, 3], 1: [3, 1, 2, 0], 2: [0, 1]}  # 2 whole passes + prefix
    samples = Samples()
    samples.add(
        {
            "front": {"pid": 1, "rss": 1000},
            "workers": [
                {"pid": 2, "rss": 5000, "streams": 2, "context_bytes": 3000},
                {"pid": 3, "rss": 7000, "streams": 1, "context_bytes": 1000},
            ],
        },
        monitor_streams=1,
    )
    corpus.inprocess["stream"] = 4.0
    cpu = {"front": 0.01, "workers": 0.08, "client": 0.02}
    run = run_result(settings, corpus, "stream", tally, 2.0, cpu, samples)
    full = stats.ideal_wire_bytes(corpus.bodies, 3)
    prefix = stats.ideal_wire_bytes(corpus.bodies[:2], 3)
    assert run.ideal_wire_bytes == 2 * full + prefix
    assert run.ratio == pytest.approx(4.0)
    assert run.space_savings == pytest.approx(0.75)
    assert run.ratio_vs_ideal == pytest.approx(2500 / (2 * full + prefix))
    assert run.requests_per_s == pytest.approx(5.0)
    assert run.raw_mb_per_s == pytest.approx(0.005)
    # 0.08 CPU s for 10 kB raw = 8000 s/GB; in process 4 s/GB.
    assert run.cpu_s_per_gb.workers == pytest.approx(8000.0)
    assert run.cpu_s_per_gb.front == pytest.approx(1000.0)
    assert run.worker_efficiency == pytest.approx(4.0 / 8000.0)
    assert run.front_overhead == pytest.approx(0.125)
    assert run.latency_ms["p50"] == pytest.approx(50.0, rel=1e-3)
    assert run.latency_ms["p99"] == pytest.approx(99.0, rel=1e-3)
    assert run.latency_ms["p999"] == pytest.approx(100.0, rel=1e-3)
    assert run.memory_per_stream == pytest.approx(2000.0)  # 4000 B over 3 - 1 streams
    assert run.peak_rss.front == 1000
    assert run.peak_rss.workers == 7000
    assert run.streams == len({stream_index(g, 2) for g in "ab"})
    assert run.error_count == 0


def test_samples_keep_the_peaks() -> None:
    samples = Samples()
    worker = {"pid": 2, "rss": 10, "streams": 3, "context_bytes": 300}
    samples.add({"front": {"rss": 5}, "workers": [worker]}, 1)
    samples.add({"front": {"rss": 3}, "workers": [dict(worker, rss=20, streams=1)]}, 1)
    assert samples.front_rss == 5
    assert samples.worker_rss == {2: 20}
    assert samples.memory_per_stream == 150.0  # the monitor's own stream left alone: no /0


def test_cpu_delta_needs_the_same_processes() -> None:
    before = {"fronts": {1: 2.0}, "workers": {10: 1.0, 11: 2.0}}
    after = {"fronts": {1: 2.5}, "workers": {10: 3.0, 11: 2.5}}
    assert cpu.cpu_delta(before, after) == (0.5, 2.5, True)
    restarted = {"fronts": {9: 0.1}, "workers": {10: 3.0, 12: 0.2}}
    assert cpu.cpu_delta(before, restarted) == (None, 2.0, False)


def test_cpu_of_every_front_is_summed_and_their_connections_counted() -> None:
    probe = cpu.CpuProbe(local=False)
    header = {
        "front": {"pid": 1, "cpu_user": 1.0, "cpu_system": 0.0, "connections_total": 3},
        "fronts": [
            {"pid": 1, "cpu_user": 1.0, "cpu_system": 0.0, "connections_total": 3},
            {"pid": 2, "cpu_user": 0.5, "cpu_system": 0.5, "connections_total": 1},
        ],
        "workers": [{"pid": 10, "cpu_user": 1.0, "cpu_system": 0.0}],
    }
    before = probe.snapshot(header)
    header["fronts"][0].update(cpu_user=2.0, connections_total=5)
    header["fronts"][1].update(cpu_system=1.5, connections_total=4)
    after = probe.snapshot(header)
    assert cpu.cpu_delta(before, after) == (2.0, 0.0, True)
    assert cpu.connections_delta(before, after) == {1: 2, 2: 3}
    alone = probe.snapshot({"front": {"pid": 7, "cpu_user": 1.0}, "workers": []})
    assert alone["fronts"] == {7: 1.0}


def test_check_response() -> None:
    body = b"hello" * 100
    request = Request("get", {"key": "k"}, "g", len(body), body_digest(body))
    assert passes.check_response(response(body), request) is None
    assert passes.check_response(response(body[:-1]), request) == "size-mismatch"
    wrong = "blake2b-256:" + "0" * 64
    assert passes.check_response(response(body, wrong), request) == "digest-mismatch"
    other = b"jello" * 100
    assert passes.check_response(response(other), request) == "content-mismatch"
    bare = Response(1, 1, {"status": "ok"}, body, 10, 10, 0.0)
    assert passes.check_response(bare, request) == "digest-missing"


def test_error_codes() -> None:
    assert passes.error_code(ServerError("overloaded", "busy")) == "overloaded"
    assert passes.error_code(ConnectionLost("gone")) == "connection-lost"
    assert passes.error_code(TimeoutError()) == "timeout"
    assert passes.error_code(ConnectionRefusedError()) == "connect-failed"


def test_exit_status_follows_the_error_rate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(errors: int) -> RunResult:
        return stream_run(
            requests=90,
            duration_s=1.0,
            raw_bytes=1000,
            wire_bytes=100,
            cpu_seconds={},
            errors={"connection-lost": errors},
        )

    async def fake_bench(config: BenchConfig, bench: Runner) -> BenchOutcome:
        return BenchOutcome(BenchResult({}, [run(10)]), [], [], [])

    monkeypatch.setattr("bench.main._bench", fake_bench)
    assert run_bench(BenchConfig(), sys.stdout, sys.stderr) == 1
    assert "error rate 10.00% exceeds" in capsys.readouterr().err
    assert run_bench(BenchConfig(max_error_rate=0.1), sys.stdout, sys.stderr) == 0


def test_outcome_json_is_strict(tmp_path: Path) -> None:
    run = stream_run(
        requests=1, duration_s=0.0, raw_bytes=0, wire_bytes=0, cpu_seconds={"front": 0.0}
    )
    outcome = BenchOutcome(BenchResult({"x": float("inf")}, [run]), [], [], ["w"])
    path = tmp_path / "o.json"
    write_json(outcome, path)
    data = json.loads(path.read_text())
    assert data["runs"][0]["ratio"] is None and data["warnings"] == ["w"]
    assert data["metadata"]["x"] is None


def test_generate_pass_is_no_longer_than_the_run() -> None:
    workload = build_workload("generate:json", BenchConfig(requests=5))
    assert workload.requests == 5
    assert build_workload("generate:json", BenchConfig()).requests == 256


def test_asyncio_helpers() -> None:
    async def go() -> float:
        start = time.monotonic()
        await passes.sleep_until(start + 0.02)
        await passes.sleep_until(start - 1)  # in the past: at once
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.019


def test_other_load_is_what_our_processes_did_not_get(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.psutil, "cpu_count", lambda: 2)
    other, share = cpu.other_load(3.0, 0.5, 1.0, 0.5, elapsed=2.0)
    assert other == pytest.approx(1.0)
    assert share == pytest.approx(0.25)  # 1 s of the host's 2 cores x 2 s
    assert cpu.other_load(1.0, 0.5, 1.0, 0.5, elapsed=2.0) == (0.0, 0.0)  # never negative


def test_loopback_hosts() -> None:
    assert cpu.is_loopback("localhost") and cpu.is_loopback("127.0.0.2")
    assert cpu.is_loopback("::1")
    assert not cpu.is_loopback("10.0.0.5") and not cpu.is_loopback("example.org")


def test_sweep_table_and_skipped_note() -> None:
    def gigabyte_run(workers_cpu: float) -> RunResult:
        return stream_run(
            requests=10,
            duration_s=1.0,
            raw_bytes=10**9,
            wire_bytes=10**8,
            cpu_seconds={"front": 0.5, "workers": workers_cpu, "client": 0.1},
        )

    projection = project_runs([gigabyte_run(2.0)])
    assert projection  # the sweep's rows show the projection of the main run beside them
    table = sweep_table([SweepPoint(1, [gigabyte_run(1.5)])], projection)
    assert [column.header for column in table.columns][:2] == ["workload", "workers"]
    assert table.row_count == 1
    cells = [next(iter(column.cells)) for column in table.columns]
    assert cells[:2] == ["w", "1"]
    assert cells[-1] == "500.0"  # 1 front at 0.5 s/GB carries 2 GB/s, 1 worker at 2 s/GB 0.5
    two_fronts = sweep_table([SweepPoint(3, [gigabyte_run(1.5)], fronts=2)], projection)
    cells = [next(iter(column.cells)) for column in two_fronts.columns]
    assert cells[1:3] == ["3", "2"]
    assert cells[-1] == "1,500.0"  # 3 workers at 2 s/GB: 1.5 GB/s, under the fronts' 4
    note = skipped_note([(4, 1), (8, 2)]).plain
    assert "skipped 4 workers + 1 fronts, 8 workers + 2 fronts" in note


def test_sweep_pairs_join_workers_and_fronts() -> None:
    assert sweep_pairs(BenchConfig()) == []
    assert sweep_pairs(BenchConfig(sweep_workers=(1, 2))) == [(1, 1), (2, 1)]
    assert sweep_pairs(BenchConfig(sweep_workers=(1, 2), sweep_fronts=(1, 2))) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert sweep_pairs(BenchConfig(workers=3, sweep_fronts=(2,))) == [(3, 2)]
