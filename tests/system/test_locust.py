"""bench/locustfile.py run headless by Locust itself for a few seconds against a real server
(127.0.0.1): it fills the store from a ``dir:`` workload, every request is counted in
Locust's statistics, and none fails."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import TOKEN, running_server

# Not imported here: importing locust monkey-patches this whole process for gevent.
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust missing"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_locust_user_runs_headless_without_failures(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for group in ("a", "b"):
        (data / group).mkdir(parents=True)
        for i in range(3):
            (data / group / f"f{i}.txt").write_text(f"{group} line {i}\n" * (200 + 50 * i))
    with running_server(tmp_path, workers=1) as srv:
        env = {
            "ZPLEX_WORKLOAD": f"dir:{data}",
            "ZPLEX_TOKEN": TOKEN,
            "ZPLEX_STREAMS": "2",
            "PATH": str(Path(sys.executable).parent),
            "PYTHONPATH": str(ROOT),
        }
        cmd = [
            sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
            "--headless", "--users", "2", "--spawn-rate", "2", "--run-time", "3s",
            "--host", f"127.0.0.1:{srv.port}", "--csv", str(tmp_path / "run"),
            "--only-summary", "--loglevel", "WARNING",
        ]  # fmt: skip
        done = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        stored = {p.relative_to(srv.store).as_posix() for p in srv.store.rglob("*.txt")}
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    row = rows[f"dir:{data}"]
    assert row["Type"] == "get"
    assert int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == 0
    assert float(row["Average Content Size"]) > 0
    assert len(stored) >= 6  # the store was filled with the workload's objects
