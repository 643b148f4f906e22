"""The passes of a phase and what their requests produced.

Passes. One replay of the workload is a *pass*; every pass uses fresh connections, so every
pass starts with fresh contexts (a context that saw the corpus once would compress its replay
to almost nothing). ``-n N`` runs exactly the first N requests of the endless cycle of passes
(the last pass may be a prefix); ``-d D`` starts passes until D seconds have elapsed and never
cuts one short, so every policy serves whole passes of the same requests (``-d`` may overrun by
up to one pass). Without either, ``-d`` :data:`bench.config.DEFAULT_DURATION_S`.

Load models. Closed (default): each stream keeps ``--window`` requests outstanding and latency
runs from a request's send to its last frame. Open (``--rate R``): request ``k`` of the phase
is due at ``t0 + k / R`` whatever the server's state, passes may overlap, a stream never has
more than the server's ``max_inflight_per_stream`` outstanding (later requests wait in the
client), and latency runs from the *intended* send time, so queueing in the client counts and
there is no coordinated omission.

Verification. The client decodes every response: a body whose BLAKE2b digest differs from the
header's (``digest-mismatch``), whose size is not the object's (``size-mismatch``) or whose
digest is not the stored object's (``content-mismatch``) is an error, as are error-responses
(by their code), a lost connection (``connection-lost``), a failed connect (``connect-failed``)
and a request unanswered within ``--timeout`` (``timeout``). With ``--digest off`` the header
has no digest: the body's own digest is compared with the one the bench knows for it.
Decoding and hashing cost client CPU, and are reported as such (:class:`Tally`,
:func:`check_response`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from bench import stats
from bench.client import AsyncClient, ConnectionLost, Response, ServerError, body_digest
from bench.config import POLICY_CONTEXT, BenchConfig
from bench.corpus import Corpus, Request

#: Passes in flight at once in the open model (bounds the client's memory if the server lags).
MAX_OPEN_PASSES = 8


@dataclasses.dataclass
class Tally:
    """What the requests of one phase (or warm-up) produced."""

    latency: stats.LatencyRecorder = dataclasses.field(default_factory=stats.LatencyRecorder)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    ok: int = 0
    raw: int = 0
    wire: int = 0
    #: Per pass, the request indexes answered correctly (for the ideal of exactly those).
    answered: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    #: --chaos: requests answered, retried, failed and lost (:mod:`bench.chaos`).
    chaos: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def attempted(self) -> int:
        return self.ok + sum(self.errors.values())

    def error(self, code: str, count: int = 1) -> None:
        if count > 0:
            self.errors[code] += count

    def right_answer(
        self, answered: list[int], index: int, response: Response, latency_s: float
    ) -> None:
        """Count request ``index`` answered rightly, ``latency_s`` after it was due."""
        self.latency.record_s(max(0.0, latency_s))
        self.ok += 1
        self.raw += len(response.body)
        self.wire += response.wire_bytes
        answered.append(index)


def request_args(request: Request, digest: bool) -> dict[str, Any]:
    """The arguments the bench sends for ``request``: ``"digest": false`` added with
    ``--digest off``."""
    return request.args if digest else {**request.args, "digest": False}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        return exc.code
    if isinstance(exc, ConnectionLost):
        return "connection-lost"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connect-failed"
    return "client-error"


def check_response(response: Response, request: Request, digest: bool = True) -> str | None:
    """The error code of a wrong answer, or None if it is right. With ``digest`` off (the
    request said ``"digest": false``), the body is checked against the digest the bench knows
    for it (``content-mismatch``), whatever the header holds."""
    if request.size is not None and len(response.body) != request.size:
        return "size-mismatch"
    if not digest:
        if request.digest is not None and body_digest(response.body) != request.digest:
            return "content-mismatch"
        return None
    verified = response.verify_digest()
    if verified is None:
        return "digest-missing"
    if not verified:
        return "digest-mismatch"
    if request.digest is not None and response.header.get("digest") != request.digest:
        return "content-mismatch"
    return None


def settle(
    tally: Tally,
    answered: list[int],
    index: int,
    request: Request,
    digest: bool,
    queued_s: float,
    future: asyncio.Future[Response],
) -> None:
    """Count the outcome of request ``index``; ``queued_s``: how long it waited in the
    client after its due time (open model), counted in its latency."""
    if future.cancelled():
        tally.error("timeout")
        return
    exc = future.exception()
    if exc is not None:
        tally.error(error_code(exc))
        return
    response = future.result()
    code = check_response(response, request, digest)
    if code is not None:
        tally.error(code)
        return
    tally.right_answer(answered, index, response, queued_s + response.latency_s)


async def acquire_slot(window: asyncio.Semaphore, timeout: float) -> None:
    """Take a slot of the window, waiting at most ``timeout`` seconds (TimeoutError). A free
    slot is taken at once: ``wait_for`` costs a task and a timer, more than the rest of the
    client's work on a small request."""
    if window.locked():
        await asyncio.wait_for(window.acquire(), timeout)
    else:
        await window.acquire()  # returns without suspending


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Open model: request ``k`` of the phase is due at ``t0 + k / rate``."""

    t0: float
    rate: float

    def due(self, k: int) -> float:
        return self.t0 + k / self.rate


async def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclasses.dataclass(frozen=True)
class PassPlan:
    """The requests of one pass (``indexes`` into the corpus), per (connection, stream)."""

    number: int
    first: int  # phase-wide sequence number of the pass's first request
    slots: dict[tuple[int, int], list[int]]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.slots.values())


def plan_passes(corpus: Corpus, policy: str, config: BenchConfig) -> Iterator[PassPlan]:
    """The passes of a phase: endless for ``-d``, ``-n`` requests in all otherwise."""
    placement = corpus.placement(policy, config.connections, config.streams)
    length = len(corpus.requests)
    remaining = config.requests
    number = 0
    while remaining is None or remaining > 0:
        count = length if remaining is None else min(length, remaining)
        slots: dict[tuple[int, int], list[int]] = {}
        for index in range(count):
            slots.setdefault(placement[index], []).append(index)
        yield PassPlan(number, number * length, slots)
        number += 1
        if remaining is not None:
            remaining -= count


#: Opens one connection of a phase with the given context (``connect(context=...)``).
Connector = Callable[..., Awaitable[AsyncClient]]


class PassDriver:
    """Replays the passes of one policy on fresh connections from ``connect``, within the
    server's ``limits``, counting what comes back in a :class:`Tally`."""

    def __init__(
        self,
        config: BenchConfig,
        limits: dict[str, Any],
        connect: Connector,
        connections: frozenset[int] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.connect = connect
        #: The connections (indexes) this driver replays; None: all of them. A client process
        #: of ``--clients`` replays its share of every pass (:mod:`bench.client_processes`).
        self.connections = connections

    def capacity(self, schedule: Schedule | None) -> int:
        """Requests outstanding per stream: ``--window`` (closed model), or (open model) the
        server's per-stream limit within its share of ``max_inflight``."""
        c = self.config
        if schedule is None:
            return c.window
        capacity = int(self.limits.get("max_inflight_per_stream", 32))
        return min(capacity, max(1, int(self.limits.get("max_inflight", 256)) // c.streams))

    def _share(self, plan: PassPlan) -> PassPlan:
        """The requests of ``plan`` on this driver's connections."""
        if self.connections is None:
            return plan
        mine = {k: v for k, v in plan.slots.items() if k[0] in self.connections}
        return dataclasses.replace(plan, slots=mine)

    async def run_pass(
        self,
        corpus: Corpus,
        policy: str,
        plan: PassPlan,
        tally: Tally,
        stop_at: float | None,
        schedule: Schedule | None,
    ) -> None:
        context = POLICY_CONTEXT[policy]
        plan = self._share(plan)
        conn_ids = sorted({conn for conn, _stream in plan.slots})
        if schedule is not None:
            await sleep_until(schedule.due(plan.first))
        outcomes = await asyncio.gather(
            *(self.connect(context=context) for _ in conn_ids), return_exceptions=True
        )
        clients: dict[int, AsyncClient] = {}
        try:
            for conn, outcome in zip(conn_ids, outcomes, strict=True):
                if isinstance(outcome, AsyncClient):
                    clients[conn] = outcome
                elif isinstance(outcome, Exception):
                    lost = sum(len(v) for (cn, _s), v in plan.slots.items() if cn == conn)
                    tally.error(error_code(outcome), lost)
                else:
                    raise outcome
            await asyncio.gather(
                *(
                    self.drive_stream(
                        corpus,
                        clients[conn],
                        stream,
                        indexes,
                        plan,
                        tally,
                        stop_at,
                        schedule,
                        context=context,
                    )
                    for (conn, stream), indexes in plan.slots.items()
                    if conn in clients
                )
            )
        finally:
            await asyncio.gather(*(client.close() for client in clients.values()))

    async def drive_stream(
        self,
        corpus: Corpus,
        client: AsyncClient,
        stream: int,
        indexes: list[int],
        plan: PassPlan,
        tally: Tally,
        stop_at: float | None,
        schedule: Schedule | None,
        context: str = "stream",
    ) -> None:
        """Send one stream's requests in order: at most ``window`` outstanding (closed model)
        or at their due times (open model, within the server's per-stream limit). ``context``
        is the connection's (for a new one, :class:`bench.chaos_driver.ChaosPassDriver`)."""
        if schedule is None:
            await self._drive_closed(corpus, client, stream, indexes, plan, tally, stop_at)
            return
        c = self.config
        window = asyncio.Semaphore(self.capacity(schedule))
        answered = tally.answered.setdefault(plan.number, [])
        futures: list[asyncio.Future[Response]] = []

        def settled(index: int, due: float, sent: float, future: asyncio.Future[Response]) -> None:
            window.release()
            request = corpus.requests[index]
            settle(tally, answered, index, request, c.digest, sent - due, future)

        for position, index in enumerate(indexes):
            due = schedule.due(plan.first + index)
            await sleep_until(due)
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            try:
                await acquire_slot(window, c.timeout_s)
            except TimeoutError:
                tally.error("timeout", len(indexes) - position)
                break
            request = corpus.requests[index]
            sent = time.monotonic()
            try:
                args = request_args(request, c.digest)
                future = client.send(request.name, args, stream=stream)
            except (ServerError, ConnectionLost) as exc:
                window.release()
                tally.error(error_code(exc), len(indexes) - position)
                break
            future.add_done_callback(functools.partial(settled, index, due, sent))
            futures.append(future)
        if futures:
            _done, pending = await asyncio.wait(futures, timeout=c.timeout_s)
            for future in pending:
                future.cancel()

    async def _drive_closed(
        self,
        corpus: Corpus,
        client: AsyncClient,
        stream: int,
        indexes: list[int],
        plan: PassPlan,
        tally: Tally,
        stop_at: float | None,
    ) -> None:
        """The closed model: ``window`` requests outstanding, each answer's callback sending
        the next request (no task step, semaphore or timer per request: on small requests
        those cost more than the rest of the client's work). No answer within ``--timeout``
        ends the stream: what is unsent or outstanding counts as ``timeout``."""
        c = self.config
        capacity = self.capacity(None)
        answered = tally.answered.setdefault(plan.number, [])
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outstanding: set[asyncio.Future[Response]] = set()
        position = 0
        stopped = False
        progress = time.monotonic()

        def send_more() -> None:
            nonlocal position, stopped
            while not stopped and position < len(indexes) and len(outstanding) < capacity:
                if stop_at is not None and time.monotonic() >= stop_at:
                    stopped = True
                    break
                index = indexes[position]
                request = corpus.requests[index]
                sent = time.monotonic()
                try:
                    args = request_args(request, c.digest)
                    future = client.send(request.name, args, stream=stream)
                except (ServerError, ConnectionLost) as exc:
                    tally.error(error_code(exc), len(indexes) - position)
                    stopped = True
                    break
                position += 1
                outstanding.add(future)
                future.add_done_callback(functools.partial(settled, index, sent))
            if not outstanding and not finished.done():
                finished.set_result(None)

        def settled(index: int, sent: float, future: asyncio.Future[Response]) -> None:
            nonlocal progress
            outstanding.discard(future)
            progress = time.monotonic()
            settle(tally, answered, index, corpus.requests[index], c.digest, 0.0, future)
            send_more()

        send_more()
        while not finished.done():
            idle = time.monotonic() - progress
            if idle >= c.timeout_s:
                stopped = True
                tally.error("timeout", len(indexes) - position)
                for future in list(outstanding):
                    future.cancel()  # counted as ``timeout`` by ``settled``
                break
            await asyncio.wait([finished], timeout=c.timeout_s - idle)

    async def run_passes(
        self,
        corpus: Corpus,
        policy: str,
        tally: Tally,
        *,
        duration: float | None,
        stop_at: float | None,
        on_pass: Callable[[int], None],
    ) -> int:
        """Run passes until the plans end, or (``duration``) passes started after it, or
        (``stop_at``, warm-up) requests after it; returns the number of passes started. A
        share of the connections with no request in a pass has none in any (every pass
        places the requests alike): it runs no pass, rather than empty ones for ``duration``."""
        c = self.config
        t0 = time.monotonic()
        schedule = Schedule(t0, c.rate) if c.rate is not None else None
        plans = plan_passes(corpus, policy, c)
        started = 0
        if schedule is None:
            for plan in plans:
                if not self._share(plan).slots:
                    break
                if started and duration is not None and time.monotonic() - t0 >= duration:
                    break
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                started += 1
                on_pass(started)
                await self.run_pass(corpus, policy, plan, tally, stop_at, None)
            return started
        in_flight = asyncio.Semaphore(MAX_OPEN_PASSES)
        tasks: list[asyncio.Task[None]] = []

        async def one(plan: PassPlan) -> None:
            try:
                await self.run_pass(corpus, policy, plan, tally, stop_at, schedule)
            finally:
                in_flight.release()

        try:
            for plan in plans:
                if not self._share(plan).slots:
                    break
                begins = schedule.due(plan.first)
                if started and duration is not None and begins - t0 >= duration:
                    break
                if stop_at is not None and begins >= stop_at:
                    break
                await in_flight.acquire()
                started += 1
                tasks.append(asyncio.create_task(one(plan)))
                on_pass(started)
                # Do not run ahead: the next pass is created when it is nearly due.
                await sleep_until(schedule.due(plan.first + plan.size) - 0.05)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return started
