"""``zplex serve --stdio`` on regular files, pipes and /dev/null, and its clean shutdown when
stdin or stdout fails (docs/protocol.md section 7)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from server.protocol.client_conn import ClientConnection
from server.protocol.events import (
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ServerSettingsReceived,
)
from server.protocol.payloads import ClientSettings
from workers.generate import generate

pytestmark = pytest.mark.timeout(120)
TOKEN = "stdio-token"


def serve_cmd(store: Path) -> list[str]:
    return [
        sys.executable, "-m", "server.cli", "serve", "--stdio", "--workers", "1",
        "--store", str(store), "--write-token", TOKEN,
        "--log-level", "INFO",  # lifecycle lines ("shutting down") are INFO
    ]  # fmt: skip


def group_members(pgid: int) -> list[int]:
    """The live processes of group ``pgid``: a zombie has exited (an orphan, such as
    multiprocessing's resource tracker, waits as one until the init process reaps it)."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.append(pid)
    return members


@contextlib.contextmanager
def server_group() -> Iterator[list[int]]:
    """Collects the process group of the server started inside; on the way out, checks that
    the server left no process behind (its workers included), and kills any that it did."""
    groups: list[int] = []
    try:
        yield groups
        for pgid in groups:
            deadline = time.monotonic() + 10
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert group_members(pgid) == [], "the server left processes behind"
    finally:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def run_server(store: Path, stdin: Any, stdout: Any, data: bytes | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    with server_group() as groups:
        proc = subprocess.Popen(
            serve_cmd(store), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            start_new_session=True, **kw,
        )  # fmt: skip
        groups.append(proc.pid)
        try:
            out, err = proc.communicate(data, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return proc.returncode, out, err.decode()


def client_requests() -> tuple[ClientConnection, bytes, dict[int, bytes]]:
    """A client's frames: generates on two streams, a put and a get of it, an echo."""
    conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",), token=TOKEN))
    data = conn.initiate()
    expected: dict[int, bytes] = {}
    for seed in range(3):
        rid, frames = conn.send_request(
            1 + 2 * (seed % 2), "generate", {"size": 200_000, "seed": seed}
        )
        data += frames
        expected[rid] = generate(200_000, "text", seed)
    obj = generate(100_000, "json", 9)
    rid, frames = conn.send_request(5, "put", {"key": "stdio/obj"}, obj)
    data += frames
    expected[rid] = b""
    rid, frames = conn.send_request(5, "get", {"key": "stdio/obj"})
    data += frames
    expected[rid] = obj
    rid, frames = conn.send_request(7, "echo", {}, b"over stdio")
    data += frames
    expected[rid] = b"over stdio"
    return conn, data, expected


def answers(conn: ClientConnection, output: bytes) -> dict[int, object]:
    events = conn.receive_data(output)
    assert isinstance(events[0], ServerSettingsReceived)  # the server's settings come first
    result: dict[int, object] = {}
    for event in events:
        if isinstance(event, ResponseBody):
            result[event.request_id] = result.get(event.request_id, b"") + event.data  # type: ignore[operator]
        elif isinstance(event, ResponseComplete):
            result.setdefault(event.request_id, b"")
        elif isinstance(event, ResponseError):
            result[event.request_id] = event.error.code
    return result


@pytest.mark.parametrize("stdin_kind", ["file", "pipe"])
@pytest.mark.parametrize("stdout_kind", ["file", "pipe"])
def test_stdio_on_files_and_pipes(tmp_path: Path, stdin_kind: str, stdout_kind: str) -> None:
    conn, data, expected = client_requests()
    infile, outfile = tmp_path / "in.bin", tmp_path / "out.bin"
    infile.write_bytes(data)
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(infile.open("rb")) if stdin_kind == "file" else subprocess.PIPE
        stdout = (
            stack.enter_context(outfile.open("wb")) if stdout_kind == "file" else subprocess.PIPE
        )
        code, out, err = run_server(
            tmp_path / "store", stdin, stdout, data if stdin_kind == "pipe" else None
        )
    assert code == 0, err
    assert "Traceback" not in err
    output = outfile.read_bytes() if stdout_kind == "file" else out
    assert answers(conn, output) == expected


def test_stdin_from_dev_null(tmp_path: Path) -> None:
    outfile = tmp_path / "out.bin"
    with open(os.devnull, "rb") as stdin, outfile.open("wb") as stdout:
        code, _, err = run_server(tmp_path / "store", stdin, stdout)
    assert code == 0, err
    events = ClientConnection().receive_data(outfile.read_bytes())
    assert [type(e) for e in events] == [ServerSettingsReceived]


def test_unreadable_stdin_shuts_the_front_down_cleanly(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"")
    fd = os.open(tmp_path / "in.bin", os.O_WRONLY)  # open for writing: reading it fails
    try:
        with (tmp_path / "out.bin").open("wb") as stdout:
            _, _, err = run_server(tmp_path / "store", fd, stdout)
    finally:
        os.close(fd)
    assert "stdio connection failed" in err
    assert "shutting down" in err
    assert "Traceback" not in err


def _limit_file_size() -> None:
    """In the server: files may not grow past 256 KiB (EFBIG, not SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_unwritable_stdout_shuts_the_front_down_cleanly(tmp_path: Path) -> None:
    conn = ClientConnection(ClientSettings(encodings=("identity",)))
    data = (
        conn.initiate() + conn.send_request(1, "generate", {"size": 2_000_000, "kind": "random"})[1]
    )
    infile, outfile = tmp_path / "in.bin", tmp_path / "out.bin"
    infile.write_bytes(data)
    with infile.open("rb") as stdin, outfile.open("wb") as stdout:
        _, _, err = run_server(tmp_path / "store", stdin, stdout, preexec_fn=_limit_file_size)
    assert "cannot write to stdout" in err
    assert "shutting down" in err
    assert "Traceback" not in err
    assert outfile.stat().st_size <= 256 * 1024
