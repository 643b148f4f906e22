"""The front process: TCP connections, the protocol state machine, stream -> worker routing
and the ZeroMQ ROUTER that links it to its workers.

On the request path the front parses frames (through the core's :class:`ServerConnection`)
and forwards complete requests to the worker that owns the stream. On the response path it
parses nothing: workers send wire-ready frames, which go to the transport as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import resource
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psutil
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from server.config import ServeConfig
from server.http import HttpScope, HttpServer
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import OwedCredit, encode_credit
from server.ipc.messages import (
    Fatal,
    Ready,
    Rejection,
    StreamParams,
    Welcome,
    WorkerStats,
    encode_request,
    encode_stream_settings,
)
from server.ipc.remote import FRONT_KEY_SECRET, HEARTBEAT_INTERVAL_S, REMOTE_SILENCE_S
from server.link import WorkerLink, router_socket
from server.protocol.encoding import clamp_level, negotiate_encoding
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.payloads import ClientSettings, ServerSettings, StreamSettings
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection, connection_error_frame

log = logging.getLogger("zplex.front")

#: Longest temporary directory under which the private ipc:// endpoint is made.
MAX_IPC_BASE = 80
READY_TIMEOUT_S = 60.0
STATS_TIMEOUT_S = 2.0
#: How often each connection checks its idle and frame timeouts.
TIMER_PERIOD_S = 1.0


class WorkerPool(Protocol):
    """What the front needs of a supervisor (see ``workers.supervisor.Supervisor``)."""

    count: int
    restarts: int

    def start(
        self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int, int | None], None]
    ) -> None: ...

    def pids(self) -> dict[int, int]: ...

    def quiesce(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


def server_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"zplex/{version('zplex')}"
    except PackageNotFoundError:
        return "zplex/0+unknown"


@dataclasses.dataclass
class WorkerSlot:
    index: int
    identity: bytes
    link: WorkerLink
    pid: int | None = None
    ready: bool = False
    streams: int = 0  # active streams routed to it
    remote: bool = False
    host: str = ""
    last_seen: float = 0.0  # remote workers: when it was last heard from


@dataclasses.dataclass
class Route:
    """A client stream of a connection, served by one worker for its whole life."""

    worker: int
    server_open: bool = False  # the server stream c+1 has begun and not ended
    inflight: dict[int, bool] = dataclasses.field(default_factory=dict)  # id -> partial
    held: list[list[bytes]] | None = None  # messages held while a stats request gathers
    client_settings: bytes | None = None  # the last client stream-settings (for a restart)
    ended: bool = False
    credit: OwedCredit = dataclasses.field(default_factory=OwedCredit)


class Connection(asyncio.Protocol):
    def __init__(self, front: Front, conn_id: int, http: HttpScope | None = None) -> None:
        self.front = front
        self.id = conn_id
        self.http = http
        self.sc = ServerConnection(front.config.limits, front.server_settings)
        self.transport: asyncio.Transport | None = None
        self.routes: dict[int, Route] = {}
        self.assigned: dict[int, int] = {}  # client stream id -> worker index
        self.local: dict[int, ServerStreamWriter] = {}  # streams answered by the front itself
        self.params = StreamParams(
            "identity", None, "stream", 32768, http is not None and http.write
        )
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.closing = False
        self.eof = False
        self.write_paused_since: float | None = None
        self._wbuf: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.write(self.sc.initial_bytes())
        if len(self.front.connections) > self.front.config.limits.max_connections:
            self.fail_goaway("too many connections; try again later")
            return
        self._timer = self.front.loop.call_later(TIMER_PERIOD_S, self._check_timers)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = time.monotonic()
        self.last_activity = now
        self.front.bytes_in += len(data)
        for event in self.sc.receive_data(data):
            self._event(event)
            if self.closing:
                return
        if self.sc.partial_frame:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def eof_received(self) -> bool:
        """End of input: answer what is in flight, then close (PROTOCOL.md section 7). Input
        that ends inside a frame or a request is a protocol error: it can never complete."""
        self.eof = True
        if self.sc.partial_frame or self.sc.incomplete_ids():
            self.fail(ErrorCode.PROTOCOL, "the input ended inside a frame or a request")
            return True
        self.sc.start_goaway()
        self._maybe_finish_goaway()
        return True  # keep the write side open until the answers are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        self.front.connection_closed(self)

    def pause_writing(self) -> None:
        # A client that does not read its responses stops being read from (no new work)
        # and gets no more credit (its streams stop sending on the workers).
        self.write_paused_since = time.monotonic()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused_since = None
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        for sid, route in self.routes.items():
            self._grant(sid, route, route.credit.take())

    def _grant(self, sid: int, route: Route, amount: int) -> None:
        if amount:
            envelope = Envelope(Kind.CREDIT, 0, self.id, 0, sid).pack()
            self.front.send(route.worker, [envelope, encode_credit(amount)])

    # -- output ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the client; what one turn of the loop queues goes out in one
        write (many responses arrive from workers in one batch)."""
        if not self._wbuf:
            self.front.loop.call_soon(self.flush)
        self._wbuf.append(data)

    def flush(self) -> None:
        if not self._wbuf:
            return
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.front.bytes_out += len(data)
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > self.front.config.max_output_buffer_bytes:
                log.warning(
                    "connection %d: client does not read its responses; dropping it", self.id
                )
                self._reset()

    def _reset(self) -> None:
        """Drop the connection at once, discarding what the kernel still holds for it."""
        self.closing = True
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def close(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def fail(self, code: ErrorCode, message: str, data: bytes | None = None) -> None:
        """A connection-level error: send it, then close."""
        self.write(data if data is not None else connection_error_frame(code, message))
        self.close()

    def fail_goaway(self, message: str) -> None:
        self.fail(
            ErrorCode.GOAWAY,
            message,
            connection_error_frame(ErrorCode.GOAWAY, message, True, in_flight=[]),
        )

    def goaway(self) -> None:
        ids = self.sc.start_goaway()
        self.write(
            connection_error_frame(
                ErrorCode.GOAWAY, "the server is shutting down", True, in_flight=ids
            )
        )
        self._maybe_finish_goaway()

    def _maybe_finish_goaway(self) -> None:
        if self.sc.goaway and not self.sc.in_flight_ids():
            self.close()

    def _check_timers(self) -> None:
        if self.closing:
            return
        now = time.monotonic()
        limits = self.front.config.limits
        if self.partial_since is not None and now - self.partial_since > limits.frame_timeout_s:
            self.fail(ErrorCode.PROTOCOL, "a frame was not completed within frame_timeout_s")
            return
        paused = self.write_paused_since
        if paused is not None and now - paused > limits.idle_timeout_s:
            log.warning(
                "connection %d: client read nothing for %.0f s; dropping it", self.id, now - paused
            )
            self._reset()
            return
        if self.eof:
            pass  # input ended: only the answers in flight remain
        elif not self.sc.in_flight_ids() and now - self.last_activity > limits.idle_timeout_s:
            log.info("connection %d idle for %.0f s; closing", self.id, limits.idle_timeout_s)
            self.fail_goaway("idle for longer than idle_timeout_s")
            return
        self._timer = self.front.loop.call_later(TIMER_PERIOD_S, self._check_timers)

    # -- events ------------------------------------------------------------------------

    def _event(self, event: ServerEvent) -> None:
        match event:
            case SettingsReceived(settings=settings):
                self.params = self.front.negotiate(settings)
                if self.http is not None:  # over HTTP, only the URL grants write permission
                    self.params = dataclasses.replace(self.params, write=self.http.write)
            case RequestReady():
                self.front.requests += 1
                if self.http is not None and self.http.command not in (
                    "multirequest",
                    event.name,
                ):
                    self._rejected(
                        RequestRejected(
                            event.request_id,
                            event.stream_id,
                            ErrorCode.BAD_REQUEST,
                            f"this URL runs {self.http.command!r}, not {event.name!r}",
                            event.end_stream,
                        )
                    )
                    return
                self._request(event)
            case RequestRejected():
                self._rejected(event)
            case StreamSettingsReceived(stream_id=sid, settings=settings):
                route = self._route(sid)
                if route is not None:
                    payload = encode_stream_settings(settings)
                    route.client_settings = payload
                    self._to_worker(sid, route, Kind.CLIENT_STREAM_SETTINGS, 0, 0, [payload])
            case StreamEnded(stream_id=sid):
                self._stream_ended(sid)
            case StreamReset(stream_id=sid):
                route = self.routes.get(sid)
                if route is not None:
                    route.client_settings = None
                    route.server_open = False
                    self._to_worker(sid, route, Kind.STREAM_RESET, 0, 0, [])
                if sid in self.local:
                    self.local[sid].reset()
            case ConnectionFailed(code=code, message=message, data=data):
                log.info("connection %d: %s error: %s", self.id, code, message)
                self.fail(code, message, data)

    def _route(self, sid: int) -> Route | None:
        """The stream's route, opening it on its worker if needed (None: no worker is up).

        A stream id keeps its worker for the connection's life (unless that worker dies),
        so a reopened stream can never race frames of its previous life on another worker.
        """
        route = self.routes.get(sid)
        if route is not None and not route.ended:
            return route
        if route is None:
            worker = self.assigned.get(sid)
            if worker is None or not self.front.workers[worker].ready:
                worker = self.front.pick_worker()
                if worker is None:
                    return None
                self.assigned[sid] = worker
            route = self.routes[sid] = Route(worker)
        route.ended = False
        self.front.workers[route.worker].streams += 1
        self._to_worker(sid, route, Kind.STREAM_OPEN, 0, 0, [self.params.encode()])
        return route

    def _end_route(self, route: Route) -> None:
        route.ended = True
        self.front.release(route.worker)

    def _to_worker(
        self, sid: int, route: Route, kind: Kind, flags: int, request: int, parts: list[bytes]
    ) -> None:
        message = [Envelope(kind, flags, self.id, request, sid).pack(), *parts]
        if route.held is not None:
            route.held.append(message)
        else:
            self.front.send(route.worker, message)

    def _request(self, event: RequestReady) -> None:
        sid = event.stream_id
        route = self._route(sid)
        if route is None:
            self._answer_locally(
                sid,
                event.request_id,
                ErrorCode.OVERLOADED,
                "no worker is available",
                True,
                event.end_stream,
            )
            return
        flags = (Flag.END_STREAM if event.end_stream else 0) | (
            Flag.HAS_DATA if event.has_data else 0
        )
        route.inflight[event.request_id] = False
        if event.end_stream:
            self._end_route(route)
        data = event.data if event.has_data else None
        if event.name == "stats":
            self._stats_request(sid, route, flags, event)
            return
        parts = encode_request(event.command_map, data)
        self._to_worker(sid, route, Kind.REQUEST, flags, event.request_id, parts)

    def _stats_request(self, sid: int, route: Route, flags: int, event: RequestReady) -> None:
        """Gather every process's figures, then hand the request to the stream's worker;
        later messages of the stream wait so that responses stay in order."""
        if route.held is None:
            route.held = []
        held = route.held
        position = len(held)
        held.append([])  # placeholder, filled when the snapshot is ready

        async def gather() -> None:
            snapshot = await self.front.stats_snapshot()
            data = event.data if event.has_data else None
            held[position] = [
                Envelope(Kind.REQUEST, flags, self.id, event.request_id, sid).pack(),
                *encode_request(event.command_map, data, snapshot),
            ]
            if self.routes.get(sid) is not route:
                return  # the stream's worker was lost meanwhile; the request was answered
            if route.held is held and all(held):
                route.held = None
                for message in held:
                    self.front.send(route.worker, message)

        self.front.spawn_task(gather())

    def _rejected(self, event: RequestRejected) -> None:
        sid = event.stream_id
        local = event.code is ErrorCode.TOO_MANY_STREAMS or sid in self.local
        route = None if local else self._route(sid)
        if route is None:  # a stream the front answers itself, or no worker is up
            self._answer_locally(
                sid, event.request_id, event.code, event.message, event.retryable, event.end_stream
            )
            return
        route.inflight[event.request_id] = False
        if event.end_stream:
            self._end_route(route)
        err = Rejection(str(event.code), event.message, event.retryable).encode()
        flags = Flag.END_STREAM if event.end_stream else 0
        self._to_worker(sid, route, Kind.REJECT, flags, event.request_id, [err])

    def _answer_locally(
        self,
        sid: int,
        request_id: int,
        code: ErrorCode,
        message: str,
        retryable: bool,
        end_stream: bool,
    ) -> None:
        writer = self.local.get(sid)
        if writer is None:
            writer = self.local[sid] = ServerStreamWriter(
                sid + 1, StreamSettings(), self.params.max_frame_size
            )
        self.write(writer.error(request_id, code, message, retryable, end_stream=end_stream))
        self.sc.response_sent(request_id)
        if end_stream:
            del self.local[sid]
        self._maybe_finish_goaway()

    def _stream_ended(self, sid: int) -> None:
        if sid in self.local:
            self.write(self.local.pop(sid).end())
            return
        route = self.routes.get(sid)
        if route is None or route.ended:
            return
        self._end_route(route)
        self._to_worker(sid, route, Kind.STREAM_END, 0, 0, [])
        if not route.inflight:
            del self.routes[sid]

    # -- from workers --------------------------------------------------------------------

    def frames(self, env: Envelope, data: bytes) -> None:
        self.write(data)
        route = self.routes.get(env.stream)
        if route is None:
            return
        reading = self.write_paused_since is None
        self._grant(env.stream, route, route.credit.wrote(len(data), reading))
        route.server_open = bool(env.flags & Flag.STREAM_OPEN)
        if env.request in route.inflight:
            if env.flags & Flag.DONE:
                del route.inflight[env.request]
                self.sc.response_sent(env.request)
                self._maybe_finish_goaway()
            else:
                route.inflight[env.request] = True
        if route.ended and not route.inflight:
            del self.routes[env.stream]

    def worker_lost(self, index: int) -> None:
        """Every request in flight on the worker's streams gets ``worker-lost`` (retryable
        if nothing of it was sent), in order; the last of each stream carries ``end``."""
        for sid, route in list(self.routes.items()):
            if route.worker != index:
                continue
            writer = ServerStreamWriter(sid + 1, StreamSettings(), self.params.max_frame_size)
            writer.begun = route.server_open
            ids = list(route.inflight.items())
            for n, (request_id, partial) in enumerate(ids):
                last = n == len(ids) - 1
                self.write(
                    writer.error(
                        request_id,
                        ErrorCode.WORKER_LOST,
                        "the worker serving this stream was lost",
                        not partial,
                        end_stream=last,
                    )
                )
                self.sc.response_sent(request_id)
            del self.routes[sid]
            del self.assigned[sid]
            if not route.ended and route.client_settings is not None:
                # Replay the client's encoding on the new worker (a stream-context decoder
                # loses its history, so such a stream's next encoded data may not decode).
                new = self._route(sid)
                if new is not None:
                    new.client_settings = route.client_settings
                    self._to_worker(
                        sid, new, Kind.CLIENT_STREAM_SETTINGS, 0, 0, [route.client_settings]
                    )
        self._maybe_finish_goaway()


class Front:
    def __init__(
        self, config: ServeConfig, make_pool: Callable[[str], WorkerPool], ipc_dir: str
    ) -> None:
        self.config = config
        self.endpoint = f"ipc://{ipc_dir}/workers"
        self.pool = make_pool(self.endpoint)
        self.loop = asyncio.get_running_loop()
        self.zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        router = router_socket(self.zctx)
        router.bind(self.endpoint)
        self.local = WorkerLink(self.loop, router, self._from_local)
        self.workers = [WorkerSlot(i, f"w{i}".encode(), self.local) for i in range(self.pool.count)]
        # Remote workers (``--worker-listen``): CURVE-authenticated, watched by heartbeats.
        self.remote: WorkerLink | None = None
        self.remote_endpoint: str | None = None
        self._remote_slots: dict[bytes, WorkerSlot] = {}
        self._auth: ThreadAuthenticator | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self.connections: dict[int, Connection] = {}
        self._next_conn = 1
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._ready = asyncio.Event()
        self._stats_waiters: dict[int, tuple[asyncio.Future[None], dict[int, Any]]] = {}
        self._next_stats = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self.http_server: asyncio.Server | None = None
        self.http_address: tuple[str, int] | None = None
        self.started = time.monotonic()
        self.process = psutil.Process()
        limits = config.limits
        self.server_settings = ServerSettings(
            server=server_name(),
            encodings=config.encodings,
            max_frame_size=limits.max_frame_size,
            workers=self.pool.count,
            limits=limits.to_wire(),
        )

    # -- workers -------------------------------------------------------------------------

    def negotiate(self, settings: ClientSettings) -> StreamParams:
        encoding = negotiate_encoding(settings.encodings, self.config.encodings)
        wish = settings.level if settings.level is not None else self.config.level
        level = clamp_level(encoding, wish, self.config.limits.max_level)
        token = self.config.write_token
        write = (
            token is not None
            and settings.token is not None
            and hmac.compare_digest(token.encode(), settings.token.encode())
        )
        return StreamParams(encoding, level, settings.context, settings.max_frame_size, write)

    def pick_worker(self) -> int | None:
        ready = [w for w in self.workers if w.ready]
        if not ready:
            return None
        return min(ready, key=lambda w: (w.streams, w.index)).index

    def release(self, index: int) -> None:
        slot = self.workers[index]
        slot.streams = max(0, slot.streams - 1)

    def send(self, index: int, message: list[bytes]) -> None:
        slot = self.workers[index]
        slot.link.send(slot.identity, message)

    def spawn_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def worker_exited(self, index: int, code: int | None) -> None:
        slot = self.workers[index]
        slot.ready = False
        slot.pid = None
        slot.streams = 0
        for conn in list(self.connections.values()):
            conn.worker_lost(index)
        self.write_ready_file()

    def _from_local(self, identity: bytes, parts: list[bytes]) -> None:
        self._from_worker(parts)

    def _from_worker(self, parts: list[bytes]) -> None:
        env = Envelope.unpack(parts[0])
        if env.kind is Kind.FRAMES:
            conn = self.connections.get(env.conn)
            if conn is not None:
                conn.frames(env, parts[1])
        elif env.kind is Kind.CONN_FATAL:
            conn = self.connections.get(env.conn)
            if conn is not None:
                fatal = Fatal.decode(parts[1])
                conn.fail(fatal.code, fatal.message)
        elif env.kind is Kind.READY:
            ready = Ready.decode(parts[1])
            slot = self.workers[ready.index]
            slot.pid = ready.pid
            slot.ready = True
            slot.streams = 0
            log.info("worker %d ready (pid %d)", slot.index, slot.pid)
            if all(w.ready for w in self.workers if not w.remote):
                self._ready.set()
            self.write_ready_file()
        elif env.kind is Kind.STATS_REPLY:
            waiter = self._stats_waiters.get(env.conn)
            if waiter is not None:
                future, replies = waiter
                stats = WorkerStats.decode(parts[1])
                replies[stats.index] = stats.to_map()
                if len(replies) >= sum(w.ready for w in self.workers) and not future.done():
                    future.set_result(None)

    # -- remote workers ------------------------------------------------------------------

    def _listen_remote(self) -> None:
        """Accept workers from other hosts on ``--worker-listen``, authenticated with CURVE:
        the front's key pair and the workers' public keys live in ``--worker-keys``."""
        assert self.config.worker_listen is not None and self.config.worker_keys is not None
        keys = Path(self.config.worker_keys)
        public, secret = zmq.auth.load_certificate(keys / FRONT_KEY_SECRET)
        if secret is None:
            raise ValueError(f"{FRONT_KEY_SECRET} has no secret key")
        self._auth = ThreadAuthenticator(self.zctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys))
        sock = router_socket(self.zctx)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        sock.bind(self.config.worker_listen)
        self.remote_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.remote = WorkerLink(self.loop, sock, self._from_remote)
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)
        log.warning("accepting remote workers on %s", self.remote_endpoint)

    def _from_remote(self, identity: bytes, parts: list[bytes]) -> None:
        assert self.remote is not None
        env = Envelope.unpack(parts[0])
        slot = self._remote_slots.get(identity)
        if env.kind is Kind.READY:
            ready = Ready.decode(parts[1])
            if slot is None:
                slot = WorkerSlot(len(self.workers), identity, self.remote, remote=True)
                self.workers.append(slot)
                self._remote_slots[identity] = slot
            elif slot.ready:  # it started over: whatever it held is gone
                self.worker_exited(slot.index, None)
            slot.pid = ready.pid
            slot.host = ready.host
            slot.ready = True
            slot.streams = 0
            slot.last_seen = time.monotonic()
            welcome = Welcome(slot.index, self.server_settings.server, self.config.limits)
            self.send(slot.index, [Envelope(Kind.WELCOME).pack(), welcome.encode()])
            log.warning("remote worker %d joined from %s (pid %d)", slot.index, slot.host, slot.pid)
            self.write_ready_file()
            return
        if slot is None or not slot.ready:
            # Unknown, or declared lost meanwhile: its streams were answered; it starts over.
            self.remote.send(identity, [Envelope(Kind.REJOIN).pack()])
            return
        slot.last_seen = time.monotonic()
        if env.kind is not Kind.HEARTBEAT:
            self._from_worker(parts)

    def _heartbeats(self) -> None:
        now = time.monotonic()
        for slot in self.workers:
            if not (slot.remote and slot.ready):
                continue
            if now - slot.last_seen > REMOTE_SILENCE_S:
                log.warning(
                    "remote worker %d silent for %.0f s: lost", slot.index, now - slot.last_seen
                )
                self.worker_exited(slot.index, None)
            else:
                self.send(slot.index, [Envelope(Kind.HEARTBEAT).pack()])
        self._heartbeat = self.loop.call_later(HEARTBEAT_INTERVAL_S, self._heartbeats)

    async def stats_snapshot(self) -> dict[str, Any]:
        token = self._next_stats
        self._next_stats += 1
        future: asyncio.Future[None] = self.loop.create_future()
        replies: dict[int, Any] = {}
        self._stats_waiters[token] = (future, replies)
        try:
            for slot in self.workers:
                if slot.ready:
                    self.send(slot.index, [Envelope(Kind.STATS, conn=token).pack()])
            if any(w.ready for w in self.workers):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, STATS_TIMEOUT_S)
        finally:
            del self._stats_waiters[token]
        return {
            "front": self.front_stats(),
            "workers": [replies[i] for i in sorted(replies)],
        }

    def front_stats(self) -> dict[str, Any]:
        cpu = self.process.cpu_times()
        return {
            "pid": os.getpid(),
            "cpu_user": cpu.user,
            "cpu_system": cpu.system,
            "rss": self.process.memory_info().rss,
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "connections": len(self.connections),
            "streams": sum(len(c.routes) for c in self.connections.values()),
            "connections_total": self._next_conn - 1,
            "requests": self.requests,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "uptime_s": time.monotonic() - self.started,
            "worker_restarts": self.pool.restarts,
        }

    # -- connections ---------------------------------------------------------------------

    def new_connection(self, http: HttpScope | None = None) -> Connection:
        conn = Connection(self, self._next_conn, http)
        self._next_conn += 1
        self.connections[conn.id] = conn
        return conn

    def connection_closed(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        notified: set[int] = set()
        for route in conn.routes.values():
            if not route.ended:
                self.release(route.worker)
            if route.worker not in notified:
                notified.add(route.worker)
                self.send(route.worker, [Envelope(Kind.CONN_CLOSED, conn=conn.id).pack()])

    # -- lifecycle -----------------------------------------------------------------------

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
            info["remote_workers"] = [
                {"index": w.index, "pid": w.pid, "host": w.host}
                for w in self.workers
                if w.remote and w.ready
            ]
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
        self.pool.start(self.loop, self.worker_exited)
        await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        if tcp:
            self.server = await self.loop.create_server(
                self.new_connection, self.config.host, self.config.port, reuse_address=True
            )
            sockname = self.server.sockets[0].getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))
            log.warning("zplex serving on %s:%d with %d workers", *self.address, len(self.workers))
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
        for slot in self.workers:
            if slot.ready:
                self.send(slot.index, [Envelope(Kind.SHUTDOWN).pack()])
        for link in (self.local, self.remote):
            if link is not None:
                link.flush()
        await asyncio.sleep(0.05)
        await self.loop.run_in_executor(None, self.pool.stop, 5.0)
        for task in list(self._tasks):
            task.cancel()
        for link in (self.local, self.remote):
            if link is not None:
                link.close()
        if self._auth is not None:
            self._auth.stop()
        self.zctx.term()
        if self.config.ready_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.ready_file)


