"""Tests for ``zplex bench`` (bench/runner.py, bench/cli.py): the phase arithmetic on known
inputs, placement and passes, argument handling, and tiny end-to-end runs against a real
server (started by the bench itself, or running beside it for ``--connect``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import config, cpu, passes, server_process, stats
from bench.client import Response, body_digest
from bench.config import BenchConfig, BenchError
from bench.corpus import Corpus, Request, build_workload
from bench.cpu import Samples
from bench.display import PlainDisplay
from bench.main import BenchOutcome, run_bench, write_json
from bench.passes import Tally
from bench.results import BenchResult, RunResult
from bench.runner import Runner
from bench.workloads import Item, Workload, stream_index
from server.cli import main

ROOT = Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------------


def make_corpus(groups: list[str], size: int = 1000) -> Corpus:
    items = [Item(f"k/{i}", bytes([65 + i % 26]) * size, g) for i, g in enumerate(groups)]
    requests = [
        Request("get", {"key": it.key}, it.group, len(it.data), body_digest(it.data))
        for it in items
    ]
    return Corpus("test", Workload("test", items), requests, [it.data for it in items])


def response(body: bytes, digest: str | None = None, wire: int = 100) -> Response:
    header: dict[str, Any] = {"status": "ok", "size": len(body)}
    header["digest"] = body_digest(body) if digest is None else digest
    return Response(1, 1, header, body, len(body) + 50, wire, 0.001)


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Temporary directories made by the bench land here, so the test can see they go."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp


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
    bench = Runner(settings, PlainDisplay(sys.stderr))
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
    run = bench._run_result(corpus, "stream", tally, 2.0, 0.01, 0.08, 0.02, samples)
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
    before = {"front": (1, 2.0), "workers": {10: 1.0, 11: 2.0}}
    after = {"front": (1, 2.5), "workers": {10: 3.0, 11: 2.5}}
    assert cpu.cpu_delta(before, after) == (0.5, 2.5, True)
    restarted = {"front": (9, 0.1), "workers": {10: 3.0, 12: 0.2}}
    assert cpu.cpu_delta(before, restarted) == (None, 2.0, False)


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
    from bench.client import ConnectionLost, ServerError

    assert passes.error_code(ServerError("overloaded", "busy")) == "overloaded"
    assert passes.error_code(ConnectionLost("gone")) == "connection-lost"
    assert passes.error_code(TimeoutError()) == "timeout"
    assert passes.error_code(ConnectionRefusedError()) == "connect-failed"


# --- arguments -------------------------------------------------------------------------------


def test_parsers() -> None:
    assert config.parse_bytes("512K") == 512 * 1024
    assert config.parse_bytes("16MiB") == 16 << 20
    assert config.parse_bytes("1.5G") == 3 << 29
    assert config.parse_bytes("100") == 100
    assert config.parse_sizes("1,2, 4") == [1, 2, 4]
    assert config.parse_endpoint("[::1]:7410") == ("::1", 7410)
    assert config.workload_names(["stdlib,versioned", "git:/a,b"]) == (
        "stdlib",
        "versioned",
        "git:/a,b",
    )
    for bad in ("12Q", "-1K", "K"):
        with pytest.raises(BenchError):
            config.parse_bytes(bad)
    with pytest.raises(BenchError):
        config.parse_sizes("1,x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policies": ("stream", "nope")},
        {"policies": ()},
        {"streams": 129},
        {"connections": 0},
        {"requests": 5, "duration_s": 2.0},
        {"rate": 0.0},
        {"level": 30},
        {"encoding": "zlib", "level": 12},
        {"connect": ("127.0.0.1", 1), "workers": 2},
        {"max_error_rate": 1.5},
    ],
)
def test_bad_configs(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BenchError):
        BenchConfig(**kwargs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--git", "{tmp}"], "not a git repository"),
        (["--dir", "{tmp}/missing"], "is not a directory"),
        (["--connect", "127.0.0.1:1"], "cannot connect to 127.0.0.1:1"),
        (["--connect", "localhost"], "--connect"),
        (["--policies", "stream,fast"], "unknown policy"),
        (["--limit", "lots"], "not a size"),
    ],
)
@pytest.mark.timeout(20)
def test_bad_arguments_exit_2_without_a_traceback(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["bench", *(a.replace("{tmp}", str(tmp_path)) for a in argv)])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err


def test_exit_status_follows_the_error_rate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(errors: int) -> RunResult:
        return RunResult.from_measurements(
            workload="w",
            policy="stream",
            encoding="zstd-8mb",
            level=3,
            streams=1,
            connections=1,
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


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_tiny_bench_end_to_end(
    tmp_path: Path, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    report = tmp_path / "report"
    status = main(
        [
            "bench",
            "-w",
            "generate:text,versioned,stdlib",
            "--files",
            "3",
            "--revisions",
            "4",
            "--limit",
            "120K",
            "--generate-size",
            "16K",
            "-n",
            "24",
            "--warmup",
            "0",
            "--workers",
            "1",
            "--json",
            str(out),
            "--report",
            str(report),
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "workload versioned" in captured.out and "space" in captured.out

    data = json.loads(out.read_text())
    assert data["schema"] == 1
    assert {"metadata", "runs", "projection", "sweep", "warnings"} <= data.keys()
    runs = {(r["workload"], r["policy"]): r for r in data["runs"]}
    assert set(runs) == {
        (w, p)
        for w in ("generate:text", "versioned", "stdlib")
        for p in ("frame", "request", "stream", "connection")
    }
    for run in runs.values():
        assert run["errors"] == {}
        assert run["requests"] == 24
        for key in (
            "ratio",
            "space_savings",
            "ratio_vs_request",
            "ratio_vs_ideal",
            "requests_per_s",
            "raw_mb_per_s",
            "wire_mb_per_s",
            "inprocess_cpu_s_per_gb",
        ):
            assert run[key] is not None and run[key] > 0, key
        # CPU figures are there, but a phase of a few ms may fall between two clock ticks.
        for key in ("worker_efficiency", "front_overhead", "memory_per_stream"):
            assert key in run and (run[key] is None or run[key] >= 0), key
        assert set(run["cpu_s_per_gb"]) == {"front", "workers", "client"}
        assert all(v is None or v >= 0 for v in run["cpu_s_per_gb"].values())
        assert set(run["latency_ms"]) == {"p50", "p90", "p99", "p999"}
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        assert run["ratio_vs_ideal"] >= 0.98  # no policy beats one in-process context
        assert run["peak_rss"]["front"] > 0 and run["peak_rss"]["workers"] > 0
    assert runs[("generate:text", "stream")]["ratio"] > 1.5
    assert runs[("versioned", "request")]["ratio_vs_request"] == pytest.approx(1.0)
    versioned = runs[("versioned", "stream")]
    assert versioned["ratio"] >= runs[("versioned", "request")]["ratio"]
    assert versioned["ratio_vs_request"] > 1.5  # the previous revision is in the context
    assert [p["workload"] for p in data["projection"]] == ["generate:text", "versioned", "stdlib"]

    meta = data["metadata"]
    assert meta["config"]["connections"] == 2 and meta["server"]["mode"] == "spawned"
    objects = {w["name"]: w["objects"] for w in meta["workloads"]}
    for phase in meta["phases"]:  # 24 requests: passes of the whole workload, then a prefix
        assert phase["passes"] == -(-24 // objects[phase["workload"]])
    pids = [meta["server"]["pids"]["front"], *meta["server"]["pids"]["workers"]]
    assert wait_gone(pids) == []
    assert list(private_tmp.iterdir()) == []  # the temporary store is gone
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["index.html", "ratio_by_policy.png", "cpu_per_gb_by_role.png", "latency_cdf.png",
         "scaling_projection.png"]
    )  # fmt: skip


@pytest.mark.timeout(30)
def test_connect_open_model_and_store_reuse(
    tmp_path: Path, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_process.ServerProcess(workers=1, token="t0ken")
    try:
        server.start()
        address = str(server.endpoint)
        common = ["bench", "--connect", address, "-w", "stdlib", "--limit", "64K"]
        common += ["--policies", "stream,request", "--warmup", "0.2"]
        # Without the token, an empty store is an argument error.
        assert main([*common, "-n", "10"]) == 2
        assert "pass --token" in capsys.readouterr().err
        out = tmp_path / "open.json"
        args = ["--rate", "400", "-n", "40", "--json", str(out)]
        assert main([*common, "--token", "t0ken", *args]) == 0, capsys.readouterr().err
        data = json.loads(out.read_text())
        assert data["metadata"]["config"]["model"] == "open"
        assert data["metadata"]["server"]["mode"] == "connect"
        for run in data["runs"]:
            assert run["errors"] == {} and run["requests"] == 40
            # 40 requests at 400/s take at least ~0.1 s.
            assert run["duration_s"] >= 0.09
            assert run["latency_ms"]["p50"] is not None
        # Now the store holds the corpus: no token needed.
        assert main([*common, "-n", "10"]) == 0, capsys.readouterr().err
        assert server.pids()  # a --connect run leaves the server alone
    finally:
        server.stop()
    assert server.pids() == []
    assert not server.directory.exists()


@pytest.mark.timeout(30)
def test_interrupt_stops_the_server(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "server.cli", "bench", "-w", "generate:text", "-d", "30"]
    cmd += ["--warmup", "0", "--workers", "1"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "/ frame ..." in line:  # measuring: the server is up
                break
        server = psutil.Process(proc.pid).children(recursive=True)
        assert server
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert "Traceback" not in err
        assert wait_gone([p.pid for p in server]) == []
        assert not any(p.name.startswith("zplex-bench-") for p in tmp_path.iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_outcome_json_is_strict(tmp_path: Path) -> None:
    run = RunResult.from_measurements(
        workload="w",
        policy="stream",
        encoding="zstd-8mb",
        level=3,
        streams=1,
        connections=1,
        requests=1,
        duration_s=0.0,
        raw_bytes=0,
        wire_bytes=0,
        cpu_seconds={"front": 0.0},
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
