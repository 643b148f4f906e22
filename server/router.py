"""Which worker serves each stream of each connection, sans I/O.

The router takes the core's events for a connection and the workers' messages, and returns
actions (typed tuples) for the front to carry out: messages to a worker, frames to deliver
to a connection, answers a connection must make itself. It keeps, per connection, each
client stream's route (one worker for the stream's life, unless that worker is lost), the
messages held while a ``stats`` request gathers every process's figures, and the credit owed
back to each stream's worker; and, per worker, how many streams it serves (new streams go to
the least loaded ready worker).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from server.ipc.envelope import ENVELOPE, Envelope, Flag, Kind
from server.ipc.flow import OwedCredit, encode_credit
from server.ipc.messages import (
    Fatal,
    Rejection,
    StreamParams,
    encode_request,
    encode_stream_settings,
)
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    RequestReady,
    RequestRejected,
    ServerEvent,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)

WORKER_LOST_MESSAGE = "the worker serving this stream was lost"

# -- actions ----------------------------------------------------------------------------------


class ToWorker(NamedTuple):
    worker: int
    message: list[bytes]


class Deliver(NamedTuple):
    """Wire-ready frames from a worker for a connection (see ``ServerConnection.send_frames``)."""

    conn: int
    stream: int
    request: int
    data: bytes
    done: bool
    stream_open: bool


class AnswerError(NamedTuple):
    """The connection answers a request itself (no worker serves its stream)."""

    conn: int
    stream: int
    request: int
    code: ErrorCode
    message: str
    retryable: bool
    end_stream: bool


class EndServerStream(NamedTuple):
    conn: int
    stream: int


class FailStream(NamedTuple):
    """Every request in flight on the stream gets this error (its worker was lost)."""

    conn: int
    stream: int
    code: ErrorCode
    message: str


class FailConnection(NamedTuple):
    conn: int
    code: ErrorCode
    message: str


class GatherStats(NamedTuple):
    """Gather every process's figures, then call :meth:`Router.stats_gathered`."""

    token: int


Action = (
    ToWorker | Deliver | AnswerError | EndServerStream | FailStream | FailConnection | GatherStats
)

# -- state ------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Route:
    """A client stream of a connection, served by one worker."""

    worker: int
    inflight: set[int] = dataclasses.field(default_factory=set)  # forwarded, not done
    #: Messages held while a ``stats`` request gathers (an int: the stats request's token,
    #: replaced by its message once gathered); None when nothing is held.
    held: list[list[bytes] | int] | None = None
    client_settings: bytes | None = None  # the last client stream-settings (for a restart)
    ended: bool = False  # the client ended the stream; answers may still be coming
    credit: OwedCredit = dataclasses.field(default_factory=OwedCredit)


@dataclasses.dataclass(slots=True)
class ConnectionRoutes:
    conn: int
    params: StreamParams
    routes: dict[int, Route] = dataclasses.field(default_factory=dict)
    #: Client stream -> worker, for the connection's life (a stream that ends and begins
    #: again stays on its worker, so its new life cannot race the old one's frames).
    assigned: dict[int, int] = dataclasses.field(default_factory=dict)
    local: set[int] = dataclasses.field(default_factory=set)  # streams answered by the front
    reading: bool = True  # the client reads its responses (credit is granted)


class _PendingStats(NamedTuple):
    conn: int
    stream: int
    route: Route
    flags: int
    event: RequestReady


