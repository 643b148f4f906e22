"""The front connection's clocks (server/connection.py) without sockets: a client that reads
nothing for longer than ``idle_timeout_s`` is reset (dropped at once, even with requests in
flight), one that reads again is not, and an idle connection with nothing in flight gets a
goaway and a clean close. The connection's clock is a fake one the test moves; the timer
checks run every millisecond, so each outcome is decided by the clock, not by a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from server import connection as connection_module
from server.config import ServeConfig
from server.connection import FrontConnection, FrontCounters
from server.protocol.client_conn import ClientConnection
from server.protocol.events import ConnectionErrorReceived
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ClientSettings, ServerSettings
from server.router import Action, Router

IDLE_S = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Recording(asyncio.Transport):
    """A transport that records what is written and how it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.how = ""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed.done()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed.done():
            self.how = "closed"
            self.closed.set_result(None)

    def abort(self) -> None:
        if not self.closed.done():
            self.how = "reset"
            self.closed.set_result(None)


class Host:
    def __init__(self) -> None:
        self.config = ServeConfig(limits=Limits(idle_timeout_s=IDLE_S))
        self.server_settings = ServerSettings("zplex/test", ENCODINGS, 32768, 1, {})
        self.router = Router()
        self.router.worker_ready(0)
        self.counters = FrontCounters()
        self.actions: list[Action] = []
        self.closed: list[FrontConnection] = []

    def apply(self, actions: list[Action]) -> None:
        self.actions += actions

    def connection_count(self) -> int:
        return 1

    def connection_closed(self, conn: FrontConnection) -> None:
        self.closed.append(conn)


Scenario = Callable[[FrontConnection, Recording, FakeClock], Awaitable[None]]


def run(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(connection_module, "time", clock)
    monkeypatch.setattr(connection_module, "TIMER_PERIOD_S", 0.001)

    async def main() -> None:
        host = Host()
        conn = FrontConnection(host, 1)  # type: ignore[arg-type]
        transport = Recording()
        conn.connection_made(transport)
        try:
            await scenario(conn, transport, clock)
        finally:
            transport.close()
            conn.connection_lost(None)

    asyncio.run(main())


def _request_in_flight(conn: FrontConnection) -> None:
    client = ClientConnection(ClientSettings())
    conn.data_received(client.initiate() + client.send_request(1, "echo", {}, b"x")[1])
    assert conn.sc.in_flight_ids() == [1]  # sent to the worker, not answered


async def _ticks(n: int = 20) -> None:
    """Let the connection's timer run a few checks (they run every millisecond)."""
    for _ in range(n):
        await asyncio.sleep(0.002)


def test_a_client_that_reads_nothing_past_idle_timeout_is_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(conn: FrontConnection, transport: Recording, clock: FakeClock) -> None:
        _request_in_flight(conn)
        conn.pause_writing()
        clock.now += IDLE_S - 1
        await _ticks()
        assert not transport.closed.done()  # paused, but not for long enough yet
        clock.now += 2
        await asyncio.wait_for(asyncio.shield(transport.closed), 5)
        assert transport.how == "reset"

    run(scenario, monkeypatch)


def test_a_client_that_reads_again_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(conn: FrontConnection, transport: Recording, clock: FakeClock) -> None:
        _request_in_flight(conn)
        conn.pause_writing()
        clock.now += IDLE_S - 1
        conn.resume_writing()
        clock.now += IDLE_S  # long after the pause, but it ended; a request is in flight
        await _ticks()
        assert not transport.closed.done()

    run(scenario, monkeypatch)


def test_an_idle_connection_gets_a_goaway_and_a_clean_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(conn: FrontConnection, transport: Recording, clock: FakeClock) -> None:
        client = ClientConnection(ClientSettings())
        conn.data_received(client.initiate())
        clock.now += IDLE_S + 1
        await asyncio.wait_for(asyncio.shield(transport.closed), 5)
        assert transport.how == "closed"
        events = client.receive_data(bytes(transport.data))
        (goaway,) = [e for e in events if isinstance(e, ConnectionErrorReceived)]
        assert goaway.error.code == "goaway"
        assert goaway.error.details.get("in_flight", []) == []

    run(scenario, monkeypatch)
