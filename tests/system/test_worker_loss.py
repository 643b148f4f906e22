"""Losing a worker, and draining on SIGTERM, on real processes; every outcome is decided by
what the client observed or by a stopped process, never by a sleep."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from serverproc import TOKEN, ServerProcess, running_server

from bench.client import Client
from server.protocol.client_conn import ClientConnection
from server.protocol.events import (
    ConnectionErrorReceived,
    ResponseBody,
    ResponseComplete,
    ResponseError,
)
from server.protocol.payloads import ClientSettings

pytestmark = pytest.mark.timeout(120)


class RawClient:
    """A client connection on a plain socket, read only when the test says so."""

    def __init__(self, srv: ServerProcess, **settings: Any) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        self.conn = ClientConnection(ClientSettings(**settings))
        self.events: list[Any] = []
        self.sock.sendall(self.conn.initiate())

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, stream: int, name: str, **args: Any) -> int:
        rid, data = self.conn.send_request(stream, name, args)
        self.sock.sendall(data)
        return rid

    def read_until(self, done: Callable[[list[Any]], bool], limit: float = 20) -> list[Any]:
        deadline = time.monotonic() + limit
        while not done(self.events):
            assert time.monotonic() < deadline, f"not seen in time; events: {self.events[-5:]}"
            data = self.sock.recv(1 << 20)
            assert data, "the server closed the connection"
            self.events += self.conn.receive_data(data)
        return self.events

    def outcome(self, rid: int, limit: float = 20) -> Any:
        """The request's ResponseComplete or ResponseError, reading until it is there."""

        def find(events: list[Any]) -> Any:
            return next(
                (
                    e
                    for e in events
                    if isinstance(e, ResponseComplete | ResponseError) and e.request_id == rid
                ),
                None,
            )

        self.read_until(lambda events: find(events) is not None, limit)
        return find(self.events)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with suppress(ProcessLookupError):  # killed meanwhile, and already reaped by the front
            os.kill(pid, signal.SIGCONT)


def test_loss_before_any_response_is_retryable_and_other_workers_carry_on(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, workers=2) as srv, ExitStack() as stack:
        w0, _w1 = srv.worker_pids()
        client = stack.enter_context(RawClient(srv))
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)  # on w0
        assert isinstance(client.outcome(client.request(3, "echo")), ResponseComplete)  # on w1
        with stopped(w0):  # it can no longer answer anything it is sent
            held = client.request(1, "generate", size=1000)
            os.kill(w0, signal.SIGKILL)
        other = client.request(3, "generate", size=1000)
        lost = client.outcome(held)
        assert isinstance(lost, ResponseError)
        assert lost.error.code == "worker-lost" and lost.error.retryable
        assert isinstance(client.outcome(other), ResponseComplete)
        # The stream goes on, on a live worker.
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)


def test_loss_after_part_of_the_response_is_not_retryable(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as srv, ExitStack() as stack:
        w0, _w1 = srv.worker_pids()
        client = stack.enter_context(RawClient(srv, encodings=("identity",)))
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)  # on w0
        assert isinstance(client.outcome(client.request(3, "echo")), ResponseComplete)  # on w1
        # 48 MB of incompressible data: far more than the stream's credit, so the worker
        # is still holding most of it when the client has seen the first body bytes.
        big = client.request(1, "generate", size=48_000_000, kind="random")
        client.read_until(lambda ev: any(isinstance(e, ResponseBody) for e in ev))
        os.kill(w0, signal.SIGKILL)
        other = client.request(3, "echo")
        lost = client.outcome(big)
        assert isinstance(lost, ResponseError)
        assert lost.error.code == "worker-lost" and not lost.error.retryable
        assert lost.partial
        assert isinstance(client.outcome(other), ResponseComplete)


def test_a_replacement_worker_gets_the_streams_encoding_settings(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as srv:
        w0, _w1 = srv.worker_pids()
        with Client.connect("127.0.0.1", srv.port, token=TOKEN, timeout=20) as client:
            client.set_data_encoding(1, "zstd-8mb", 3, context="request")
            assert client.put("a", b"x" * 10_000, stream=1).ok
            os.kill(w0, signal.SIGKILL)
            srv.wait_for(lambda: srv.worker_pids()[0] != w0)
            # No new stream-settings from the client: the front replayed them.
            assert client.put("b", b"y" * 10_000, stream=1).ok
            assert client.get("b", stream=3).body == b"y" * 10_000


def front_requests(probe: Client) -> int:
    """Requests the front has read, on every connection (this one's included)."""
    return int(probe.stats(stream=1).header["front"]["requests"])


def test_sigterm_drains_the_requests_in_flight(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as srv, ExitStack() as stack:
        w0, _w1 = srv.worker_pids()
        client = stack.enter_context(RawClient(srv))
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)  # w0
        with Client.connect("127.0.0.1", srv.port, timeout=20) as probe:
            before = front_requests(probe)  # the probe's stream is on w1
            assert isinstance(client.outcome(client.request(3, "echo")), ResponseComplete)  # w0
            with stopped(w0):
                held = [client.request(1, "generate", size=5000), client.request(3, "echo")]
                # The front has read both (and answers none: their worker is stopped).
                deadline = time.monotonic() + 20
                while front_requests(probe) < before + 4:
                    assert time.monotonic() < deadline
                srv.proc.send_signal(signal.SIGTERM)
                events = client.read_until(
                    lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
                )
                (goaway,) = [e for e in events if isinstance(e, ConnectionErrorReceived)]
                assert goaway.error.code == "goaway" and goaway.error.retryable
                assert goaway.error.details["in_flight"] == held
                refused = client.request(1, "echo")
        # The worker goes on: what was in flight is answered, the later request refused.
        assert all(isinstance(client.outcome(rid), ResponseComplete) for rid in held)
        late = client.outcome(refused)
        assert isinstance(late, ResponseError)
        assert late.error.code == "shutting-down" and late.error.retryable
        client.sock.settimeout(20)
        assert client.sock.recv(1 << 16) == b""  # drained: the front closes the connection
        assert srv.proc.wait(20) == 0
