"""Tests for the merge of ``--clients`` processes' reports (bench.client_processes): what N
client processes measured adds up exactly to what one client would have recorded."""

from __future__ import annotations

import json
import random

from bench.client_processes import add_report, shares
from bench.load_process import tally_report
from bench.passes import Tally


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
