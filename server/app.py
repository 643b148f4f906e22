"""The front process as an application: it wires the connections, the router and the fleet
together, carries out the router's actions, and runs the lifecycle (start the workers and
wait for them, listen, write the ready file, serve until a signal, drain, stop).

The data path: bytes in -> :class:`~server.connection.FrontConnection` -> the core
(``ServerConnection``) -> :class:`~server.router.Router` -> :class:`~server.link.WorkerLink`
-> worker loop -> worker core -> frames -> link -> :class:`~server.fleet.Fleet` -> router ->
the connection's core -> the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
from zmq.auth.thread import ThreadAuthenticator

from server.config import ServeConfig
from server.connection import FrontConnection, FrontCounters
from server.fleet import Fleet, WorkerPool
from server.http import HttpScope, HttpServer
from server.ipc.envelope import Envelope
from server.ipc.messages import Fatal
from server.ipc.remote import HEARTBEAT_INTERVAL_S
from server.link import WorkerLink, curve_router_socket, router_socket
from server.protocol.payloads import ServerSettings
from server.router import (
    Action,
    AnswerError,
    Deliver,
    EndServerStream,
    FailConnection,
    FailStream,
    GatherStats,
    Router,
    ToWorker,
)
from server.stdio import serve_stdio

log = logging.getLogger("zplex.front")

#: Longest temporary directory under which the private ipc:// endpoint is made.
MAX_IPC_BASE = 80
READY_TIMEOUT_S = 60.0


def server_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"zplex/{version('zplex')}"
    except PackageNotFoundError:
        return "zplex/0+unknown"


class FrontApp:
    def __init__(
        self, config: ServeConfig, make_pool: Callable[[str], WorkerPool], ipc_dir: str
    ) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.endpoint = f"ipc://{ipc_dir}/workers"
        self.pool = make_pool(self.endpoint)
        limits = config.limits
        self.server_settings = ServerSettings(
            server=server_name(),
            encodings=config.encodings,
            max_frame_size=limits.max_frame_size,
            workers=self.pool.count,
            limits=limits.to_wire(),
        )
        self.router = Router()
        self.counters = FrontCounters()
        self.fleet = Fleet(
            self.pool.count, self.server_settings.server, limits, self, time.monotonic
        )
        self.zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        local = router_socket(self.zctx)
        local.bind(self.endpoint)
        self.fleet.local = WorkerLink(self.loop, local, self.fleet.from_local)
        self.remote_endpoint: str | None = None
        self._auth: ThreadAuthenticator | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self.connections: dict[int, FrontConnection] = {}
        self._next_conn = 1
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self.http_server: asyncio.Server | None = None
        self.http_address: tuple[str, int] | None = None
        self.started = time.monotonic()
        self.process = psutil.Process()

    # -- carrying out the router's actions ------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case ToWorker(worker=worker, message=message):
                    self.fleet.send(worker, message)
                case GatherStats(token=token):
                    self._spawn(self._gather_stats(token))
                case _:
                    conn = self.connections.get(action.conn)
                    if conn is not None:
                        self._to_connection(conn, action)

    @staticmethod
    def _to_connection(conn: FrontConnection, action: Action) -> None:
        match action:
            case Deliver(stream=stream, request=request, data=data, done=done):
                conn.deliver(stream, request, data, done=done, stream_open=action.stream_open)
            case AnswerError():
                conn.answer_error(
                    action.stream, action.request, action.code, action.message,
                    action.retryable, action.end_stream,
                )  # fmt: skip
            case EndServerStream(stream=stream):
                conn.end_server_stream(stream)
            case FailStream(stream=stream, code=code, message=message):
                conn.fail_stream(stream, code, message)
            case FailConnection(code=code, message=message):
                conn.fail(code, message)

    async def _gather_stats(self, token: int) -> None:
        snapshot = await self.stats_snapshot()
        self.apply(self.router.stats_gathered(token, snapshot))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections (ConnectionHost) ------------------------------------------------------

    def new_connection(self, http: HttpScope | None = None) -> FrontConnection:
        conn = FrontConnection(self, self._next_conn, http)
        self._next_conn += 1
        self.connections[conn.id] = conn
        return conn

    def connection_count(self) -> int:
        return len(self.connections)

    def connection_closed(self, conn: FrontConnection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self.apply(self.router.close_connection(conn.id))

    # -- workers (FleetEvents) ----------------------------------------------------------------

    def worker_ready(self, index: int) -> None:
        self.router.worker_ready(index)
        if self.fleet.local_ready:
            self._ready.set()
        self.write_ready_file()

    def worker_lost(self, index: int) -> None:
        self.apply(self.router.worker_lost(index))
        self.write_ready_file()

    def frames(self, worker: int, env: Envelope, data: bytes) -> None:
        self.apply(self.router.frames(worker, env, data))

    def fatal(self, worker: int, env: Envelope, fatal: Fatal) -> None:
        self.apply(self.router.fatal(worker, env, fatal))

    def _worker_exited(self, index: int, code: int | None) -> None:
        self.fleet.worker_exited(index)

    def _heartbeats(self) -> None:
        self.fleet.heartbeat()
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)

    def _listen_remote(self) -> None:
        """Accept workers from other hosts on ``--worker-listen``."""
        assert self.config.worker_listen is not None and self.config.worker_keys is not None
        sock, self._auth = curve_router_socket(
            self.zctx, self.config.worker_keys, self.config.worker_listen
        )
        self.remote_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.fleet.remote = WorkerLink(self.loop, sock, self.fleet.from_remote)
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)
        log.warning("accepting remote workers on %s", self.remote_endpoint)

    # -- stats ----------------------------------------------------------------------------

    async def stats_snapshot(self) -> dict[str, Any]:
        workers = await self.fleet.gather_stats()
        return {"front": self.front_stats(), "workers": workers}

    def front_stats(self) -> dict[str, Any]:
        cpu = self.process.cpu_times()
        return {
            "pid": os.getpid(),
            "cpu_user": cpu.user,
            "cpu_system": cpu.system,
            "rss": self.process.memory_info().rss,
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "connections": len(self.connections),
            "streams": sum(len(c.routes) for c in self.router.connections.values()),
            "connections_total": self._next_conn - 1,
            "requests": self.counters.requests,
            "bytes_in": self.counters.bytes_in,
            "bytes_out": self.counters.bytes_out,
            "uptime_s": time.monotonic() - self.started,
            "worker_restarts": self.pool.restarts,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def write_ready_file(self) -> None:
        path = self.config.ready_file
        if path is None or not self._ready.is_set():
            return
        if self.address is None and not self.config.stdio:
            return
        pids = self.pool.pids()
        info: dict[str, Any] = {"pid": os.getpid(), "workers": [pids[i] for i in sorted(pids)]}
        if self.address is not None:
            info["tcp"] = [self.address[0], self.address[1]]
        else:
            info["stdio"] = True
        if self.http_address is not None:
            info["http"] = [self.http_address[0], self.http_address[1]]
        if self.remote_endpoint is not None:
            info["worker_endpoint"] = self.remote_endpoint
            info["remote_workers"] = self.fleet.remote_workers()
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=target.parent or ".")
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, target)

    async def start(self, *, tcp: bool = True) -> None:
        if self.config.worker_listen is not None:
            self._listen_remote()
        if self.pool.count == 0:
            self._ready.set()
        self.pool.start(self.loop, self._worker_exited)
        await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        if tcp:
            self.server = await self.loop.create_server(
                self.new_connection, self.config.host, self.config.port, reuse_address=True
            )
            sockname = self.server.sockets[0].getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))
            workers = len(self.fleet.slots)
            log.warning("zplex serving on %s:%d with %d workers", *self.address, workers)
        if self.config.http_port is not None:
            http = HttpServer(self, debugreflect=self.config.http_debugreflect)
            self.http_server = await asyncio.start_server(
                http.handle, self.config.host, self.config.http_port, reuse_address=True
            )
            sockname = self.http_server.sockets[0].getsockname()
            self.http_address = (str(sockname[0]), int(sockname[1]))
            log.warning("zplex HTTP API on http://%s:%d/api/", *self.http_address)
        self.write_ready_file()

    async def shutdown(self) -> None:
        """Stop accepting, send goaway, drain within the deadline, stop the workers."""
        for server in (self.server, self.http_server):
            if server is not None:
                server.close()
        for conn in list(self.connections.values()):
            conn.goaway()
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections.values()):
            conn.close()
        self.pool.quiesce()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.fleet.shutdown()
        await asyncio.sleep(0.05)
        await self.loop.run_in_executor(None, self.pool.stop, 5.0)
        for task in list(self._tasks):
            task.cancel()
        self.fleet.close()
        if self._auth is not None:
            self._auth.stop()
        self.zctx.term()
        if self.config.ready_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.ready_file)


async def serve(config: ServeConfig, make_pool: Callable[[str], WorkerPool]) -> int:
    """Run the server until SIGTERM or SIGINT. ``make_pool(endpoint)`` builds the worker
    supervisor (the CLI hands it the worker entry point)."""
    # The ipc socket's path must fit sun_path (107 bytes): under a long TMPDIR, use /tmp.
    base = tempfile.gettempdir()
    if len(base) > MAX_IPC_BASE and os.path.isdir("/tmp"):
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix="zplex-", dir=base) as ipc_dir:
        app = FrontApp(config, make_pool, ipc_dir)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            app.loop.add_signal_handler(sig, stop.set)
        starting = asyncio.ensure_future(app.start(tcp=not config.stdio))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await app.shutdown()
            return 0
        try:
            starting.result()
            if config.stdio:
                await serve_stdio(app.new_connection(), stop)
        except TimeoutError:
            stopped.cancel()
            log.error("workers did not report ready within %.0f s", READY_TIMEOUT_S)
            await app.shutdown()
            return 1
        await stopped
        log.warning("shutting down")
        await app.shutdown()
    return 0
