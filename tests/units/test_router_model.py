"""Model-based test of the front's sans-I/O router (server/router.py): a Hypothesis state
machine with three worker slots and two connections sends the core's events (requests, rejected
requests, stream-settings, ends, resets), the workers' frames (from the serving worker or a
stale one), worker losses and returns, and connection closes. After every step the actions
must be exactly what a reference model predicts: which worker gets which message in which
order, which streams fail, which requests the front answers itself, and the loads."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.messages import StreamParams
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    RequestReady,
    RequestRejected,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.payloads import StreamSettings, pack
from server.router import (
    WORKER_LOST_MESSAGE,
    Action,
    AnswerError,
    Deliver,
    EndServerStream,
    FailStream,
    Router,
    ToWorker,
)

PARAMS = StreamParams("zstd-8mb", 3, "stream", 32768, False)
WORKERS = (0, 1, 2)
CONNS = (1, 2)
STREAMS = (1, 3, 5)


@dataclasses.dataclass
class ModelRoute:
    worker: int
    ended: bool = False
    inflight: set[int] = dataclasses.field(default_factory=set)
    settings: bool = False  # client stream-settings sent (replayed on a new worker)


@dataclasses.dataclass
class ModelConn:
    routes: dict[int, ModelRoute] = dataclasses.field(default_factory=dict)
    assigned: dict[int, int] = dataclasses.field(default_factory=dict)
    local: set[int] = dataclasses.field(default_factory=set)


def _messages(actions: list[Action]) -> list[tuple[Any, ...]]:
    """Each action as a comparable tuple; messages to workers as (worker, kind, conn, request,
    stream); credit grants left out (their amounts are the flow module's business)."""
    out: list[tuple[Any, ...]] = []
    for action in actions:
        if isinstance(action, ToWorker):
            env = Envelope.unpack(action.message[0])
            if env.kind is not Kind.CREDIT:
                out.append((action.worker, env.kind, env.conn, env.request, env.stream))
        elif isinstance(action, AnswerError):
            out.append(("answer", action.conn, action.stream, action.request, action.code))
        else:
            out.append(action)
    return out


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router = Router()
        self.ready = dict.fromkeys(WORKERS, False)
        self.conns: dict[int, ModelConn] = {}
        for conn in CONNS:
            self.router.open_connection(conn, PARAMS)
            self.conns[conn] = ModelConn()
        self.next_rid = 1

    # -- the model's routing ------------------------------------------------------------------

    def _loads(self) -> dict[int, int]:
        loads = dict.fromkeys(WORKERS, 0)
        for conn in self.conns.values():
            for route in conn.routes.values():
                if not route.ended and self.ready[route.worker]:
                    loads[route.worker] += 1
        return loads

    def _pick(self) -> int | None:
        loads = self._loads()
        live = [w for w in WORKERS if self.ready[w]]
        return min(live, key=lambda w: (loads[w], w)) if live else None

    def _route(self, conn_id: int, sid: int, out: list[tuple[Any, ...]]) -> ModelRoute | None:
        conn = self.conns[conn_id]
        route = conn.routes.get(sid)
        if route is not None and not route.ended:
            return route
        if route is None:
            worker = conn.assigned.get(sid)
            if worker is None or not self.ready[worker]:
                worker = self._pick()
                if worker is None:
                    return None
                conn.assigned[sid] = worker
            route = conn.routes[sid] = ModelRoute(worker)
        route.ended = False
        out.append((route.worker, Kind.STREAM_OPEN, conn_id, 0, sid))
        return route

    def _rid(self) -> int:
        rid = self.next_rid
        self.next_rid += 2
        return rid

    def _check(self, actions: list[Action], expected: list[tuple[Any, ...]]) -> None:
        assert _messages(actions) == expected

    # -- workers ------------------------------------------------------------------------------

    @rule(worker=st.sampled_from(WORKERS))
    def worker_ready(self, worker: int) -> None:
        if self.ready[worker]:
            return
        self.router.worker_ready(worker)
        self.ready[worker] = True

    @precondition(lambda self: any(self.ready.values()))
    @rule(data=st.data())
    def worker_lost(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from([w for w in WORKERS if self.ready[w]]))
        actions = self.router.worker_lost(worker)
        self.ready[worker] = False
        expected: list[tuple[Any, ...]] = []
        for conn_id, conn in self.conns.items():
            for sid, route in list(conn.routes.items()):
                if route.worker != worker:
                    continue
                expected.append(
                    FailStream(conn_id, sid, ErrorCode.WORKER_LOST, WORKER_LOST_MESSAGE)
                )
                del conn.routes[sid]
                del conn.assigned[sid]
                if not route.ended and route.settings:
                    new = self._route(conn_id, sid, expected)
                    if new is not None:
                        new.settings = True
                        expected.append((new.worker, Kind.CLIENT_STREAM_SETTINGS, conn_id, 0, sid))
        self._check(actions, expected)

    # -- the core's events ----------------------------------------------------------------------

    @rule(conn=st.sampled_from(CONNS), sid=st.sampled_from(STREAMS), end=st.booleans())
    def request(self, conn: int, sid: int, end: bool) -> None:
        rid = self._rid()
        event = RequestReady(rid, sid, "echo", {}, (), False, end, pack({"name": "echo"}))
        actions = self.router.event(conn, event)
        expected: list[tuple[Any, ...]] = []
        route = self._route(conn, sid, expected)
        if route is None:
            expected.append(("answer", conn, sid, rid, ErrorCode.OVERLOADED))
            self._local(conn, sid, end)
        else:
            route.inflight.add(rid)
            route.ended = route.ended or end
            expected.append((route.worker, Kind.REQUEST, conn, rid, sid))
        self._check(actions, expected)

    def _local(self, conn: int, sid: int, end: bool) -> None:
        if end:
            self.conns[conn].local.discard(sid)
        else:
            self.conns[conn].local.add(sid)

    @rule(
        conn=st.sampled_from(CONNS),
        sid=st.sampled_from(STREAMS),
        code=st.sampled_from([ErrorCode.TOO_MANY_STREAMS, ErrorCode.OVERLOADED]),
        end=st.booleans(),
    )
    def rejected(self, conn: int, sid: int, code: ErrorCode, end: bool) -> None:
        rid = self._rid()
        actions = self.router.event(conn, RequestRejected(rid, sid, code, "no", end))
        expected: list[tuple[Any, ...]] = []
        local = code is ErrorCode.TOO_MANY_STREAMS or sid in self.conns[conn].local
        route = None if local else self._route(conn, sid, expected)
        if route is None:
            expected.append(("answer", conn, sid, rid, code))
            self._local(conn, sid, end)
        else:
            route.inflight.add(rid)
            route.ended = route.ended or end
            expected.append((route.worker, Kind.REJECT, conn, rid, sid))
        self._check(actions, expected)

    @rule(conn=st.sampled_from(CONNS), sid=st.sampled_from(STREAMS))
    def stream_settings(self, conn: int, sid: int) -> None:
        event = StreamSettingsReceived(sid, StreamSettings("zlib"))
        actions = self.router.event(conn, event)
        expected: list[tuple[Any, ...]] = []
        route = self._route(conn, sid, expected)
        if route is not None:
            route.settings = True
            expected.append((route.worker, Kind.CLIENT_STREAM_SETTINGS, conn, 0, sid))
        self._check(actions, expected)

    @rule(conn=st.sampled_from(CONNS), sid=st.sampled_from(STREAMS))
    def stream_ended(self, conn: int, sid: int) -> None:
        actions = self.router.event(conn, StreamEnded(sid))
        model = self.conns[conn]
        expected: list[tuple[Any, ...]] = []
        route = model.routes.get(sid)
        if sid in model.local:
            model.local.discard(sid)
            expected.append(EndServerStream(conn, sid))
        elif route is not None and not route.ended:
            route.ended = True
            expected.append((route.worker, Kind.STREAM_END, conn, 0, sid))
            if not route.inflight:
                del model.routes[sid]
        self._check(actions, expected)

    @rule(conn=st.sampled_from(CONNS), sid=st.sampled_from(STREAMS))
    def stream_reset(self, conn: int, sid: int) -> None:
        actions = self.router.event(conn, StreamReset(sid))
        route = self.conns[conn].routes.get(sid)
        expected: list[tuple[Any, ...]] = []
        if route is not None:
            route.settings = False
            expected.append((route.worker, Kind.STREAM_RESET, conn, 0, sid))
        self._check(actions, expected)

    # -- the workers' frames --------------------------------------------------------------------

    @precondition(
        lambda self: any(r.inflight for c in self.conns.values() for r in c.routes.values())
    )
    @rule(data=st.data(), done=st.booleans(), stale=st.booleans())
    def frames(self, data: st.DataObject, done: bool, stale: bool) -> None:
        choices = [
            (conn_id, sid, rid)
            for conn_id, conn in self.conns.items()
            for sid, route in conn.routes.items()
            for rid in sorted(route.inflight)
        ]
        conn_id, sid, rid = data.draw(st.sampled_from(choices))
        model = self.conns[conn_id]
        route = model.routes[sid]
        worker = route.worker
        if stale:  # a worker that does not serve the stream (declared lost, say)
            worker = data.draw(st.sampled_from([w for w in WORKERS if w != route.worker]))
        flags = (Flag.DONE if done else 0) | Flag.STREAM_OPEN
        env = Envelope(Kind.FRAMES, flags, conn_id, rid, sid)
        actions = self.router.frames(worker, env, b"frame")
        if stale:
            self._check(actions, [])
            return
        self._check(actions, [Deliver(conn_id, sid, rid, b"frame", done, True)])
        if done:
            route.inflight.discard(rid)
            if route.ended and not route.inflight:
                del model.routes[sid]

    @rule(conn=st.sampled_from(CONNS))
    def close_and_reopen(self, conn: int) -> None:
        model = self.conns[conn]
        workers: list[int] = []
        for route in model.routes.values():
            if route.worker not in workers:
                workers.append(route.worker)
        actions = self.router.close_connection(conn)
        self._check(actions, [(w, Kind.CONN_CLOSED, conn, 0, 0) for w in workers])
        self.router.open_connection(conn, PARAMS)
        del self.conns[conn]  # the router's connections are in opening order too
        self.conns[conn] = ModelConn()

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def routes_and_loads_match(self) -> None:
        router = self.router
        loads = self._loads()
        for worker in WORKERS:
            if worker < len(router.ready):
                assert router.ready[worker] is self.ready[worker]
                if self.ready[worker]:
                    assert router.loads[worker] == loads[worker], (worker, router.loads)
            else:
                assert not self.ready[worker]
        assert router.pick_worker() == self._pick()
        for conn_id, model in self.conns.items():
            routes = router.connections[conn_id]
            assert routes.assigned == model.assigned
            assert set(routes.routes) == set(model.routes)
            for sid, route in model.routes.items():
                real = routes.routes[sid]
                assert (real.worker, real.ended, real.inflight) == (
                    route.worker,
                    route.ended,
                    route.inflight,
                ), sid
                assert (real.client_settings is not None) is route.settings, sid
            assert routes.local == model.local


TestRouterModel = RouterMachine.TestCase


@pytest.mark.slow
class TestRouterModelLongRuns(RouterMachine.TestCase):
    """``make fuzz``: runs of up to 400 steps (a fifth of the profile's examples)."""

    settings = settings(
        stateful_step_count=400, max_examples=max(10, settings.default.max_examples // 5)
    )
