"""The bench's closed model (``PassDriver.drive_stream`` without ``--rate``) against the fake
server: each stream keeps at most ``--window`` requests outstanding, sends them in order, counts
every answer, and ends on ``--timeout`` when no answer comes (what is left is ``timeout``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakeserver import FakeServer, digest

from bench.async_client import AsyncClient
from bench.config import BenchConfig
from bench.corpus import Corpus, Request
from bench.passes import PassDriver, PassPlan, Tally
from bench.workload_items import Workload

SIZE = 1000
BODY = b"x" * SIZE


def corpus_of(names: list[str]) -> Corpus:
    requests = [
        Request(name, {"size": SIZE}, "group", SIZE, digest(BODY)) if name == "generate" else
        Request(name, {}, "group", None, None)
        for name in names
    ]  # fmt: skip
    workload = Workload("test", [])
    return Corpus("test", workload, requests, [BODY] * len(requests))


def run_stream(names: list[str], config: BenchConfig, **server: Any) -> tuple[Tally, int]:
    """Drive one stream of ``names`` on one connection; returns the tally and the most
    requests that were ever outstanding at once."""

    async def main() -> tuple[Tally, int]:
        async with FakeServer(**server) as fake:
            client = await AsyncClient.connect(fake.host, fake.port, encodings=("identity",))
            outstanding: set[asyncio.Future[Any]] = set()
            most = 0
            send = client.send

            def counting_send(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
                nonlocal most
                future = send(*args, **kwargs)
                outstanding.add(future)
                future.add_done_callback(outstanding.discard)
                most = max(most, len(outstanding))
                return future

            client.send = counting_send  # type: ignore[method-assign]
            corpus = corpus_of(names)
            tally = Tally()
            plan = PassPlan(0, 0, {(0, 1): list(range(len(names)))})
            driver = PassDriver(config, {}, AsyncClient.connect)
            try:
                await driver.drive_stream(
                    corpus, client, 1, list(range(len(names))), plan, tally, None, None
                )
                await asyncio.sleep(0)  # the cancelled requests' callbacks
            finally:
                await client.close()
            return tally, most

    return asyncio.run(main())


@pytest.mark.timeout(30)
def test_closed_model_keeps_the_window_and_counts_every_answer() -> None:
    config = BenchConfig(window=3)
    tally, most = run_stream(["generate"] * 40, config, delay_s=0.002)
    assert tally.ok == 40 and not tally.errors
    assert tally.answered == {0: list(range(40))}
    assert tally.raw == 40 * SIZE and tally.latency.count == 40
    assert most == 3


@pytest.mark.timeout(30)
def test_closed_model_ends_on_the_timeout_when_nothing_is_answered() -> None:
    config = BenchConfig(window=2, timeout_s=0.3)
    tally, most = run_stream(["generate", "hold", "hold", "hold", "generate"], config)
    # The first answer frees a slot; then two held requests fill the window and nothing
    # more comes: both, and the two never sent, are timeouts.
    assert tally.ok == 1
    assert tally.errors == {"timeout": 4}
    assert most == 2
