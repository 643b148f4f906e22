"""The whole system: a real ``zplex serve`` (front and worker processes) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import TOKEN, ServerProcess, running_server

from bench.client import AsyncClient, Client, ServerError
from server.protocol.client_conn import ClientConnection
from server.protocol.events import (
    ConnectionErrorReceived,
    ResponseBody,
    ResponseComplete,
    ServerSettingsReceived,
)
from server.protocol.frames import FrameDecoder, FrameType, StreamFlags, encode_frame
from server.protocol.payloads import ClientSettings, unpack_map
from workers.generate import generate

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


def connect(server: ServerProcess, **kwargs: object) -> Client:
    return Client.connect("127.0.0.1", server.port, timeout=20, **kwargs)  # type: ignore[arg-type]


def raw_socket(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_until(sock: socket.socket, conn: ClientConnection, done: object, limit: float = 10):  # type: ignore[no-untyped-def]
    """Read events until ``done(events)`` is true or the server closes."""
    events = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        data = sock.recv(1 << 20)
        if not data:
            break
        events += conn.receive_data(data)
        if done(events):  # type: ignore[operator]
            break
    return events


# -- settings and commands -------------------------------------------------------------------


def test_settings_exchange(server: ServerProcess) -> None:
    with raw_socket(server) as sock:
        conn = ClientConnection(ClientSettings(encodings=("zlib",), level=99, context="request"))
        sock.sendall(conn.initiate())
        events = read_until(sock, conn, lambda ev: len(ev) >= 1)
        settings = events[0]
        assert isinstance(settings, ServerSettingsReceived)
        assert settings.settings.version == 1
        assert settings.settings.server.startswith("zplex/")
        assert settings.settings.workers == 2
        assert settings.settings.limits["max_streams"] == 64
        assert set(settings.settings.encodings) == {"zstd-8mb", "zlib", "identity"}
        _rid, data = conn.send_request(1, "echo", {}, b"x" * 100)
        sock.sendall(data)
        raw = b""
        sock.settimeout(5)
        while True:
            raw += sock.recv(65536)
            frames = FrameDecoder(1 << 20).feed(raw)
            if any(f.type == FrameType.COMMAND_RESPONSE for f in frames):
                break
    stream_settings = [f for f in frames if f.type == FrameType.STREAM_SETTINGS]
    announced = unpack_map(stream_settings[0].payload, "stream-settings")
    # zlib chosen, level 99 clamped into zlib's range, context as asked.
    assert announced == {"encoding": "zlib", "level": 9, "context": "request"}
    assert stream_settings[0].stream_id == 2
    assert stream_settings[0].stream_flags & StreamFlags.BEGIN


def test_every_command(server: ServerProcess) -> None:
    with connect(server, token=TOKEN) as client:
        caps = client.capabilities().header
        assert set(caps["commands"]) == {
            "capabilities",
            "get",
            "list",
            "generate",
            "echo",
            "put",
            "stats",
        }
        assert caps["commands"]["put"]["permission"] == "write"
        assert caps["limits"]["max_frame_size"] == 32768
        body = generate(50_000, "json", 7)
        put = client.put("cmd/obj.json", body).header
        assert put["size"] == len(body)
        got = client.get("cmd/obj.json")
        assert got.body == body and got.verify_digest()
        ranged = client.get("cmd/obj.json", offset=10, length=20)
        assert ranged.body == body[10:30]
        assert ranged.header["object_size"] == len(body)
        keys = client.list("cmd/").header["keys"]
        assert keys == [["cmd/obj.json", len(body)]]
        gen = client.generate(10_000, "log", 3)
        assert gen.body == generate(10_000, "log", 3) and gen.verify_digest()
        assert client.echo(b"ping").body == b"ping"
        assert client.echo().body == b""
        stats = client.stats().header
        assert server.info["fronts"] == [stats["front"]["pid"]]
        assert [f["pid"] for f in stats["fronts"]] == server.info["fronts"]
        assert sorted(w["pid"] for w in stats["workers"]) == sorted(server.worker_pids())
        for worker in stats["workers"]:
            for key in ("cpu_user", "cpu_system", "rss", "streams", "context_bytes"):
                assert key in worker
            for key in ("requests", "bytes_raw", "bytes_wire"):
                assert key in worker


@pytest.mark.parametrize("encoding", ["identity", "zlib", "zstd-8mb"])
@pytest.mark.parametrize("context", ["stream", "request", "frame"])
def test_encoding_and_context_round_trip(
    server: ServerProcess, encoding: str, context: str
) -> None:
    with connect(server, encodings=(encoding,), context=context) as client:
        for seed in range(3):
            body = generate(100_000, "text", seed)
            response = client.generate(100_000, "text", seed, stream=3)
            assert response.body == body
            echoed = client.echo(body[:40_000], stream=5)
            assert echoed.body == body[:40_000]
            if encoding != "identity":
                assert response.wire_bytes < response.raw_bytes


def test_stream_context_reuses_history(server: ServerProcess) -> None:
    body = os.urandom(200_000)  # incompressible on its own, a match for the context
    with connect(server, encodings=("zstd-8mb",), token=TOKEN) as client:
        client.put("history/blob", body)
        first = client.get("history/blob", stream=7)
        second = client.get("history/blob", stream=7)
    assert first.body == second.body == body
    assert first.wire_bytes > len(body)
    assert second.wire_bytes < len(body) / 20


def test_streams_served_by_different_workers_in_parallel(server: ServerProcess) -> None:
    with connect(server) as client:
        before = {w["pid"]: w["requests"] for w in client.stats().header["workers"]}
        items = [
            ("generate", {"size": 400_000, "kind": "text", "seed": i}, None, 1 + 2 * (i % 4))
            for i in range(16)
        ]
        results = client.pipeline(items)
        assert all(not isinstance(r, ServerError) for r in results)
        after = {w["pid"]: w["requests"] for w in client.stats().header["workers"]}
    served = {pid: after[pid] - before.get(pid, 0) for pid in after}
    # 4 streams over 2 workers: each worker owns two of them (the stats calls add one).
    assert len(served) == 2
    assert all(count >= 8 for count in served.values()), served


def test_stream_end_and_reuse(server: ServerProcess) -> None:
    with connect(server, encodings=("zstd-8mb",)) as client:
        assert client.request("echo", None, b"a" * 1000, stream=9, end_stream=True).body
        # The same id opens a new stream (and a new context) with begin.
        assert client.echo(b"b" * 1000, stream=9).body == b"b" * 1000
        client.end_stream(9)
        assert client.echo(b"c", stream=9).body == b"c"


def test_put_needs_the_token_and_is_durable(server: ServerProcess) -> None:
    with connect(server) as client, pytest.raises(ServerError) as info:
        client.put("secure/a", b"data")
    assert info.value.code == "forbidden"
    with connect(server, token="wrong") as client, pytest.raises(ServerError) as info:
        client.put("secure/a", b"data")
    assert info.value.code == "forbidden"
    with connect(server, token=TOKEN) as client:
        client.put("secure/a", b"data")
    # Acknowledged means on disk, under the key, with no temporary left behind.
    assert (server.store / "secure" / "a").read_bytes() == b"data"
    assert [p.name for p in (server.store / "secure").iterdir()] == ["a"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a//b", "a/../../b", "a\x00b", ""])
def test_traversal_keys_rejected(server: ServerProcess, key: str) -> None:
    with connect(server, token=TOKEN) as client:
        for call in (lambda: client.get(key), lambda: client.put(key, b"x")):
            with pytest.raises(ServerError) as info:
                call()
            assert info.value.code == "bad-request"
            assert (
                "/" not in info.value.message.replace("'/'", "").replace("a '/' ", "")
                or "store" not in info.value.message
            )
        assert client.echo(b"still here").body == b"still here"


def test_unknown_command_and_bad_arguments(server: ServerProcess) -> None:
    with connect(server) as client:
        with pytest.raises(ServerError) as info:
            client.request("frobnicate")
        assert info.value.code == "unknown-command"
        with pytest.raises(ServerError) as info:
            client.request("generate", {"size": "big"})
        assert info.value.code == "bad-request"
        with pytest.raises(ServerError) as info:
            client.get("missing/key")
        assert info.value.code == "not-found"
        assert client.echo(b"ok").body == b"ok"


def test_malformed_frame_closes_only_that_connection(server: ServerProcess) -> None:
    with connect(server) as bystander, raw_socket(server) as sock:
        conn = ClientConnection(ClientSettings())
        sock.sendall(conn.initiate())
        # A reserved frame type.
        sock.sendall(encode_frame(1, 1, 0, 0xA, 0, b"junk"))
        events = read_until(
            sock, conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        errors = [e for e in events if isinstance(e, ConnectionErrorReceived)]
        assert errors and errors[0].error.code == "protocol"
        assert sock.recv(10) == b""  # closed by the server
        assert bystander.echo(b"fine").body == b"fine"


def test_oversize_frame_rejected_from_header(server: ServerProcess) -> None:
    with raw_socket(server) as sock:
        conn = ClientConnection(ClientSettings())
        sock.sendall(conn.initiate())
        # Announce 1 MiB of payload and send none of it: the header alone is refused.
        sock.sendall(encode_frame(1, 1, 0, 1, 1, b"")[:0] + bytes([0, 0, 16, 1, 0, 1, 0, 0x11]))
        events = read_until(
            sock, conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        assert [e.error.code for e in events if isinstance(e, ConnectionErrorReceived)] == [
            "protocol"
        ]


def test_client_disconnecting_mid_request(server: ServerProcess) -> None:
    with raw_socket(server) as sock:
        conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",)))
        sock.sendall(conn.initiate())
        _rid, data = conn.send_request(3, "echo", {}, os.urandom(100_000))
        sock.sendall(data[: len(data) // 2])  # half a request, then gone
        _rid, data = conn.send_request(5, "generate", {"size": 5_000_000})
        sock.sendall(data)  # and a big response nobody will read
    with connect(server) as client:
        assert client.generate(1000).body == generate(1000)
        # The vanished client's connection is gone: only the one asking is left.
        server.wait_for(lambda: client.stats().header["front"]["connections"] == 1)


def test_a_dead_worker_is_replaced_and_its_streams_go_on(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1) as srv, connect(srv) as client:
        old = srv.worker_pids()
        assert client.echo(b"warm", stream=3).body == b"warm"
        os.kill(old[0], signal.SIGKILL)
        srv.wait_for(lambda: srv.worker_pids() and srv.worker_pids() != old)
        # The stream restarts on the new worker with begin and fresh settings.
        assert client.echo(b"again", stream=3).body == b"again"
        assert client.generate(1000, stream=5).body == generate(1000)


def test_sigterm_sends_goaway_and_exits(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1) as srv, raw_socket(srv) as sock:
        conn = ClientConnection(ClientSettings())
        sock.sendall(conn.initiate())
        read_until(sock, conn, lambda ev: len(ev) >= 1)
        workers = srv.worker_pids()
        srv.proc.send_signal(signal.SIGTERM)
        events = read_until(
            sock, conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        goaway = [e for e in events if isinstance(e, ConnectionErrorReceived)]
        assert goaway and goaway[0].error.code == "goaway" and goaway[0].error.retryable
        assert srv.proc.wait(20) == 0
        assert srv.proc.stdout is not None
        assert b"replacing" not in srv.proc.stdout.read()  # no respawn while stopping
        for pid in workers:
            srv.wait_for(lambda pid=pid: not _alive(pid), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- limits enforced by the front ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = [
        "max_streams=2",
        "max_inflight_per_stream=2",
        "max_connections=4",
        "frame_timeout_s=1",
        "idle_timeout_s=2",
    ]
    args = [arg for limit in limits for arg in ("--limit", limit)]
    with running_server(tmp_path_factory.mktemp("small"), *args, workers=1) as srv:
        yield srv


def test_too_many_streams(small_server: ServerProcess) -> None:
    with connect(small_server) as client:
        # Stream 1 is open (the settings opened it) and stream 3 opens: the limit is 2.
        assert client.echo(b"a", stream=3).body == b"a"
        for _ in range(2):
            with pytest.raises(ServerError) as info:
                client.echo(b"b", stream=5)
            assert info.value.code == "too-many-streams"
        # A stream that could not be opened stays refused until the client ends it and
        # opens it again (with begin) when there is room.
        client.end_stream(3)
        client.end_stream(5)
        assert client.echo(b"c", stream=5).body == b"c"


def test_overloaded_per_stream(small_server: ServerProcess) -> None:
    with connect(small_server) as client:
        items = [("generate", {"size": 2_000_000, "seed": i}, None, 1) for i in range(6)]
        results = client.pipeline(items)
        codes = [r.code if isinstance(r, ServerError) else "ok" for r in results]
        assert codes[:2] == ["ok", "ok"]
        assert "overloaded" in codes
        assert all(r.retryable for r in results if isinstance(r, ServerError))


def test_frame_timeout(small_server: ServerProcess) -> None:
    with raw_socket(small_server) as sock:
        conn = ClientConnection(ClientSettings())
        sock.sendall(conn.initiate())
        _rid, data = conn.send_request(1, "echo", {}, b"x" * 1000)
        sock.sendall(data[:20])  # a started frame that never completes
        events = read_until(
            sock, conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        errors = [e.error.code for e in events if isinstance(e, ConnectionErrorReceived)]
        assert errors == ["protocol"]


def test_idle_timeout(small_server: ServerProcess) -> None:
    with raw_socket(small_server) as sock:
        conn = ClientConnection(ClientSettings())
        sock.sendall(conn.initiate())
        started = time.monotonic()
        events = read_until(
            sock, conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        errors = [e.error for e in events if isinstance(e, ConnectionErrorReceived)]
        assert errors and errors[0].code == "goaway"
        assert time.monotonic() - started >= 1.5
        assert sock.recv(10) == b""


def test_max_connections(small_server: ServerProcess) -> None:
    socks = [raw_socket(small_server) for _ in range(5)]
    try:
        conn = ClientConnection(ClientSettings())
        events = read_until(
            socks[-1], conn, lambda ev: any(isinstance(e, ConnectionErrorReceived) for e in ev)
        )
        errors = [e.error for e in events if isinstance(e, ConnectionErrorReceived)]
        assert errors and errors[0].code == "goaway" and errors[0].retryable
    finally:
        for sock in socks:
            sock.close()


def test_stdio_transport(tmp_path: Path) -> None:
    conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",)))
    data = conn.initiate()
    for seed in range(3):
        data += conn.send_request(3, "generate", {"size": 50_000, "seed": seed})[1]
    data += conn.send_request(5, "echo", {}, b"over stdio")[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--stdio",
            "--workers",
            "1",
            "--store",
            str(tmp_path / "store"),
        ],
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    events = conn.receive_data(proc.stdout)
    bodies: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, ResponseBody):
            bodies[event.request_id] = bodies.get(event.request_id, b"") + event.data
    complete = [e.request_id for e in events if isinstance(e, ResponseComplete)]
    assert sorted(complete) == [1, 3, 5, 7]
    assert [bodies[rid] for rid in (1, 3, 5)] == [generate(50_000, "text", s) for s in range(3)]
    assert bodies[7] == b"over stdio"


def test_context_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    args = ("--limit", "max_contexts_per_worker=1")
    with running_server(tmp_path, *args, workers=1) as srv, connect(srv) as client:
        for round_ in range(3):
            for stream in (3, 5, 7):
                body = generate(20_000, "json", round_ * 10 + stream)
                response = client.generate(20_000, "json", round_ * 10 + stream, stream=stream)
                assert response.body == body
        worker = client.stats().header["workers"][0]
    assert worker["evictions"] >= 6


def test_streams_go_to_the_least_loaded_worker(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as srv, connect(srv) as client:
        for stream in (3, 5, 7, 9):
            assert client.echo(b"x", stream=stream).body == b"x"
        workers = client.stats(stream=1).header["workers"]
    # Five streams (1, 3, 5, 7, 9) over two workers.
    assert sorted(w["streams"] for w in workers) == [2, 3]


def test_garbage_never_takes_the_server_down(server: ServerProcess) -> None:
    rng = random.Random(7)
    valid = ClientConnection(ClientSettings(encodings=("zstd-8mb",)))
    capture = valid.initiate() + valid.send_request(3, "echo", {}, b"payload" * 100)[1]
    for round_ in range(20):
        data = bytearray(capture)
        for _ in range(rng.randint(1, 8)):  # flip a few bytes of a valid capture
            data[rng.randrange(len(data))] = rng.randrange(256)
        if round_ % 4 == 0:
            data = bytearray(rng.randbytes(rng.randint(1, 400)))  # or send pure noise
        with raw_socket(server) as sock:
            sock.sendall(bytes(data))
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            while sock.recv(65536):  # the server answers, errs or closes; never hangs
                pass
    with connect(server) as client:
        assert client.echo(b"alive").body == b"alive"
        assert client.stats().header["front"]["pid"] in server.info["fronts"]


def test_a_client_that_does_not_read_is_dropped(tmp_path: Path) -> None:
    config = tmp_path / "zplex.toml"
    config.write_text("max_output_buffer_bytes = 4000000\n")
    with running_server(tmp_path, "--config", str(config), workers=1) as srv:
        sock = raw_socket(srv)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn = ClientConnection(ClientSettings(encodings=("identity",)))
            data = conn.initiate()
            # 16 MB of incompressible responses, never read, on 8 streams: a stream sends
            # no more than its credit (4 MiB), so the front comes to hold over 4 MB only
            # from several streams.
            for seed in range(8):
                args = {"size": 2_000_000, "kind": "random", "seed": seed}
                data += conn.send_request(1 + 2 * seed, "generate", args)[1]
            sock.sendall(data)
            with connect(srv) as client:
                # The reader is dropped (reset): only the connection asking is left.
                srv.wait_for(lambda: client.stats().header["front"]["connections"] == 1)
                assert client.echo(b"others are served").body == b"others are served"
        finally:
            sock.close()


def test_a_slow_reader_pauses_only_its_own_streams(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1) as srv, raw_socket(srv) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn = ClientConnection(ClientSettings(encodings=("identity",)))
        data = conn.initiate()
        for seed in range(4):  # 32 MB of incompressible responses on one stream
            args = {"size": 8_000_000, "kind": "random", "seed": seed}
            data += conn.send_request(3, "generate", args)[1]
        sock.sendall(data)
        time.sleep(1.5)  # not reading
        with connect(srv) as other:
            # The worker is not blocked: another client's stream is served meanwhile...
            assert other.echo(b"meanwhile").body == b"meanwhile"
            produced = other.stats().header["workers"][0]["bytes_wire"]
        # ...and the stalled stream stopped well short of the 32 MB asked for: the worker
        # sends only what its credit allows beyond what the client has taken.
        assert produced < 20_000_000, produced
        sock.settimeout(20)
        complete = 0
        while complete < 4:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            complete += sum(isinstance(e, ResponseComplete) for e in conn.receive_data(chunk))


def test_many_connections_and_streams_at_once(server: ServerProcess) -> None:
    async def one_client(n: int) -> int:
        client = await AsyncClient.connect("127.0.0.1", server.port, timeout=30)
        try:
            futures = [
                client.send("generate", {"size": 5000 + i, "kind": "json", "seed": n}, stream=s)
                for i in range(8)
                for s in (1, 3, 5)
            ]
            responses = await asyncio.gather(*futures)
            for response in responses:
                size = response.header["size"]
                assert response.body == generate(size, "json", n)
            return len(responses)
        finally:
            await client.close()

    async def main() -> list[int]:
        return await asyncio.gather(*(one_client(n) for n in range(24)))

    assert asyncio.run(main()) == [24] * 24
