"""The pass driver of ``zplex bench --chaos``: :class:`bench.passes.PassDriver` with each
request followed through its retries (the rules are :mod:`bench.chaos`'s), on a new connection
when its own was lost, and every request counted as answered, failed or lost (and retried)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import chaos
from bench.client import AsyncClient, ConnectionLost, ServerError
from bench.config import BenchConfig
from bench.corpus import Corpus
from bench.passes import (
    Connector,
    PassDriver,
    PassPlan,
    Schedule,
    Tally,
    check_response,
    error_code,
    request_args,
    sleep_until,
)


def make_driver(
    config: BenchConfig,
    limits: dict[str, Any],
    connect: Connector,
    connections: frozenset[int] | None = None,
) -> PassDriver:
    """The driver of a phase: with ``--chaos`` a :class:`ChaosPassDriver`."""
    if config.chaos_s is None:
        return PassDriver(config, limits, connect, connections)
    return ChaosPassDriver(config, limits, connect, connections)


class ChaosPassDriver(PassDriver):
    """Retries what a user would (:func:`bench.chaos.is_retryable`), connects included."""

    def __init__(
        self,
        config: BenchConfig,
        limits: dict[str, Any],
        connect: Connector,
        connections: frozenset[int] | None = None,
    ) -> None:
        super().__init__(config, limits, chaos.retrying_connect(connect), connections)

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
        """The same window, schedule and verification as :class:`PassDriver`'s, each request
        followed until it is answered, failed or lost."""
        c = self.config
        window = asyncio.Semaphore(self.capacity(schedule))
        answered = tally.answered.setdefault(plan.number, [])
        conn = chaos.StreamConnection(client, self.connect, context)

        async def follow(index: int, due: float | None) -> None:
            request = corpus.requests[index]
            args = request_args(request, c.digest)
            first_sent = time.monotonic()
            for attempt in range(1, chaos.MAX_ATTEMPTS + 1):
                try:
                    live = await conn.live()
                    response = await asyncio.wait_for(
                        live.send(request.name, args, stream=stream), c.timeout_s
                    )
                except TimeoutError:
                    tally.error("timeout")
                    tally.chaos["lost"] += 1
                    return
                except (ServerError, ConnectionLost, OSError) as exc:
                    if attempt < chaos.MAX_ATTEMPTS and chaos.is_retryable(exc):
                        if attempt == 1:
                            tally.chaos["retried"] += 1
                        await asyncio.sleep(chaos.backoff_s(attempt))
                        continue
                    tally.error(error_code(exc))
                    tally.chaos["failed"] += 1
                    return
                code = check_response(response, request, c.digest)
                if code is not None:
                    tally.error(code)
                    tally.chaos["lost"] += 1
                    return
                start = first_sent if due is None else due
                tally.right_answer(answered, index, response, time.monotonic() - start)
                tally.chaos["answered"] += 1
                return

        async def one(index: int, due: float | None) -> None:
            try:
                await follow(index, due)
            finally:
                window.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for position, index in enumerate(indexes):
                due = schedule.due(plan.first + index) if schedule is not None else None
                if due is not None:
                    await sleep_until(due)
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                try:
                    await asyncio.wait_for(window.acquire(), c.timeout_s)
                except TimeoutError:
                    unsent = len(indexes) - position
                    tally.error("timeout", unsent)
                    tally.chaos["lost"] += unsent  # never answered: counted against the server
                    break
                tasks.append(asyncio.create_task(one(index, due)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await conn.close()
