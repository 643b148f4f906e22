"""The bench's side connection asks ``stats`` again when a stopping process lost the
answer (what ``--chaos`` kills cause), and gives up on any other error."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bench import cpu
from bench.client import ConnectionLost, ServerError
from bench.server_process import Endpoint


class FlakyClient:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.asked = 0
        self.closed = False
        self.goaway = None

    async def request(self, name: str, timeout: float) -> Any:
        self.asked += 1
        if self.failures:
            raise self.failures.pop(0)
        return SimpleNamespace(header={"workers": []})


def ask(failures: list[BaseException]) -> tuple[Any, FlakyClient]:
    monitor = cpu.Monitor(Endpoint("127.0.0.1", 1), timeout=1.0, connect_timeout=1.0)
    client = FlakyClient(failures)

    async def connect() -> Any:
        return client

    monitor.connect = connect  # type: ignore[method-assign]

    async def main() -> Any:
        return await monitor.stats()

    return asyncio.run(main()), client


def test_stats_lost_to_stopping_processes_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "STATS_BACKOFF_S", 0.0)
    failures: list[BaseException] = [
        ServerError("worker-lost", "the worker was lost", retryable=True, request_id=1),
        ConnectionLost("front killed"),
        ServerError("overloaded", "busy", retryable=True, request_id=3),
        ServerError("shutting-down", "", retryable=True, request_id=5),
    ]
    header, client = ask(failures)
    assert header == {"workers": []} and client.asked == 5


def test_stats_gives_up_after_its_attempts_and_on_other_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu, "STATS_BACKOFF_S", 0.0)
    lost = [ConnectionLost("gone") for _ in range(cpu.STATS_ATTEMPTS)]
    with pytest.raises(ConnectionLost):
        ask(lost)
    with pytest.raises(ServerError, match="forbidden"):
        ask([ServerError("forbidden", "no", request_id=1)])
