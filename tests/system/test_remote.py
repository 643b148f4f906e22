"""Remote workers: joining over CURVE-authenticated TCP, serving streams, being lost."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import TOKEN, ServerProcess, running_server

from bench.client import Client, ServerError
from server.cli import main
from workers.generate import generate

pytestmark = pytest.mark.timeout(90)


def make_keys(directory: Path) -> Path:
    assert main(["keys", str(directory)]) == 0
    return directory


@contextlib.contextmanager
def remote_worker(endpoint: str, keys: Path, store: Path) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "worker",
        "--connect",
        endpoint,
        "--keys",
        str(keys),
        "--store",
        str(store),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def remote_count(srv: ServerProcess) -> int:
    return len(srv.info.get("remote_workers", []))


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys")


def serve_with_remote(
    tmp_path: Path, keys: Path, *more: str, workers: int = 1
) -> contextlib.AbstractContextManager[ServerProcess]:
    args = ("--worker-listen", "tcp://127.0.0.1:0", "--worker-keys", str(keys), *more)
    return running_server(tmp_path, *args, workers=workers)


def test_remote_worker_joins_and_serves(tmp_path: Path, keys: Path) -> None:
    with serve_with_remote(tmp_path, keys) as srv:
        endpoint = srv.info["worker_endpoint"]
        with remote_worker(endpoint, keys, srv.store):
            srv.wait_for(lambda: remote_count(srv) == 1)
            with Client.connect("127.0.0.1", srv.port, timeout=20) as client:
                for stream in (3, 5, 7, 9):
                    body = client.generate(30_000, "log", stream, stream=stream).body
                    assert body == generate(30_000, "log", stream)
                workers = client.stats().header["workers"]
    assert len(workers) == 2
    assert [w["remote"] for w in workers] == [False, True]
    assert all(w["requests"] >= 2 for w in workers)


def test_remote_only_server(tmp_path: Path, keys: Path) -> None:
    with (
        serve_with_remote(tmp_path, keys, workers=0) as srv,
        Client.connect("127.0.0.1", srv.port, timeout=20) as client,
    ):
        with pytest.raises(ServerError) as info:  # nobody to serve it yet
            client.echo(b"early")
        assert info.value.code == "overloaded" and info.value.retryable
        with remote_worker(srv.info["worker_endpoint"], keys, srv.store):
            srv.wait_for(lambda: remote_count(srv) == 1)
            assert client.echo(b"now", stream=3).body == b"now"


def test_a_remote_worker_learns_small_tables_from_the_front(tmp_path: Path, keys: Path) -> None:
    """--small-tables-from is the front's: a remote worker, which has no such flag, gives its
    first zstd context small match tables when the front says 0 in its WELCOME."""
    args = ("--worker-listen", "tcp://127.0.0.1:0", "--worker-keys", str(keys))
    with (
        running_server(tmp_path, *args, "--small-tables-from", "0", workers=0) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store),
    ):
        srv.wait_for(lambda: remote_count(srv) == 1)
        with Client.connect("127.0.0.1", srv.port, encodings=("zstd-8mb",), timeout=20) as c:
            assert c.generate(30_000, "log", 1, stream=3).body == generate(30_000, "log", 1)
            (worker,) = c.stats(stream=3).header["workers"]
    assert worker["remote"] and worker["small_table_contexts"] == 1


def test_a_remote_worker_offers_delete_as_its_front_does(tmp_path: Path, keys: Path) -> None:
    """``zplex worker`` takes no --allow-delete: the front's WELCOME says whether to offer
    ``delete``, so a remote worker answers it as the front's local workers would."""
    with (
        serve_with_remote(tmp_path, keys, "--allow-delete", workers=0) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store),
    ):
        srv.wait_for(lambda: remote_count(srv) == 1)
        with Client.connect("127.0.0.1", srv.port, token=TOKEN, timeout=20) as client:
            assert "delete" in client.capabilities().header["commands"]
            client.put("remote/obj", b"on the remote worker's store")
            assert client.delete("remote/obj").header["size"] == 28
            with pytest.raises(ServerError) as info:
                client.get("remote/obj")
            assert info.value.code == "not-found"


