"""Tests of the bench at scale with real processes: ``zplex bench --clients 2 --fronts 2``
(two client processes against a server of two fronts) and ``zplex stats`` with a row per
front. Speed is never asserted: the bench measures it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from serverproc import running_server

from server.cli import main


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.status() != "zombie"]


@pytest.mark.timeout(60)
def test_two_client_processes_against_two_fronts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    argv = ["bench", "-w", "versioned", "--files", "3", "--revisions", "4"]
    argv += ["--policies", "stream,request", "-n", "24", "-c", "4", "--warmup", "0.1"]
    argv += ["--workers", "1", "--fronts", "2", "--clients", "2", "--json", str(out)]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "server" in captured.out and "eff." in captured.out

    data = json.loads(out.read_text())
    meta = data["metadata"]
    assert meta["clients"] == 2 and meta["fronts"] == 2
    assert len(meta["server"]["pids"]["fronts"]) == 2
    for run in data["runs"]:
        assert run["errors"] == {}
        assert run["requests"] == 24  # the same requests as one client: 24 in all
        assert 2 <= run["connections"] <= 4  # 3 files: 3 groups, hashed onto 4 connections
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        assert run["latency_cdf"][-1][1] == 1.0
        assert "server_efficiency" in run and "client_worker_ratio" in run
        assert all(v is None or v >= 0 for v in run["cpu_s_per_gb"].values())
    for phase in meta["phases"]:
        assert phase["client_processes"] == 2
        assert phase["passes"] == 2
        # Two passes of 12 objects, each on fresh connections (those with requests: at least
        # 2 of the 4), spread by the kernel over the two fronts.
        connections = phase["front_connections"]
        assert len(connections) == 2 and sum(connections.values()) >= 4
    projection = data["projection"][0]
    assert projection["rows_with_clients"] and projection["rows"][0]["fronts"] >= 1
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:  # clients and server all gone
        time.sleep(0.05)
    assert _children() == []


@pytest.mark.timeout(40)
def test_stats_table_has_a_row_per_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with running_server(tmp_path, "--fronts", "2", workers=1) as srv:
        assert main(["stats", "--connect", f"127.0.0.1:{srv.port}"]) == 0
        text = capsys.readouterr().out
        fronts = srv.info["fronts"]
    assert "front0" in text and "front1" in text
    for pid in fronts:
        assert str(pid) in text
