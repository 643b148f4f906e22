"""The server as a group of processes: ``zplex serve`` runs this supervisor, which starts the
worker pool and N front processes, restarts whichever dies, writes the ready file, and on
SIGTERM or SIGINT drains every front before it stops the workers.

- The fronts accept on one TCP port (and one HTTP port) with ``SO_REUSEPORT``: the kernel
  spreads new connections over them. The supervisor reserves each port by binding it (without
  listening) for the life of the server, so a port of 0 becomes a fixed port that a restarted
  front binds again.
- Every worker serves every front: front ``k`` binds ``ipc://<dir>/front<k>`` and each local
  worker connects to all of them. A front that dies loses only its own connections; its
  replacement binds the same endpoint and the workers join it again.
- Each front reports to the supervisor over a pipe (``ready`` with its address and the
  workers it has); the ready file is written once every front has reported, and kept current.
- With ``--metrics-port`` it serves Prometheus metrics, gathered from the fronts over the
  same pipes (:mod:`server.metrics_endpoint`).
- With ``--stdio`` the one front runs inside this process (stdin and stdout are its
  connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from server.config import ServeConfig
from server.logs import banner
from server.stopping import DRAIN, FORCE, Stopping

log = logging.getLogger("zplex.cluster")

#: Longest temporary directory under which the private ipc:// endpoints are made.
MAX_IPC_BASE = 80
#: Extra seconds the supervisor waits for a front beyond its drain deadline.
FRONT_STOP_MARGIN_S = 5.0
WORKER_STOP_S = 5.0
#: How long the fronts (which wait for their workers) may take to serve.
READY_TIMEOUT_S = 70.0

Report = Callable[[dict[str, Any]], None]


class Pool(Protocol):
    """What the supervisor needs of a process pool (``workers.supervisor.Supervisor``)."""

    count: int
    restarts: int

    def start(
        self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int, int | None], None]
    ) -> None: ...

    def pids(self) -> dict[int, int]: ...

    def quiesce(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


class Layout(Protocol):
    """Builds the pools once the supervisor knows where the processes meet."""

    def workers(self, endpoints: tuple[str, ...]) -> Pool: ...

    def fronts(self, front_config: Callable[[int], dict[str, Any]]) -> Pool: ...

    async def run_front_here(
        self, spec: dict[str, Any], report: Report, stopping: Stopping
    ) -> int: ...


IPC_PREFIX = "zplex-"
OWNER_FILE = "owner.pid"


def ipc_base() -> str:
    # An ipc socket's path must fit sun_path (107 bytes): under a long TMPDIR, use /tmp.
    base = tempfile.gettempdir()
    if len(base) > MAX_IPC_BASE and os.path.isdir("/tmp"):
        base = "/tmp"
    return base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_ipc(base: str) -> list[str]:
    """Remove the ipc directories of servers that died without cleaning up (``kill -9``):
    those whose owner file names a process that no longer exists. Returns what it removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(IPC_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                owner = int(Path(entry.path, OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not ours, or still being made
            if not _alive(owner):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


@contextlib.contextmanager
def ipc_directory() -> Iterator[str]:
    """A private directory for the server's ipc:// endpoints, marked with this process's
    pid so that a later server can remove it if this one is killed."""
    base = ipc_base()
    for path in sweep_stale_ipc(base):
        log.info("removed %s, left by a server that was killed", path)
    with tempfile.TemporaryDirectory(prefix=IPC_PREFIX, dir=base) as path:
        Path(path, OWNER_FILE).write_text(str(os.getpid()))
        yield path


def front_endpoint(ipc_dir: str, index: int) -> str:
    return f"ipc://{ipc_dir}/front{index}"


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` with SO_REUSEPORT and do not listen: the port is ours (a port of 0
    becomes a fixed one) and every front can bind it too.

    SO_REUSEPORT would also let this server share a port another server of the same user
    listens on (the kernel would then spread clients over two unrelated servers), so the port
    is first bound without it: that fails, ``address in use``, while anything listens there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise  # the host names no address: the caller names the flag
        except OSError as exc:
            raise OSError(exc.errno, f"{host}:{port}: {exc.strerror}") from None
        port = int(probe.getsockname()[1])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Cluster:
    def __init__(self, config: ServeConfig, layout: Layout, ipc_dir: str) -> None:
        self.config = config
        self.layout = layout
        self.ipc_dir = ipc_dir
        self.loop = asyncio.get_running_loop()
        self.fronts_count = 1 if config.stdio else config.fronts
        self.ports: list[socket.socket] = []
        self.tcp_port: int | None = None
        self.http_port: int | None = None
        if not config.stdio:
            self.tcp_port = self._reserve(config.port)
        if config.http_port is not None:
            self.http_port = self._reserve(config.http_port)
        endpoints = tuple(front_endpoint(ipc_dir, k) for k in range(self.fronts_count))
        self.workers = layout.workers(endpoints)
        self.fronts: Pool | None = None
        self.reports: dict[int, dict[str, Any]] = {}
        self._pipes: dict[int, multiprocessing.connection.Connection] = {}
        self.all_ready = asyncio.Event()
        #: Set when a front dies before every front served: the server cannot start.
        self.failed = asyncio.Event()
        #: Called with the fronts' answers to ``{"figures": token}`` (server.metrics_endpoint).
        self.on_figures: Callable[[int, dict[str, Any]], None] | None = None
        self.metrics_address: tuple[str, int] | None = None

    def _reserve(self, port: int) -> int:
        sock = reserve_port(self.config.host, port)
        self.ports.append(sock)
        return int(sock.getsockname()[1])

    def front_spec(self, index: int) -> dict[str, Any]:
        """What front ``index`` needs to know (its config with the reserved ports)."""
        return {
            "config": self.config,
            "index": index,
            "fronts": self.fronts_count,
            "ipc_dir": self.ipc_dir,
            "tcp_port": self.tcp_port,
            "http_port": self.http_port,
        }

    def _front_config(self, index: int) -> dict[str, Any]:
        """Called at each (re)start of front ``index``: a fresh pipe for its reports."""
        old = self._pipes.pop(index, None)
        if old is not None:
            self._forget_pipe(old)
        ours, theirs = multiprocessing.Pipe()
        self._pipes[index] = ours
        self.loop.add_reader(ours.fileno(), self._on_pipe, index, ours)
        spec = self.front_spec(index)
        spec["channel"] = theirs
        return spec

    def tell_fronts(self, message: Any) -> int:
        """Send ``message`` to every front; returns how many it reached."""
        sent = 0
        for pipe in list(self._pipes.values()):
            with contextlib.suppress(OSError):
                pipe.send(message)
                sent += 1
        return sent

    def restarts(self) -> dict[str, int]:
        """Processes replaced so far, by role."""
        fronts = self.fronts.restarts if self.fronts is not None else 0
        return {"front": fronts, "worker": self.workers.restarts}

    def _forget_pipe(self, pipe: multiprocessing.connection.Connection) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(pipe.fileno())
        pipe.close()

    def _on_pipe(self, index: int, pipe: multiprocessing.connection.Connection) -> None:
        try:
            while pipe.poll():
                self.report(index, pipe.recv())
        except (EOFError, OSError):  # the front is gone; its sentinel tells the pool
            self._forget_pipe(pipe)
            if self._pipes.get(index) is pipe:
                del self._pipes[index]

    def report(self, index: int, message: dict[str, Any]) -> None:
        if "figures" in message:  # an answer for /metrics, not a report
            if self.on_figures is not None:
                self.on_figures(index, message)
            return
        self.reports[index] = message
        if len(self.reports) == self.fronts_count:
            self.all_ready.set()
        self.write_ready_file()

    def _front_exited(self, index: int, code: int | None) -> None:
        self.reports.pop(index, None)
        if not self.all_ready.is_set():
            log.error("front %d exited with %s before serving", index, code)
            self.failed.set()
            return
        self.write_ready_file()

    def _worker_exited(self, index: int, code: int | None) -> None:
        pass  # the fronts see it themselves (they watch each worker's pid)

    # -- the ready file -------------------------------------------------------------------

    def ready_info(self) -> dict[str, Any]:
        pids = self.workers.pids()
        fronts = [self.reports[k] for k in sorted(self.reports)]
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "fronts": [int(r["pid"]) for r in fronts],
            "workers": [pids[i] for i in sorted(pids)],
        }
        if self.tcp_port is not None:
            info["tcp"] = [self.config.host, self.tcp_port]
        else:
            info["stdio"] = True
        if self.http_port is not None:
            info["http"] = [self.config.host, self.http_port]
        if self.metrics_address is not None:
            info["metrics"] = list(self.metrics_address)
        remote = [r for r in fronts if r.get("worker_endpoint")]
        if remote:
            info["worker_endpoint"] = remote[0]["worker_endpoint"]
            info["worker_endpoints"] = [r["worker_endpoint"] for r in remote]
            info["remote_workers"] = remote[0].get("remote_workers", [])
        return info

    def write_ready_file(self) -> None:
        path = self.config.ready_file
        if path is None or not self.all_ready.is_set():
            return
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=target.parent or ".")
        with os.fdopen(fd, "w") as f:
            json.dump(self.ready_info(), f)
        os.replace(tmp, target)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.workers.start(self.loop, self._worker_exited)
        if not self.config.stdio:
            self.fronts = self.layout.fronts(self._front_config)
            self.fronts.start(self.loop, self._front_exited)

    async def stop(self, stopping: Stopping) -> None:
        """Drain every front (each answers what it holds, within its drain deadline; at
        once if ``stopping.force`` is set meanwhile), then stop the workers. No process is
        replaced meanwhile."""
        self.workers.quiesce()
        if self.fronts is not None:
            self.fronts.quiesce()
            self.tell_fronts(FORCE if stopping.force.is_set() else DRAIN)
            forced = asyncio.ensure_future(stopping.force.wait())
            forced.add_done_callback(lambda _: self.tell_fronts(FORCE))
            timeout = self.config.drain_timeout_s + FRONT_STOP_MARGIN_S
            await self.loop.run_in_executor(None, self.fronts.stop, timeout)
            forced.cancel()
        await self.loop.run_in_executor(None, self.workers.stop, WORKER_STOP_S)
        for pipe in list(self._pipes.values()):
            self._forget_pipe(pipe)
        for sock in self.ports:
            sock.close()
        if self.config.ready_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.ready_file)


async def _until_stopped(cluster: Cluster, stop: asyncio.Event) -> int:
    """Wait until every front serves, then until ``stop``; 1 if the server cannot start."""
    ready = asyncio.ensure_future(cluster.all_ready.wait())
    failed = asyncio.ensure_future(cluster.failed.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {ready, failed, stopped}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if not done or failed in done:
            log.error("the server could not start (see the lines above)")
            return 1
        if ready in done:
            banner.info(
                "zplex serving on %s:%s with %d front(s) and %d worker(s)",
                cluster.config.host, cluster.tcp_port, cluster.fronts_count,
                cluster.workers.count,
            )  # fmt: skip
            await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        return 0
    finally:
        for task in (ready, failed, stopped):
            task.cancel()


async def serve(config: ServeConfig, layout: Layout) -> int:
    """Run the server until SIGTERM or SIGINT."""
    with ipc_directory() as ipc_dir:
        cluster = Cluster(config, layout, ipc_dir)
        metrics = None
        if config.metrics_port is not None:
            from server.metrics_endpoint import MetricsEndpoint

            metrics = MetricsEndpoint(cluster, cluster.loop)
            host = config.metrics_host or config.host
            cluster.metrics_address = metrics.start(host, config.metrics_port)
        stopping = Stopping()
        stopping.catch_signals(cluster.loop)
        try:
            cluster.start()
            if config.stdio:
                report = functools.partial(cluster.report, 0)
                status = await layout.run_front_here(cluster.front_spec(0), report, stopping)
                log.info("shutting down")
            else:
                status = await _until_stopped(cluster, stopping.drain)
            await cluster.stop(stopping)
        finally:
            if metrics is not None:
                await cluster.loop.run_in_executor(None, metrics.stop)
    return status