def test_lost_remote_worker(tmp_path: Path, keys: Path) -> None:
    with (
        serve_with_remote(tmp_path, keys) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store) as proc,
    ):
        srv.wait_for(lambda: remote_count(srv) == 1)
        with Client.connect("127.0.0.1", srv.port, timeout=30) as client:
            # Streams 1 and 3 fill both workers; stream 5 lands on one of them.
            assert client.echo(b"a", stream=3).body == b"a"
            assert client.echo(b"b", stream=5).body == b"b"
            on_remote = [w for w in client.stats().header["workers"] if w["remote"]]
            assert on_remote[0]["streams"] >= 1
            os.kill(proc.pid, signal.SIGKILL)
            # Its silence is noticed within the heartbeat timeout; the streams then start
            # again on the local worker.
            srv.wait_for(lambda: remote_count(srv) == 0, timeout=15)
            for stream in (3, 5):
                assert client.echo(b"c", stream=stream).body == b"c"


def test_worker_with_unknown_keys_is_refused(tmp_path: Path, keys: Path) -> None:
    strangers = make_keys(tmp_path / "strangers")
    # The stranger has the front's public key but its own, unauthorised key pair.
    (strangers / "front.key").write_bytes((keys / "front.key").read_bytes())
    with (
        serve_with_remote(tmp_path, keys) as srv,
        remote_worker(srv.info["worker_endpoint"], strangers, srv.store) as proc,
    ):
        # Observed as refused (the front says so), not inferred from a silence.
        output = srv.read_output_until("remote worker was refused: CURVE authentication failed")
        assert str(keys) in output  # the key directory to copy its worker.key into
        assert remote_count(srv) == 0
        assert proc.poll() is None  # it keeps trying; it is simply never let in


def test_remote_worker_stops_with_its_front(tmp_path: Path, keys: Path) -> None:
    with (
        serve_with_remote(tmp_path, keys) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store) as proc,
    ):
        srv.wait_for(lambda: remote_count(srv) == 1)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
        assert proc.wait(10) == 0


def free_port_pair() -> int:
    """A port P with P + 1 free too (front k of two listens on P + k)."""
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second, contextlib.suppress(OSError):
                second.bind(("127.0.0.1", port + 1))
                return port
    raise RuntimeError("no free pair of ports")


def test_a_remote_worker_serves_every_front(tmp_path: Path, keys: Path) -> None:
    from test_fronts import clients_on_every_front

    port = free_port_pair()
    args = ("--fronts", "2", "--worker-listen", f"tcp://127.0.0.1:{port}")
    with running_server(tmp_path, *args, "--worker-keys", str(keys), workers=0) as srv:
        assert srv.info["worker_endpoints"] == [
            f"tcp://127.0.0.1:{port}",
            f"tcp://127.0.0.1:{port + 1}",
        ]
        with remote_worker(f"tcp://127.0.0.1:{port}", keys, srv.store):
            srv.wait_for(lambda: remote_count(srv) == 1)  # front 0 has it

            def every_front_serves() -> bool:
                try:
                    with clients_on_every_front(srv) as clients:
                        for client in clients.values():
                            body = client.generate(20_000, "log", 1, stream=11).body
                            assert body == generate(20_000, "log", 1)
                except ServerError:  # a front without a worker yet: "overloaded"
                    return False
                return True

            srv.wait_for(every_front_serves)


def test_a_stopping_remote_worker_is_dropped_at_once(tmp_path: Path, keys: Path) -> None:
    with (
        serve_with_remote(tmp_path, keys) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store) as proc,
    ):
        srv.wait_for(lambda: remote_count(srv) == 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        # GOODBYE: dropped well before the five seconds of silence that declare it lost.
        srv.wait_for(lambda: remote_count(srv) == 0, timeout=3)


def test_a_refused_worker_is_reported_on_both_sides(tmp_path: Path, keys: Path) -> None:
    strangers = make_keys(tmp_path / "strangers")
    (strangers / "front.key").write_bytes((keys / "front.key").read_bytes())
    worker_log = tmp_path / "worker.log"
    with serve_with_remote(tmp_path, keys) as srv:
        cmd = [sys.executable, "-m", "server.cli", "worker", "--connect"]
        cmd += [srv.info["worker_endpoint"], "--keys", str(strangers), "--store", str(srv.store)]
        with open(worker_log, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while "has not answered" not in worker_log.read_text():
                assert time.monotonic() < deadline, worker_log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
        assert srv.proc.stdout is not None
        front_log = srv.proc.stdout.read().decode()
    assert "remote worker was refused: CURVE authentication failed" in front_log
    assert front_log.count("was refused") == 1  # once, not at every retry
    assert "Do the keys match" in worker_log.read_text()
