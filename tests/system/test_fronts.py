"""N front processes on one port sharing one worker pool (``zplex serve --fronts N``), on
real processes: both fronts get connections, a front's death leaves the other's connections
alone and its replacement serves, and SIGTERM drains every front."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import pytest
from serverproc import TOKEN, ServerProcess, running_server
from test_worker_loss import RawClient, stopped

from bench.client import Client, ConnectionLost
from server.protocol.events import ConnectionErrorReceived, ResponseComplete, ResponseHeader

pytestmark = pytest.mark.timeout(120)

#: Connections tried before giving up on reaching a given front (the kernel spreads them by
#: a hash of the addresses: 64 misses in a row has a chance of 2**-64 with two fronts).
MAX_TRIES = 64


def front_of(client: Client) -> int:
    return int(client.stats(stream=1).header["front"]["pid"])


@contextmanager
def clients_on_every_front(srv: ServerProcess) -> Iterator[dict[int, Client]]:
    """One connection on each front, found by connecting until each has one."""
    wanted = set(srv.info["fronts"])
    found: dict[int, Client] = {}
    with ExitStack() as stack:
        for _ in range(MAX_TRIES):
            if wanted <= found.keys():
                break
            client = stack.enter_context(
                Client.connect("127.0.0.1", srv.port, token=TOKEN, timeout=20)
            )
            found.setdefault(front_of(client), client)
        assert wanted <= found.keys(), f"only reached fronts {sorted(found)} of {wanted}"
        yield {pid: found[pid] for pid in wanted}


def test_two_fronts_share_the_port_and_the_workers(tmp_path: Path) -> None:
    with running_server(tmp_path, "--fronts", "2", workers=2) as srv:
        fronts = srv.info["fronts"]
        assert len(set(fronts)) == 2
        children = {p.pid for p in psutil.Process(srv.proc.pid).children()}
        assert set(fronts) | set(srv.worker_pids()) <= children
        with clients_on_every_front(srv) as clients:
            for pid, client in clients.items():
                assert client.put(f"k{pid}", b"x" * 5000, stream=3).ok
                # Every worker serves every front: the object one front stored is read
                # back through the other front's streams.
                for other in clients.values():
                    assert other.get(f"k{pid}", stream=5).body == b"x" * 5000
            stats = next(iter(clients.values())).stats(stream=1).header
            assert sorted(f["pid"] for f in stats["fronts"]) == sorted(fronts)
            assert all(f["connections"] >= 1 for f in stats["fronts"])
            assert sorted(w["pid"] for w in stats["workers"]) == sorted(srv.worker_pids())


def test_a_front_that_dies_loses_only_its_own_connections(tmp_path: Path) -> None:
    with running_server(tmp_path, "--fronts", "2", workers=2) as srv:
        with clients_on_every_front(srv) as clients:
            victim, survivor = sorted(clients)
            os.kill(victim, signal.SIGKILL)
            # The other front's connection carries on, on both workers.
            for stream in (1, 3, 5):
                assert clients[survivor].echo(b"still here", stream=stream).body == b"still here"
            with pytest.raises((ConnectionLost, OSError)):
                clients[victim].echo(b"gone", stream=1)
        # The supervisor replaces the front; the workers join it and it serves.
        srv.wait_for(lambda: victim not in srv.info["fronts"] and len(srv.info["fronts"]) == 2)
        replacement = (set(srv.info["fronts"]) - {survivor}).pop()
        with clients_on_every_front(srv) as clients:
            assert set(clients) == {survivor, replacement}
            for client in clients.values():
                assert client.echo(b"served", stream=7).body == b"served"


def raw_on_every_front(srv: ServerProcess, stack: ExitStack) -> dict[int, RawClient]:
    """A raw connection on each front, each with stream 1 on worker 0 and stream 3 on
    worker 1 (a front gives a new stream to its least loaded worker, the lowest among
    equals)."""
    raws: dict[int, RawClient] = {}
    for _ in range(MAX_TRIES):
        if len(raws) == len(srv.info["fronts"]):
            break
        raw = stack.enter_context(RawClient(srv))
        assert isinstance(raw.outcome(raw.request(1, "echo")), ResponseComplete)
        rid = raw.request(3, "stats")
        raw.outcome(rid)
        (stats,) = [
            e.header for e in raw.events if isinstance(e, ResponseHeader) and e.request_id == rid
        ]
        raws.setdefault(int(stats["front"]["pid"]), raw)
    assert set(raws) == set(srv.info["fronts"])
    return raws


@pytest.mark.parametrize("target", ["server", "process group"])
def test_sigterm_drains_every_front(tmp_path: Path, target: str) -> None:
    """SIGTERM to the server's main process, or to its whole process group (as systemd and
    ``kill -TERM -PGID`` send it: every front and worker gets it too), drains every front:
    what was in flight is answered, then everything exits with status 0."""
    with running_server(tmp_path, "--fronts", "2", workers=2) as srv, ExitStack() as stack:
        w0, _w1 = srv.worker_pids()
        raws = raw_on_every_front(srv, stack)
        with stopped(w0):
            held = {pid: raw.request(1, "generate", size=2000) for pid, raw in raws.items()}
            for raw in raws.values():  # answered after the held request: that one was read
                assert isinstance(raw.outcome(raw.request(3, "echo")), ResponseComplete)
            if target == "server":
                srv.proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(srv.proc.pid, signal.SIGTERM)
            for pid, raw in raws.items():
                events = raw.read_until(
                    lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
                )
                (goaway,) = [e for e in events if isinstance(e, ConnectionErrorReceived)]
                assert goaway.error.code == "goaway"
                assert goaway.error.details["in_flight"] == [held[pid]]
        for pid, raw in raws.items():
            assert isinstance(raw.outcome(held[pid]), ResponseComplete)
        assert srv.proc.wait(30) == 0
