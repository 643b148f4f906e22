"""The supervisor's pieces without processes: port reservation, the remote endpoint of each
front, the ready file built from the fronts' reports, and fronts asking each other for
their figures (real ZeroMQ sockets in one process)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.app import remote_endpoint_for
from server.cluster import OWNER_FILE, Cluster, reserve_port, sweep_stale_ipc
from server.config import ConfigError, ServeConfig
from server.peers import FrontPeers
from server.stopping import DRAIN, FORCE, Stopping


def test_a_reserved_port_is_fixed_and_every_front_can_bind_it() -> None:
    held = reserve_port("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        assert port > 0
        fronts = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            fronts.append(sock)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        for sock in fronts:
            sock.close()
    finally:
        held.close()


@pytest.mark.parametrize("reuseport", [False, True])
def test_a_port_another_server_listens_on_cannot_be_reserved(reuseport: bool) -> None:
    """Whether or not the listener set SO_REUSEPORT (another zplex server's fronts do): its
    port must not be joined, or the kernel would spread clients over two unrelated servers."""
    other = socket.socket()
    if reuseport:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", other.getsockname()[1])
    finally:
        other.close()


def test_front_k_accepts_remote_workers_on_the_listen_port_plus_k() -> None:
    assert remote_endpoint_for("tcp://0.0.0.0:7500", 0) == "tcp://0.0.0.0:7500"
    assert remote_endpoint_for("tcp://0.0.0.0:7500", 3) == "tcp://0.0.0.0:7503"
    assert remote_endpoint_for("tcp://127.0.0.1:0", 0) == "tcp://127.0.0.1:0"


def test_remote_workers_with_several_fronts_need_a_fixed_port() -> None:
    with pytest.raises(ConfigError, match="fixed port"):
        ServeConfig(fronts=2, worker_listen="tcp://127.0.0.1:0", worker_keys="k")
    with pytest.raises(ConfigError, match="fronts"):
        ServeConfig(fronts=0)


class FakePool:
    count = 2
    restarts = 0

    def start(self, loop: Any, on_exit: Callable[[int, int | None], None]) -> None:
        pass

    def pids(self) -> dict[int, int]:
        return {1: 202, 0: 201}

    def quiesce(self) -> None:
        pass

    def stop(self, timeout: float = 0) -> None:
        pass


class FakeLayout:
    def workers(self, endpoints: tuple[str, ...]) -> FakePool:
        self.endpoints = endpoints
        return FakePool()

    def fronts(self, front_config: Callable[[int], dict[str, Any]]) -> FakePool:
        return FakePool()

    async def run_front_here(self, spec: dict[str, Any], report: Any, stopping: Any) -> int:
        raise AssertionError("not with TCP")


def test_the_ready_file_is_written_once_every_front_reported(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"

    async def main() -> None:
        config = ServeConfig(port=0, fronts=2, workers=2, ready_file=str(ready))
        layout = FakeLayout()
        cluster = Cluster(config, layout, str(tmp_path))
        try:
            assert layout.endpoints == (f"ipc://{tmp_path}/front0", f"ipc://{tmp_path}/front1")
            cluster.report(1, {"index": 1, "pid": 102})
            assert not ready.exists()
            cluster.report(0, {"index": 0, "pid": 101})
            info = json.loads(ready.read_text())
            assert info["fronts"] == [101, 102] and info["workers"] == [201, 202]
            assert info["tcp"] == ["127.0.0.1", cluster.tcp_port] and cluster.tcp_port
            cluster._front_exited(1, -9)  # replaced: left out until it reports again
            assert json.loads(ready.read_text())["fronts"] == [101]
            cluster.report(1, {"index": 1, "pid": 103})
            assert json.loads(ready.read_text())["fronts"] == [101, 103]
        finally:
            for sock in cluster.ports:
                sock.close()

    asyncio.run(main())


def test_a_front_that_dies_before_serving_fails_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = Cluster(ServeConfig(port=0, fronts=2), FakeLayout(), str(tmp_path))
        try:
            cluster.report(0, {"index": 0, "pid": 101})
            cluster._front_exited(1, 1)
            assert cluster.failed.is_set()
        finally:
            for sock in cluster.ports:
                sock.close()

    asyncio.run(main())


def test_fronts_gather_each_others_figures_and_skip_one_that_is_down(tmp_path: Path) -> None:
    async def main() -> None:
        peers = [
            FrontPeers(str(tmp_path), k, 3, lambda k=k: {"index": k, "pid": 100 + k})
            for k in range(3)
        ]
        for p in peers[:2]:  # front 2 is down
            p.start()
        try:
            figures = await peers[0].gather(timeout=0.5)
            assert [f["index"] for f in figures] == [0, 1]
            figures = await peers[1].gather(timeout=0.5)
            assert [f["pid"] for f in figures] == [100, 101]
        finally:
            for p in peers:
                p.close()

    asyncio.run(main())


def test_a_second_signal_forces_the_stop_but_the_supervisors_drain_does_not() -> None:
    async def main() -> None:
        group = Stopping()
        group.on_signal()  # kill -TERM -PGID reaches the front ...
        group.on_message(DRAIN)  # ... and the supervisor asks it to drain too
        assert group.drain.is_set() and not group.force.is_set()
        group.on_signal()  # a second signal: stop now
        assert group.force.is_set()
        told = Stopping()
        told.on_message(FORCE)
        assert told.drain.is_set() and told.force.is_set()

    asyncio.run(main())


def test_ipc_directories_of_killed_servers_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / "zplex-stale"
    stale.mkdir()
    (stale / OWNER_FILE).write_text(dead.stdout.strip())
    (stale / "front0").write_text("")
    live = tmp_path / "zplex-live"
    live.mkdir()
    (live / OWNER_FILE).write_text(str(os.getpid()))
    foreign = tmp_path / "zplex-foreign"  # no owner file: not ours to judge
    foreign.mkdir()
    assert sweep_stale_ipc(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and foreign.exists()
