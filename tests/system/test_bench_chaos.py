"""``zplex bench --chaos``: real servers whose workers (and fronts) are killed while the bench
measures; the client retries what a user would, and no request is lost or answered wrongly.
Speed is never asserted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from server.cli import main


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.status() != "zombie"]


def _run(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    status = main([*argv, "--json", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "chaos: stream " in captured.out  # the caption
    data: dict[str, Any] = json.loads(out.read_text())
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:  # the server and clients all gone
        time.sleep(0.05)
    assert _children() == []
    return data


def _check_no_request_lost(run: dict[str, Any]) -> None:
    chaos = run["chaos"]
    assert set(chaos) == {"kills", "answered", "retried", "failed", "lost"}
    assert chaos["kills"] > 0
    assert chaos["lost"] == 0  # no request unanswered, none answered wrongly
    assert chaos["answered"] > 0 and chaos["answered"] == run["requests"]
    # Every request ends once: answered, or failed with a documented error.
    assert chaos["failed"] == sum(run["errors"].values())
    assert set(run["errors"]) <= {"worker-lost", "overloaded", "shutting-down", "connection-lost"}


@pytest.mark.timeout(60)
def test_chaos_kills_workers_and_loses_no_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "-w", "generate:text", "--policies", "stream", "-d", "3"]
    argv += ["--warmup", "0", "--workers", "2", "--chaos", "0.5"]
    data = _run(argv, tmp_path / "out.json", capsys)
    (run,) = data["runs"]
    _check_no_request_lost(run)
    assert data["metadata"]["config"]["chaos_s"] == 0.5
    assert any("--chaos killed" in warning for warning in data["warnings"])
    assert run["cpu_s_per_gb"]["workers"] is None  # the killed workers' CPU went with them


@pytest.mark.timeout(90)
def test_chaos_kills_fronts_too_with_client_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "-w", "versioned", "--files", "4", "--revisions", "4"]
    argv += ["--policies", "stream", "-d", "3", "-c", "4", "--warmup", "0"]
    argv += ["--workers", "2", "--fronts", "2", "--clients", "2"]
    argv += ["--chaos", "0.4", "--chaos-fronts"]
    data = _run(argv, tmp_path / "out.json", capsys)
    (run,) = data["runs"]
    _check_no_request_lost(run)
    assert data["metadata"]["clients"] == 2
