"""Tests for the merge of ``--clients`` processes' reports (bench.client_processes): what N
client processes measured adds up exactly to what one client would have recorded."""

from __future__ import annotations

import asyncio
import json
import random
import time

from bench.async_client import AsyncClient
from bench.client_processes import add_report, shares
from bench.config import BenchConfig
from bench.corpus import Corpus, Request
from bench.load_process import tally_report
from bench.passes import PassDriver, Tally
from bench.workload_items import Workload


def _recorded(tally: Tally) -> list[tuple[int, int]]:
    return [
        (step.value_iterated_to, step.count_at_value_iterated_to)
        for step in tally.latency.histogram.get_recorded_iterator()
    ]


def test_merged_histograms_equal_the_sum_of_their_parts() -> None:
    rng = random.Random(8)
    whole = Tally()
    parts = [Tally(), Tally(), Tally()]
    for i in range(3000):
        seconds = rng.lognormvariate(-6, 1.5)  # ~2.5 ms, with a long tail
        whole.latency.record_s(seconds)
        parts[i % 3].latency.record_s(seconds)
    whole.latency.record_s(120.0)  # above the histogram's range: clamped, and counted so
    parts[1].latency.record_s(120.0)
    for k, part in enumerate(parts):
        part.ok, part.raw, part.wire = 10 + k, 1000 * (k + 1), 100 * (k + 1)
        part.error("timeout", k)
        part.answered = {0: [k, k + 3], 1: [k]}
    merged = Tally()
    for part in parts:
        # Through JSON, as the processes send it.
        add_report(merged, json.loads(json.dumps(tally_report(part))))
    assert merged.latency.count == whole.latency.count == 3001
    assert _recorded(merged) == _recorded(whole)  # every bucket, not only percentiles
    assert merged.latency.percentiles_ms() == whole.latency.percentiles_ms()
    assert merged.latency.max_ms() == whole.latency.max_ms()
    assert merged.latency.clamped == 1
    assert (merged.ok, merged.raw, merged.wire) == (33, 6000, 600)
    assert dict(merged.errors) == {"timeout": 3}
    assert sorted(merged.answered[0]) == [0, 1, 2, 3, 4, 5]
    assert sorted(merged.answered[1]) == [0, 1, 2]


def test_an_empty_share_adds_nothing() -> None:
    merged = Tally()
    add_report(merged, tally_report(Tally()))
    assert merged.latency.count == 0 and merged.attempted == 0


def test_shares_split_the_connections() -> None:
    assert shares(5, 2) == [frozenset({0, 2, 4}), frozenset({1, 3})]
    assert shares(2, 2) == [frozenset({0}), frozenset({1})]
    every = [conn for share in shares(7, 3) for conn in share]
    assert sorted(every) == list(range(7))


def test_a_process_whose_share_has_no_request_runs_no_pass() -> None:
    """Every request on connection 1 (few affinity groups, hashed alike): the process with
    connection 0 ends at once with 0 passes, never connecting, instead of starting empty
    passes for the whole -d (tens of thousands, counted as the phase's passes, a core spun)."""
    requests = [Request("get", {"key": f"k{i}"}, "one-group", 10, None) for i in range(4)]
    corpus = Corpus("test", Workload("test", []), requests, [b"x" * 10] * 4)
    slot = next(conn for conn, _stream in corpus.placement("stream", 2, 4))
    connects: list[object] = []

    async def connect(**kwargs: object) -> AsyncClient:
        connects.append(kwargs)
        raise AssertionError("an empty share connects nowhere")

    for rate in (None, 1000.0):
        config = BenchConfig(connections=2, streams=4, duration_s=0.5, rate=rate)
        driver = PassDriver(config, {}, connect, connections=frozenset({1 - slot}))
        passes: list[int] = []
        started = time.monotonic()
        done = asyncio.run(
            driver.run_passes(
                corpus, "stream", Tally(), duration=0.5, stop_at=None, on_pass=passes.append
            )
        )
        assert (done, passes, connects) == (0, [], [])
        assert time.monotonic() - started < 0.4
