"""``zplex bench`` never loses a run and says what it measured (issue 11): Ctrl-C writes the
phases that finished, --connect to a port that is not zplex fails within the handshake
timeout, --digest off still verifies every body, the corpus is recorded per workload."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import bench_until

from server.cli import main


@pytest.mark.timeout(60)
def test_ctrl_c_after_the_first_phase_writes_it(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    args = ["-w", "stdlib", "--limit", "64K", "--policies", "request,stream", "-d", "1"]
    args += ["--warmup", "0", "--workers", "1", "--json", str(out)]
    # Once stream is measuring, the request phase has finished.
    with bench_until(args, tmp_path, "/ stream ...") as proc:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    data = json.loads(out.read_text())
    assert [(r["workload"], r["policy"]) for r in data["runs"]] == [("stdlib", "request")]
    assert data["runs"][0]["requests"] > 0
    assert any("interrupted after 1 phase" in w for w in data["warnings"])
    assert "workload stdlib" in stdout  # the table of what finished


@pytest.fixture
def not_zplex() -> Iterator[tuple[int, int]]:
    """Two ports that are not zplex: one answers with an SSH banner, one says nothing."""
    listeners = []
    accepted: list[socket.socket] = []
    for banner in (b"SSH-2.0-OpenSSH_9.6\r\n", b""):
        sock = socket.create_server(("127.0.0.1", 0))
        listeners.append(sock)

        def serve(sock: socket.socket = sock, banner: bytes = banner) -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                accepted.append(conn)
                if banner:
                    conn.sendall(banner)

        threading.Thread(target=serve, daemon=True).start()
    try:
        yield listeners[0].getsockname()[1], listeners[1].getsockname()[1]
    finally:
        for sock in listeners + accepted:
            sock.close()


@pytest.mark.timeout(30)
def test_connect_to_a_port_that_is_not_zplex(
    not_zplex: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    talking, silent = not_zplex
    common = ["bench", "-w", "stdlib", "-n", "5"]
    assert main([*common, "--connect", f"127.0.0.1:{talking}"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{talking} did not answer with zplex frames (" in err
    assert err.endswith("): is it a zplex server?\n")
    assert main([*common, "--connect", f"127.0.0.1:{silent}", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{silent} did not answer the zplex handshake within 1 s" in err


@pytest.mark.timeout(60)
def test_digest_off_verifies_every_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = {}
    for digest in ("on", "off"):
        out = tmp_path / f"{digest}.json"
        argv = ["bench", "-w", "versioned,generate:json", "--files", "2", "--revisions", "4"]
        argv += ["--generate-size", "8K", "--policies", "stream", "-n", "16", "--warmup", "0"]
        argv += ["--workers", "1", "--digest", digest, "--json", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
        data = json.loads(out.read_text())
        assert data["metadata"]["config"]["digest"] is (digest == "on")
        for run in data["runs"]:
            assert run["errors"] == {} and run["requests"] == 16
        figures[digest] = {r["workload"]: r["wire_bytes"] for r in data["runs"]}
        corpus = {w["name"]: w["corpus"] for w in data["metadata"]["workloads"]}
        assert corpus["versioned"]["files"] == 8
        assert corpus["generate:json"] == {
            "files": corpus["generate:json"]["files"],
            "bytes": corpus["generate:json"]["bytes"],
            "skipped": {},
            "compressed_files": 0,
        }
    # Without the digest, every response header is smaller on the wire.
    for workload, wire in figures["off"].items():
        assert wire < figures["on"][workload], workload
