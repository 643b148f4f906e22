"""Start a real ``zplex serve`` on 127.0.0.1 for tests, and always stop it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

TOKEN = "test-token"


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], ready_file: Path, store: Path) -> None:
        self.proc = proc
        self.ready_file = ready_file
        self.store = store
        #: What :meth:`read_output_until` has read of the server's output.
        self.output = ""

    @property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.ready_file.read_text())
        return info

    @property
    def port(self) -> int:
        return int(self.info["tcp"][1])

    def worker_pids(self) -> list[int]:
        return [int(p) for p in self.info["workers"]]

    def read_output_until(self, text: str, timeout: float = 20.0) -> str:
        """The server's output (stdout and stderr) read until it holds ``text``; raises
        TimeoutError with what it read if it does not within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{text!r} not in the server's output: {self.output!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the server's output ended: {self.output!r}")
                self.output += chunk.decode(errors="replace")
        return self.output

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if predicate():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise TimeoutError("condition not met in time")


@contextlib.contextmanager
def running_server(
    tmp: Path,
    *args: str,
    workers: int = 2,
    timeout: float = 30.0,
    store: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """A server with its ready file in ``tmp`` and its store ``store`` (default
    ``tmp/store``); ``env`` is added to the environment (e.g. ``TMPDIR``)."""
    ready = tmp / "ready.json"
    store = store if store is not None else tmp / "store"
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        "0",
        "--workers",
        str(workers),
        "--store",
        str(store),
        "--ready-file",
        str(ready),
        "--write-token",
        TOKEN,
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if k != "ZPLEX_WRITE_TOKEN"} | (env or {})
    # Its own process group, so that a test can signal the whole group as systemd does.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = ServerProcess(proc, ready, store)
    children: list[psutil.Process] = []
    try:
        server.wait_for(ready.exists, timeout)
        children = psutil.Process(proc.pid).children(recursive=True)
        yield server
    finally:
        with contextlib.suppress(psutil.Error):
            children += psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if proc.stdout is not None:
            proc.stdout.close()


ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def bench_until(args: list[str], tmp_path: Path, marker: str) -> Iterator[subprocess.Popen[str]]:
    """A ``zplex bench`` subprocess (text pipes, ``TMPDIR`` in ``tmp_path``), yielded once a
    line of its standard error holds ``marker`` (e.g. ``"/ stream ..."``: that phase is
    measuring); killed on the way out if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "bench", *args],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if marker in line:
                break
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def zplex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``zplex`` command line (``python -m server.cli``) to its end, without the
    caller's ``ZPLEX_WRITE_TOKEN`` (plus ``env``), standard input closed."""
    base = {k: v for k, v in os.environ.items() if k != "ZPLEX_WRITE_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