class _StdioTransport(asyncio.Transport):
    """stdin and stdout as one transport for a :class:`Connection`."""

    def __init__(self, reader: asyncio.ReadTransport, writer: asyncio.WriteTransport) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.write(data)

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    def pause_reading(self) -> None:
        self.reader.pause_reading()

    def resume_reading(self) -> None:
        self.reader.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.writer.get_write_buffer_size()


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.data_received(data)

    def eof_received(self) -> bool:
        return self.conn.eof_received()


class _StdoutProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection, done: asyncio.Event) -> None:
        self.conn = conn
        self.done = done

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)
        self.done.set()


async def serve_stdio(front: Front, done: asyncio.Event) -> None:
    """One connection on stdin/stdout (``zplex serve --stdio``), e.g. behind ssh."""
    conn = front.new_connection()
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    reader, _ = await front.loop.connect_read_pipe(lambda: _StdinProtocol(conn), stdin)
    writer, _ = await front.loop.connect_write_pipe(lambda: _StdoutProtocol(conn, done), stdout)
    conn.connection_made(_StdioTransport(reader, writer))


async def serve(config: ServeConfig, make_pool: Callable[[str], WorkerPool]) -> int:
    """Run the server until SIGTERM or SIGINT. ``make_pool(endpoint)`` builds the worker
    supervisor (the CLI hands it the worker entry point)."""
    # The ipc socket's path must fit sun_path (107 bytes): under a long TMPDIR, use /tmp.
    base = tempfile.gettempdir()
    if len(base) > MAX_IPC_BASE and os.path.isdir("/tmp"):
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix="zplex-", dir=base) as ipc_dir:
        front = Front(config, make_pool, ipc_dir)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            front.loop.add_signal_handler(sig, stop.set)
        starting = asyncio.ensure_future(front.start(tcp=not config.stdio))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await front.shutdown()
            return 0
        try:
            starting.result()
            if config.stdio:
                await serve_stdio(front, stop)
        except TimeoutError:
            stopped.cancel()
            log.error("workers did not report ready within %.0f s", READY_TIMEOUT_S)
            await front.shutdown()
            return 1
        await stopped
        log.warning("shutting down")
        await front.shutdown()
    return 0
