"""A front process as an application: it wires the connections, the router and the fleet
together, carries out the router's actions, and runs the lifecycle (wait for the workers,
listen on the shared port, report to the supervisor, serve until a signal, drain, stop).
The supervisor (:mod:`server.cluster`) starts N of them and the workers they share.

The data path: bytes in -> :class:`~server.connection.FrontConnection` -> the core
(``ServerConnection``) -> :class:`~server.router.Router` -> :class:`~server.link.WorkerLink`
-> worker loop -> worker core -> frames -> link -> :class:`~server.fleet.Fleet` -> router ->
the connection's core -> the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from typing import Any

import psutil
import zmq
from zmq.auth.thread import ThreadAuthenticator

from server.cluster import Report, front_endpoint
from server.config import ServeConfig
from server.connection import FrontConnection, FrontCounters
from server.fleet import Fleet
from server.http import HttpScope, HttpServer
from server.ipc.envelope import Envelope
from server.ipc.messages import Fatal
from server.ipc.remote import HEARTBEAT_INTERVAL_S
from server.link import WorkerLink, curve_router_socket, router_socket
from server.logs import banner
from server.peers import FrontPeers
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

log = logging.getLogger("zplex.front")

READY_TIMEOUT_S = 60.0


def server_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"zplex/{version('zplex')}"
    except PackageNotFoundError:
        return "zplex/0+unknown"


class FrontApp:
    """Front ``index`` of ``fronts``: its connections, its router, its view of the workers."""

    def __init__(self, spec: dict[str, Any], report: Report) -> None:
        config: ServeConfig = spec["config"]
        self.config = config
        self.index: int = spec["index"]
        self.report = report
        self.tcp_port: int | None = spec["tcp_port"]
        self.http_port: int | None = spec["http_port"]
        self.loop = asyncio.get_running_loop()
        self.endpoint = front_endpoint(spec["ipc_dir"], self.index)
        limits = config.limits
        self.server_settings = ServerSettings(
            server=server_name(),
            encodings=config.encodings,
            max_frame_size=limits.max_frame_size,
            workers=config.workers,
            limits=limits.to_wire(),
        )
        self.router = Router()
        self.counters = FrontCounters()
        listen = config.worker_listen
        others = [k for k in range(spec["fronts"]) if k != self.index]
        remote_fronts = tuple(remote_endpoint_for(listen, k) for k in others) if listen else ()
        self.fleet = Fleet(
            config.workers, self.server_settings.server, limits, self, time.monotonic,
            remote_fronts, config.worker_silence_s, config.small_tables_from,
            config.allow_delete,
        )  # fmt: skip
        self.peers = FrontPeers(spec["ipc_dir"], self.index, spec["fronts"], self.front_stats)
        self.zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        local = router_socket(self.zctx)
        local.bind(self.endpoint)
        self.fleet.local = WorkerLink(
            self.loop, local, self.fleet.from_local, self.fleet.backlogged
        )
        self.remote_endpoint: str | None = None
        self._auth: ThreadAuthenticator | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._watched: dict[int, int] = {}  # worker index -> pidfd watching its process
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
        slot = self.fleet.slots[index]
        if not slot.remote and slot.pid is not None:
            self._watch(index, slot.pid)
        if self.fleet.local_ready:
            self._ready.set()
        self.report_ready()

    def worker_lost(self, index: int) -> None:
        self._unwatch(index)
        self.apply(self.router.worker_lost(index))
        self.report_ready()

    def frames(self, worker: int, env: Envelope, data: bytes) -> None:
        self.apply(self.router.frames(worker, env, data))

    def fatal(self, worker: int, env: Envelope, fatal: Fatal) -> None:
        self.apply(self.router.fatal(worker, env, fatal))

    def worker_backlogged(self, index: int, backlogged: bool) -> None:
        """A worker whose queue is full stops the connections that feed it from being read
        (no new work for it); the other workers' traffic goes on."""
        reason = f"worker {index}"
        for conn_id in self.router.connections_using(index):
            conn = self.connections.get(conn_id)
            if conn is None:
                continue
            if backlogged:
                conn.hold_reading(reason)
            else:
                conn.release_reading(reason)
        if backlogged:
            log.info("worker %d is not keeping up: its connections wait", index)

    def _check_output(self) -> None:
        """Bound what the front holds for all its clients together: past
        max_front_output_bytes no stream gets credit (so workers stop sending) until the
        clients have taken a quarter of it."""
        buffered = sum(conn.output_buffered for conn in self.connections.values())
        budget = self.config.max_front_output_bytes
        if not self.router.credit_held and buffered > budget:
            log.warning("clients hold %d MiB of responses: credit held", buffered >> 20)
            self.router.hold_credit()
        elif self.router.credit_held and buffered < budget * 3 // 4:
            log.info("clients caught up: credit released")
            self.apply(self.router.release_credit())

    def worker_silent(self, index: int) -> None:
        """A local worker that stopped answering (hung, or stopped) is lost: its requests get
        worker-lost now, and it is killed so that the supervisor replaces it."""
        pid = self.fleet.slots[index].pid
        self.fleet.worker_exited(index)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _watch(self, index: int, pid: int) -> None:
        """Learn of a local worker's death at once: a pidfd becomes readable when the
        process exits (the supervisor, another process, replaces it)."""
        self._unwatch(index)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.loop.call_soon(self._worker_died, index, pid)
            return
        self._watched[index] = fd
        self.loop.add_reader(fd, self._worker_died, index, pid)

    def _unwatch(self, index: int) -> None:
        fd = self._watched.pop(index, None)
        if fd is not None:
            self.loop.remove_reader(fd)
            os.close(fd)

    def _worker_died(self, index: int, pid: int) -> None:
        slot = self.fleet.slots[index]
        self._unwatch(index)
        if slot.pid == pid and slot.ready:
            log.warning(
                "worker %d (pid %d) is gone", index, pid, extra={"worker": index, "pid": pid}
            )
            self.fleet.worker_exited(index)

    def _heartbeats(self) -> None:
        self.fleet.heartbeat()
        self._check_output()
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)

    def _listen_remote(self) -> None:
        """Accept workers from other hosts on ``--worker-listen`` (front k on its port + k)."""
        assert self.config.worker_listen is not None and self.config.worker_keys is not None
        endpoint = remote_endpoint_for(self.config.worker_listen, self.index)
        sock, self._auth = curve_router_socket(self.zctx, self.config.worker_keys, endpoint)
        self.remote_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.fleet.remote = WorkerLink(
            self.loop, sock, self.fleet.from_remote, self.fleet.backlogged
        )
        log.info("front %d accepts remote workers on %s", self.index, self.remote_endpoint)

    # -- stats ----------------------------------------------------------------------------

    async def stats_snapshot(self) -> dict[str, Any]:
        workers, fronts = await asyncio.gather(self.fleet.gather_stats(), self.peers.gather())
        return {"front": self.front_stats(), "fronts": fronts, "workers": workers}

    async def metrics_figures(self) -> dict[str, Any]:
        """For the supervisor's ``/metrics``: this front's figures with its requests by
        command (:mod:`server.request_meter`), and every worker's."""
        workers = await self.fleet.gather_stats()
        front = self.front_stats()
        front["meter"] = self.counters.meter.to_map()
        return {"front": front, "workers": workers}

    def front_stats(self) -> dict[str, Any]:
        cpu = self.process.cpu_times()
        return {
            "index": self.index,
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
            "worker_restarts": self.fleet.losses,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def report_ready(self) -> None:
        """Tell the supervisor (which writes the ready file) that this front serves."""
        if not self._ready.is_set():
            return
        if self.address is None and not self.config.stdio:
            return
        info: dict[str, Any] = {"index": self.index, "pid": os.getpid()}
        if self.remote_endpoint is not None:
            info["worker_endpoint"] = self.remote_endpoint
            info["remote_workers"] = self.fleet.remote_workers()
        self.report(info)

    async def start(self, *, tcp: bool = True) -> None:
        if self.config.worker_listen is not None:
            self._listen_remote()
        self.peers.start()
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)
        if self.fleet.local_ready:
            self._ready.set()
        await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        if tcp:
            self.server = await self.loop.create_server(
                self.new_connection, self.config.host, self.tcp_port, reuse_port=True
            )
            sockname = self.server.sockets[0].getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))
            log.info("front %d serving on %s:%d", self.index, *self.address)
        if self.http_port is not None:
            http = HttpServer(self, debugreflect=self.config.http_debugreflect)
            self.http_server = await asyncio.start_server(
                http.handle, self.config.host, self.http_port, reuse_port=True
            )
            sockname = self.http_server.sockets[0].getsockname()
            self.http_address = (str(sockname[0]), int(sockname[1]))
            if self.index == 0:
                banner.info("zplex HTTP API on http://%s:%d/api/", *self.http_address)
        self.report_ready()

    async def shutdown(self, force: asyncio.Event | None = None) -> None:
        """Stop accepting, send goaway, drain within the deadline (or until ``force`` is
        set). The supervisor stops the local workers once every front has drained; remote
        ones are told here."""
        for server in (self.server, self.http_server):
            if server is not None:
                server.close()
        for conn in list(self.connections.values()):
            conn.goaway()
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self.connections and time.monotonic() < deadline:
            if force is not None and force.is_set():
                log.warning("stopping now: %d connection(s) cut", len(self.connections))
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections.values()):
            conn.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.fleet.shutdown_remote()
        await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        for index in list(self._watched):
            self._unwatch(index)
        self.fleet.close()
        self.peers.close()
        if self._auth is not None:
            self._auth.stop()
        self.zctx.term()


def remote_endpoint_for(listen: str, index: int) -> str:
    """Front ``index`` accepts remote workers on the ``--worker-listen`` port plus its index
    (port 0: any free port)."""
    base, _, port = listen.rpartition(":")
    number = int(port) if port.isdigit() else 0
    return f"{base}:{number + index}" if number else listen
