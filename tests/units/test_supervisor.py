"""Worker processes: replaced when they die, with a backoff when they die at start-up."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from workers.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)


def crash_at_start(config: dict[str, Any]) -> None:
    sys.exit(3)


def run_for(seconds: float, config: dict[str, Any]) -> None:
    time.sleep(seconds)


def test_crash_loop_backs_off() -> None:
    exits: list[tuple[int, int | None]] = []

    async def main() -> Supervisor:
        pool = Supervisor(1, crash_at_start, lambda index: {})
        pool.start(asyncio.get_running_loop(), lambda index, code: exits.append((index, code)))
        await asyncio.sleep(2.0)
        pool.stop(timeout=1.0)
        return pool

    pool = asyncio.run(main())
    # A tight loop would restart it every ~0.1 s; with the backoff (0.1, 0.2, 0.4, 0.8 s...)
    # about four deaths fit in two seconds.
    assert 2 <= len(exits) <= 6, exits
    assert all(code == 3 for _index, code in exits)
    assert pool.procs == {}


def test_stop_does_not_respawn() -> None:
    exits: list[int] = []

    async def main() -> tuple[Supervisor, int]:
        pool = Supervisor(2, run_for_short, lambda index: {})
        pool.start(asyncio.get_running_loop(), lambda index, code: exits.append(index))
        await asyncio.sleep(0.5)
        started = len(pool.pids())
        pool.quiesce()
        await asyncio.sleep(1.5)  # they exit by themselves meanwhile
        pool.stop(timeout=1.0)
        return pool, started

    pool, started = asyncio.run(main())
    assert started == 2
    assert exits == []  # once stopping, an exit is neither reported nor replaced
    assert pool.procs == {}


def run_for_short(config: dict[str, Any]) -> None:
    run_for(0.8, config)