class Router:
    def __init__(self) -> None:
        self.connections: dict[int, ConnectionRoutes] = {}
        self.ready: list[bool] = []
        self.loads: list[int] = []  # open streams routed to each worker
        self._stats: dict[int, _PendingStats] = {}
        self._next_token = 1
        #: The front holds more than max_front_output_bytes for its clients: no credit.
        self.credit_held = False

    # -- workers ------------------------------------------------------------------------

    def worker_ready(self, index: int) -> None:
        while len(self.ready) <= index:
            self.ready.append(False)
            self.loads.append(0)
        self.ready[index] = True
        self.loads[index] = 0

    def connections_using(self, worker: int) -> list[int]:
        """The connections with a stream on ``worker``."""
        return [
            conn_id
            for conn_id, conn in self.connections.items()
            if any(route.worker == worker for route in conn.routes.values())
        ]

    def pick_worker(self) -> int | None:
        """The least loaded ready worker (the lowest index among equals)."""
        best: int | None = None
        for index, ready in enumerate(self.ready):
            if ready and (best is None or self.loads[index] < self.loads[best]):
                best = index
        return best

    def worker_lost(self, index: int) -> list[Action]:
        """Every request in flight on the worker's streams gets ``worker-lost``; a stream
        the client keeps open moves to a live worker, with its encoding settings."""
        if index < len(self.ready):
            self.ready[index] = False
            self.loads[index] = 0
        actions: list[Action] = []
        for conn in self.connections.values():
            for sid, route in list(conn.routes.items()):
                if route.worker != index:
                    continue
                actions.append(
                    FailStream(conn.conn, sid, ErrorCode.WORKER_LOST, WORKER_LOST_MESSAGE)
                )
                del conn.routes[sid]
                del conn.assigned[sid]
                if not route.ended and route.client_settings is not None:
                    # A stream-context decoder loses its history, so such a stream's next
                    # encoded data may not decode on the new worker.
                    new = self._route(conn, sid, actions)
                    if new is not None:
                        new.client_settings = route.client_settings
                        self._to_worker(
                            conn, sid, new, Kind.CLIENT_STREAM_SETTINGS, 0, 0,
                            [route.client_settings], actions,
                        )  # fmt: skip
        return actions

    # -- connections --------------------------------------------------------------------

    def open_connection(self, conn: int, params: StreamParams) -> None:
        self.connections[conn] = ConnectionRoutes(conn, params)

    def set_params(self, conn: int, params: StreamParams) -> None:
        """The connection's negotiated settings, for the streams it opens from now on."""
        self.connections[conn].params = params

    def close_connection(self, conn_id: int) -> list[Action]:
        """The connection is gone: its workers drop its streams."""
        conn = self.connections.pop(conn_id, None)
        if conn is None:
            return []
        workers: list[int] = []
        for route in conn.routes.values():
            if not route.ended:
                self._release(route.worker)
            if route.worker not in workers:
                workers.append(route.worker)
        closed = Envelope(Kind.CONN_CLOSED, conn=conn_id).pack()
        return [ToWorker(worker, [closed]) for worker in workers]

    def hold_credit(self) -> None:
        """The front holds too much for its clients: no stream gets credit until
        :meth:`release_credit` (what is owed is kept)."""
        self.credit_held = True

    def release_credit(self) -> list[Action]:
        self.credit_held = False
        actions: list[Action] = []
        for conn_id, conn in self.connections.items():
            if conn.reading:
                actions += self.resume(conn_id)
        return actions

    def pause(self, conn_id: int) -> None:
        """The client stopped reading: its streams get no more credit."""
        conn = self.connections.get(conn_id)
        if conn is not None:
            conn.reading = False

    def resume(self, conn_id: int) -> list[Action]:
        """The client reads again: grant every stream what it is owed."""
        conn = self.connections.get(conn_id)
        if conn is None:
            return []
        conn.reading = True
        actions: list[Action] = []
        if self.credit_held:
            return actions
        for sid, route in conn.routes.items():
            self._grant(conn, sid, route, route.credit.take(), actions)
        return actions

    # -- events from a connection's core --------------------------------------------------

    def event(self, conn_id: int, event: ServerEvent) -> list[Action]:
        conn = self.connections[conn_id]
        actions: list[Action] = []
        match event:
            case RequestReady():
                self._request(conn, event, actions)
            case RequestRejected():
                self._rejected(conn, event, actions)
            case StreamSettingsReceived(stream_id=sid, settings=settings):
                route = self._route(conn, sid, actions)
                if route is not None:
                    payload = encode_stream_settings(settings)
                    route.client_settings = payload
                    self._to_worker(
                        conn, sid, route, Kind.CLIENT_STREAM_SETTINGS, 0, 0, [payload], actions
                    )
            case StreamEnded(stream_id=sid):
                self._stream_ended(conn, sid, actions)
            case StreamReset(stream_id=sid):
                route = conn.routes.get(sid)
                if route is not None:
                    route.client_settings = None
                    self._to_worker(conn, sid, route, Kind.STREAM_RESET, 0, 0, [], actions)
        return actions

    def _request(self, conn: ConnectionRoutes, event: RequestReady, actions: list[Action]) -> None:
        sid = event.stream_id
        route = self._route(conn, sid, actions)
        if route is None:
            self._answer(
                conn, sid, event.request_id, ErrorCode.OVERLOADED, "no worker is available",
                True, event.end_stream, actions,
            )  # fmt: skip
            return
        flags = (Flag.END_STREAM if event.end_stream else 0) | (
            Flag.HAS_DATA if event.has_data else 0
        )
        route.inflight.add(event.request_id)
        if event.end_stream:
            self._end_route(route)
        if event.name == "stats":
            self._hold_for_stats(conn, sid, route, flags, event, actions)
            return
        parts = encode_request(event.command_map, event.data if event.has_data else None)
        self._to_worker(conn, sid, route, Kind.REQUEST, flags, event.request_id, parts, actions)

    def _rejected(
        self, conn: ConnectionRoutes, event: RequestRejected, actions: list[Action]
    ) -> None:
        sid = event.stream_id
        local = event.code is ErrorCode.TOO_MANY_STREAMS or sid in conn.local
        route = None if local else self._route(conn, sid, actions)
        if route is None:  # a stream the front answers itself, or no worker is up
            self._answer(
                conn, sid, event.request_id, event.code, event.message, event.retryable,
                event.end_stream, actions,
            )  # fmt: skip
            return
        route.inflight.add(event.request_id)
        if event.end_stream:
            self._end_route(route)
        err = Rejection(str(event.code), event.message, event.retryable).encode()
        flags = Flag.END_STREAM if event.end_stream else 0
        self._to_worker(conn, sid, route, Kind.REJECT, flags, event.request_id, [err], actions)

    def _answer(
        self,
        conn: ConnectionRoutes,
        sid: int,
        request_id: int,
        code: ErrorCode,
        message: str,
        retryable: bool,
        end_stream: bool,
        actions: list[Action],
    ) -> None:
        if end_stream:
            conn.local.discard(sid)
        else:
            conn.local.add(sid)
        actions.append(
            AnswerError(conn.conn, sid, request_id, code, message, retryable, end_stream)
        )

    def _stream_ended(self, conn: ConnectionRoutes, sid: int, actions: list[Action]) -> None:
        if sid in conn.local:
            conn.local.discard(sid)
            actions.append(EndServerStream(conn.conn, sid))
            return
        route = conn.routes.get(sid)
        if route is None or route.ended:
            return
        self._end_route(route)
        self._to_worker(conn, sid, route, Kind.STREAM_END, 0, 0, [], actions)
        if not route.inflight:
            del conn.routes[sid]

    # -- stats --------------------------------------------------------------------------

    def _hold_for_stats(
        self,
        conn: ConnectionRoutes,
        sid: int,
        route: Route,
        flags: int,
        event: RequestReady,
        actions: list[Action],
    ) -> None:
        """Later messages of the stream wait behind the stats request, so that its
        responses stay in order."""
        token = self._next_token
        self._next_token += 1
        if route.held is None:
            route.held = []
        route.held.append(token)
        self._stats[token] = _PendingStats(conn.conn, sid, route, flags, event)
        actions.append(GatherStats(token))

    def stats_gathered(self, token: int, snapshot: dict[str, Any]) -> list[Action]:
        pending = self._stats.pop(token, None)
        if pending is None:
            return []
        route, event = pending.route, pending.event
        conn = self.connections.get(pending.conn)
        if conn is None or conn.routes.get(pending.stream) is not route or route.held is None:
            return []  # the connection closed, or the stream's worker was lost meanwhile
        envelope = Envelope(
            Kind.REQUEST, pending.flags, pending.conn, event.request_id, pending.stream
        )
        data = event.data if event.has_data else None
        held = route.held
        held[held.index(token)] = [
            envelope.pack(),
            *encode_request(event.command_map, data, snapshot),
        ]
        if any(isinstance(message, int) for message in held):
            return []
        route.held = None
        return [ToWorker(route.worker, message) for message in held if isinstance(message, list)]

    # -- messages from workers ------------------------------------------------------------

    def frames(self, worker: int, env: Envelope, data: bytes) -> list[Action]:
        """FRAMES from a worker. Frames from a worker that no longer serves the stream
        (it was declared lost), or for a request the stream no longer waits for (answered
        with worker-lost), are dropped: nothing stale reaches a client, and a worker cannot
        write into streams it does not serve."""
        conn = self.connections.get(env.conn)
        if conn is None or conn.assigned.get(env.stream) != worker:
            return []
        route = conn.routes.get(env.stream)
        if env.request and (route is None or env.request not in route.inflight):
            return []
        done = bool(env.flags & Flag.DONE)
        actions: list[Action] = [
            Deliver(
                env.conn, env.stream, env.request, data, done, bool(env.flags & Flag.STREAM_OPEN)
            )
        ]
        if route is not None:
            self._grant(
                conn,
                env.stream,
                route,
                route.credit.wrote(len(data), conn.reading and not self.credit_held),
                actions,
            )
            if done:
                route.inflight.discard(env.request)
            if route.ended and not route.inflight:
                del conn.routes[env.stream]
        return actions

    def fatal(self, worker: int, env: Envelope, fatal: Fatal) -> list[Action]:
        conn = self.connections.get(env.conn)
        if conn is None or conn.assigned.get(env.stream) != worker:
            return []
        return [FailConnection(env.conn, fatal.code, fatal.message)]

    # -- helpers --------------------------------------------------------------------------

    def _route(self, conn: ConnectionRoutes, sid: int, actions: list[Action]) -> Route | None:
        """The stream's route, opening it on its worker if needed (None: no worker is up)."""
        route = conn.routes.get(sid)
        if route is not None and not route.ended:
            return route
        if route is None:
            worker = conn.assigned.get(sid)
            if worker is None or not self.ready[worker]:
                worker = self.pick_worker()
                if worker is None:
                    return None
                conn.assigned[sid] = worker
            route = conn.routes[sid] = Route(worker)
        route.ended = False
        self.loads[route.worker] += 1
        self._to_worker(conn, sid, route, Kind.STREAM_OPEN, 0, 0, [conn.params.encode()], actions)
        return route

    def _end_route(self, route: Route) -> None:
        route.ended = True
        self._release(route.worker)

    def _release(self, worker: int) -> None:
        self.loads[worker] = max(0, self.loads[worker] - 1)

    def _to_worker(
        self,
        conn: ConnectionRoutes,
        sid: int,
        route: Route,
        kind: Kind,
        flags: int,
        request: int,
        parts: list[bytes],
        actions: list[Action],
    ) -> None:
        message = [ENVELOPE.pack(kind, flags, conn.conn, request, sid), *parts]  # Envelope.pack
        if route.held is not None:
            route.held.append(message)
        else:
            actions.append(ToWorker(route.worker, message))

    def _grant(
        self, conn: ConnectionRoutes, sid: int, route: Route, amount: int, actions: list[Action]
    ) -> None:
        if amount:
            envelope = ENVELOPE.pack(Kind.CREDIT, 0, conn.conn, 0, sid)
            actions.append(ToWorker(route.worker, [envelope, encode_credit(amount)]))
