"""The server a bench run starts itself: a ``zplex serve`` subprocess (through the command
line, ``python -m server.cli serve``: the bench imports nothing of the server) on a free port,
with a temporary store, found through its ``--ready-file``, and always stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import psutil

from bench.config import BenchFailure

#: Seconds to wait for a started server's ready file.
SERVER_READY_TIMEOUT_S = 60.0
#: Longest TMPDIR handed to a started server: it creates ``zplex-XXXXXXXX/workers`` there, an
#: ipc socket path that must fit ``sun_path`` (107 bytes).
MAX_SERVER_TMPDIR = 80
#: Seconds between SIGTERM and SIGKILL when stopping the server.
SERVER_STOP_DEADLINE_S = 10.0
#: After this long without exiting, the workers of a server that was sent SIGTERM get one too.
SERVER_STOP_NUDGE_S = 1.5
#: In-process reference passes (the best is kept).


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class ServerProcess:
    """A ``zplex serve`` subprocess with a temporary store, always stopped by :meth:`stop`:
    SIGTERM, then (see :data:`SERVER_STOP_NUDGE_S`) SIGTERM to its workers too, then SIGKILL to
    whatever is left at :data:`SERVER_STOP_DEADLINE_S`; the temporary directory goes with it
    (the server's own temporary files too: its ``TMPDIR`` points inside)."""

    def __init__(
        self,
        workers: int,
        token: str,
        fronts: int | None = None,
        small_tables_from: int | None = None,
    ) -> None:
        self.workers = workers
        self.fronts = fronts
        #: ``--small-tables-from`` of the server (None: the server's default).
        self.small_tables_from = small_tables_from
        self.token = token
        self.directory = Path(tempfile.mkdtemp(prefix="zplex-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self._children: list[psutil.Process] = []
        self._log: IO[bytes] | None = None
        self._extra_dirs: list[Path] = []

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def ready_file(self) -> Path:
        return self.directory / "ready.json"

    def current_ready(self) -> dict[str, Any]:
        """The ready file as the server keeps it now (it rewrites it when it replaces a front
        or a worker); what was read at start if it cannot be read."""
        with contextlib.suppress(OSError, ValueError):
            ready: dict[str, Any] = json.loads(self.ready_file.read_text())
            return ready
        return self.ready

    def start(self) -> None:
        ready_file = self.ready_file
        tmp = self._server_tmpdir()
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            str(self.workers),
            "--store",
            str(self.directory / "store"),
            "--ready-file",
            str(ready_file),
        ]
        if self.fronts is not None:
            cmd += ["--fronts", str(self.fronts)]
        if self.small_tables_from is not None:
            cmd += ["--small-tables-from", str(self.small_tables_from)]
        env = dict(os.environ, ZPLEX_WRITE_TOKEN=self.token)
        if tmp is not None:
            env["TMPDIR"] = str(tmp)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if ready_file.exists():
                with contextlib.suppress(OSError, ValueError):
                    self.ready = json.loads(ready_file.read_text())
                    break
            if self.proc.poll() is not None:
                raise BenchFailure(
                    f"the server exited with status {self.proc.returncode} before it was "
                    f"ready: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchFailure(f"the server was not ready within {SERVER_READY_TIMEOUT_S} s")
            time.sleep(0.02)
        self._remember_children()

    def _server_tmpdir(self) -> Path | None:
        """A ``TMPDIR`` for the server that goes with it, short enough for the ZeroMQ ipc
        socket it creates there (``sun_path`` holds 107 bytes); None if there is none."""
        inside = self.directory / "tmp"
        if len(str(inside)) <= MAX_SERVER_TMPDIR:
            inside.mkdir()
            return inside
        if os.path.isdir("/tmp"):
            self._extra_dirs.append(Path(tempfile.mkdtemp(prefix="zplex-bench-", dir="/tmp")))
            return self._extra_dirs[-1]
        return None

    def _remember_children(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if all(child.pid != known.pid for known in self._children):
                    self._children.append(child)

    @property
    def endpoint(self) -> Endpoint:
        host, port = self.ready["tcp"]
        return Endpoint(str(host), int(port))

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def pids(self) -> list[int]:
        """The server's processes still alive (zombies count as gone)."""
        procs = list(self._children)
        if self.proc is not None:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(self.proc.pid))
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
        return alive

    def stop(self) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                self._remember_children()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(SERVER_STOP_NUDGE_S)
                except subprocess.TimeoutExpired:
                    # A front that waits for its workers: end them the way the front would.
                    self._remember_children()
                    self._signal_children(signal.SIGTERM)
                    try:
                        proc.wait(SERVER_STOP_DEADLINE_S - SERVER_STOP_NUDGE_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            self._signal_children(signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                psutil.wait_procs(self._children, timeout=5)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            for directory in (self.directory, *self._extra_dirs):
                shutil.rmtree(directory, ignore_errors=True)

    def _signal_children(self, sig: signal.Signals) -> None:
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.send_signal(sig)
