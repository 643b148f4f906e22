"""``zplex bench --chaos`` without processes (bench/chaos.py, bench/config.py): which errors a
user retries, the backoff, the flags' checks, and how the outcome is reported."""

from __future__ import annotations

import itertools

import pytest

from bench import chaos, tables
from bench.client import ConnectionLost, ServerError
from bench.config import BenchConfig, BenchError
from bench.results import RunResult


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (ServerError("worker-lost", "gone", retryable=True, request_id=1), True),
        # Part of the response had arrived: sending it again could duplicate what was used.
        (ServerError("worker-lost", "gone", retryable=True, request_id=1, partial=True), False),
        (ServerError("worker-lost", "gone", retryable=False, request_id=1), False),
        (ServerError("overloaded", "busy", retryable=True, request_id=1), True),
        (ServerError("shutting-down", "bye", retryable=True, request_id=1), True),
        (ServerError("shutting-down", "goaway", retryable=True), True),  # connection level
        (ServerError("not-found", "no such key", request_id=1), False),
        (ServerError("protocol", "bad frame"), False),
        (ConnectionLost("the connection closed"), True),  # its front was killed: reconnect
        (ConnectionRefusedError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_what_a_user_retries(exc: BaseException, retry: bool) -> None:
    assert chaos.is_retryable(exc) is retry


def test_backoff_doubles_up_to_its_cap() -> None:
    waits = [chaos.backoff_s(n) for n in range(1, chaos.MAX_ATTEMPTS)]
    assert waits[0] == chaos.FIRST_BACKOFF_S
    assert all(b == min(chaos.MAX_BACKOFF_S, 2 * a) for a, b in itertools.pairwise(waits))
    assert chaos.backoff_s(50) == chaos.MAX_BACKOFF_S


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chaos_s": 1.0, "connect": ("127.0.0.1", 7410)}, "not --connect"),
        ({"chaos_s": 0.0}, "--chaos takes a positive"),
        ({"chaos_s": float("inf")}, "--chaos takes a positive"),
        ({"chaos_fronts": True, "fronts": 2}, "goes with --chaos"),
        ({"chaos_s": 1.0, "chaos_fronts": True}, "--fronts N with N > 1"),
        ({"chaos_s": 1.0, "chaos_fronts": True, "fronts": 1}, "--fronts N with N > 1"),
    ],
)
def test_bad_chaos_flags(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


def test_good_chaos_flags() -> None:
    config = BenchConfig(chaos_s=0.5, chaos_fronts=True, fronts=2)
    assert config.describe()["chaos_s"] == 0.5 and config.describe()["chaos_fronts"]


def test_the_outcome_in_the_json_and_the_caption() -> None:
    figures = chaos.chaos_figures(3, {"answered": 1234, "retried": 12, "failed": 1})
    assert figures == {"kills": 3, "answered": 1234, "retried": 12, "failed": 1, "lost": 0}
    run = RunResult.from_measurements(
        workload="w",
        policy="stream",
        encoding="zstd-8mb",
        level=3,
        streams=8,
        connections=2,
        requests=1234,
        duration_s=2.0,
        raw_bytes=10_000,
        wire_bytes=4_000,
        cpu_seconds={},
        errors={"worker-lost": 1},
    )
    run.chaos = figures
    assert run.to_json()["chaos"] == figures
    assert RunResult.from_json(run.to_json()).chaos == figures
    caption = tables.workload_caption([run])
    assert "chaos: stream 3 kills: 1,234 answered, 12 retried, 1 failed, 0 lost" in caption
