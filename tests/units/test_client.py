"""Tests for bench.client (AsyncClient, Client, StreamPool) against tests/fakeserver.py."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fakeserver import SERVER_NAME, FakeServer, FakeServerThread

from bench.affinity import stream_index
from bench.client import (
    AsyncClient,
    Client,
    ConnectionLost,
    Response,
    ServerError,
    StreamPool,
    body_digest,
)
from server.protocol.encoding import stream_settings_for
from server.protocol.payloads import CONTEXTS, ENCODINGS

pytestmark = pytest.mark.timeout(10)

ENCODING_CONTEXTS = [(e, c) for e in ENCODINGS for c in CONTEXTS]


def run(body: Callable[[FakeServer], Awaitable[Any]], **server_kwargs: Any) -> Any:
    """Run ``body(server)`` in a fresh event loop with a fake server in that loop."""

    async def main() -> Any:
        async with FakeServer(**server_kwargs) as server:
            return await asyncio.wait_for(body(server), 8)

    return asyncio.run(main())


def varied(size: int, seed: int) -> bytes:
    """Compressible but not trivial bytes: words drawn from a small vocabulary."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"zplex", b"stream", b"\x00\xff", b"42"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


# ---- settings ------------------------------------------------------------------------------


def test_async_settings_exchange() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect(
            "127.0.0.1",
            server.port,
            encodings=("zlib", "identity"),
            level=5,
            context="request",
            max_frame_size=4096,
            token="secret",
            timeout=5,
        ) as client:
            settings = client.server_settings
            assert settings.server == SERVER_NAME
            assert settings.max_frame_size == 32768
            assert settings.limits["max_streams"] == 64
            assert settings.encodings == ENCODINGS
            await client.echo(b"")  # the server has read the client's settings by now
        [received] = server.settings_received
        assert received.encodings == ("zlib", "identity")
        assert received.level == 5
        assert received.context == "request"
        assert received.max_frame_size == 4096
        assert received.token == "secret"
        assert client.closed

    run(body)


def test_sync_settings_exchange() -> None:
    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, level=7, timeout=5) as client,
    ):
        assert client.server_settings.server == SERVER_NAME
        assert client.server_settings.limits["max_inflight"] == 256
        client.echo()  # the server has read the client's settings by now
        [received] = server.server.settings_received
        assert received.encodings == ("zstd-8mb", "zlib", "identity")
        assert received.level == 7
        assert received.context == "stream"
    assert client.closed


def test_bad_settings_are_refused_locally() -> None:
    with pytest.raises(ValueError, match="context"):
        Client.connect("127.0.0.1", 1, context="bogus")
    with pytest.raises(ValueError, match="max_frame_size"):
        Client.connect("127.0.0.1", 1, max_frame_size=100)


# ---- round trips for every encoding x context ----------------------------------------------


@pytest.mark.parametrize(("encoding", "context"), ENCODING_CONTEXTS)
def test_async_round_trips(encoding: str, context: str) -> None:
    payloads = [varied(70_000, 1), b"", varied(33, 2), os.urandom(40_000), varied(70_000, 1)]

    async def body(server: FakeServer) -> None:
        client = await AsyncClient.connect(
            "127.0.0.1", server.port, encodings=(encoding,), context=context, timeout=5
        )
        try:
            for data in payloads:
                response = await client.echo(data, stream=3)
                assert response.body == data
                assert response.header["size"] == len(data)
                assert response.verify_digest() is True
                assert response.ok and response.status == "ok"
                assert response.stream_id == 3
                assert response.latency_s >= 0
            for size in (0, 1, 32768, 100_000):
                response = await client.generate(size, stream=5)
                assert response.body == b"x" * size
            # The client's own command data, encoded on its stream.
            client.set_data_encoding(7, encoding, 3, context=context)
            for data in payloads:
                response = await client.echo(data, stream=7)
                assert response.body == data
        finally:
            await client.close()

    run(body)


@pytest.mark.parametrize(("encoding", "context"), ENCODING_CONTEXTS)
def test_sync_round_trips(encoding: str, context: str) -> None:
    payloads = [varied(50_000, 3), b"", os.urandom(40_000), varied(50_000, 3)]
    with (
        FakeServerThread() as server,
        Client.connect(
            "127.0.0.1", server.port, encodings=(encoding,), context=context, timeout=5
        ) as client,
    ):
        for data in payloads:
            assert client.echo(data).body == data
        for size in (0, 5, 70_000):
            assert client.generate(size, stream=3).body == b"x" * size
        client.set_data_encoding(5, encoding, context=context)
        for data in payloads:
            response = client.echo(data, stream=5)
            assert response.body == data
            assert response.verify_digest() is True


def test_small_client_frames() -> None:
    """A client accepting only 1 KiB frames gets its responses cut accordingly."""

    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect(
            "127.0.0.1", server.port, encodings=("identity",), max_frame_size=1024, timeout=5
        ) as client:
            response = await client.generate(10_000)
            assert response.body == b"x" * 10_000
            # Every frame is at most 1024 + 8 bytes, and there are at least 10 of them.
            assert response.wire_bytes >= response.raw_bytes + 10 * 8

    run(body)


# ---- pipelining ----------------------------------------------------------------------------


def test_async_pipelining_50_requests_on_4_streams() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            pool = StreamPool(4)
            sent = []
            for i in range(50):
                stream = pool.streams[i % 4]
                data = varied(1000 + 97 * i, i)
                sent.append((stream, data, client.send("echo", None, data, stream=stream)))
            await client.drain()
            assert client.in_flight > 0
            results = await asyncio.gather(*(client.wait(f) for _, _, f in sent))
            for (stream, data, _), response in zip(sent, results, strict=True):
                assert response.body == data
                assert response.stream_id == stream
            assert len({r.request_id for r in results}) == 50
            assert client.in_flight == 0
            assert sorted({s for _, s, _ in server.requests}) == list(pool.streams)

    run(body)


def test_sync_pipeline_50_requests_on_4_streams() -> None:
    items: list[tuple[str, dict[str, Any] | None, bytes | None, int]] = []
    for i in range(50):
        if i % 10 == 9:
            items.append(("nope", None, None, 2 * (i % 4) + 1))
        else:
            items.append(("echo", None, varied(500 + 113 * i, i), 2 * (i % 4) + 1))
    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        results = client.pipeline(items)
        assert len(results) == 50
        for (name, _args, data, stream), result in zip(items, results, strict=True):
            if name == "nope":
                assert isinstance(result, ServerError)
                assert result.code == "unknown-command"
            else:
                assert isinstance(result, Response)
                assert result.body == data
                assert result.stream_id == stream
        # send/wait: the same thing by hand, answered out of order.
        rids = [client.send("generate", {"size": n}, stream=s) for n, s in [(10, 1), (20, 3)]]
        assert client.wait(rids[1]).body == b"x" * 20
        assert client.wait(rids[0]).body == b"x" * 10
        assert client.in_flight == 0


def test_sync_large_pipeline_does_not_deadlock() -> None:
    """More than the socket buffers hold in both directions at once."""
    data = os.urandom(256 * 1024)
    items = [("echo", None, data, 1 + 2 * (i % 3)) for i in range(24)]
    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, encodings=("identity",), timeout=8) as client,
    ):
        results = client.pipeline(items)
        assert all(isinstance(r, Response) and r.body == data for r in results)


# ---- errors --------------------------------------------------------------------------------


def test_async_error_response_raises_server_error() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            with pytest.raises(ServerError) as info:
                await client.stats(stream=3)
            error = info.value
            assert error.code == "unknown-command"
            assert error.request_id is not None and error.request_id % 2 == 1
            assert not error.retryable and not error.partial and not error.connection_level
            with pytest.raises(ServerError) as info:
                await client.generate(-1)
            assert info.value.code == "bad-request"
            # The connection goes on.
            assert (await client.echo(b"after", stream=3)).body == b"after"

    run(body)


def test_sync_error_response_raises_server_error() -> None:
    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        with pytest.raises(ServerError) as info:
            client.get("a/b.txt", offset=1, length=2)
        assert info.value.code == "unknown-command"
        assert info.value.request_id is not None
        assert server.server.requests[-1][2] == "get"
        assert client.echo(b"ok").body == b"ok"


def test_async_connection_lost_mid_request() -> None:
    async def body(server: FakeServer) -> None:
        client = await AsyncClient.connect("127.0.0.1", server.port, timeout=5)
        try:
            held = client.send("hold", stream=3)
            with pytest.raises(ConnectionLost):
                await client.request("drop")
            with pytest.raises(ConnectionLost):
                await client.wait(held)
            with pytest.raises(ConnectionLost):
                await client.echo(b"too late")
        finally:
            await client.close()
        assert client.closed

    run(body)


def test_sync_connection_lost_mid_request() -> None:
    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        held = client.send("hold", stream=3)
        with pytest.raises(ConnectionLost):
            client.request("drop")
        with pytest.raises(ConnectionLost):
            client.wait(held)
        with pytest.raises(ConnectionLost):
            client.echo(b"too late")
        assert client.closed


def test_connection_level_error_fails_every_pending_request() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            held = client.send("hold", stream=3)
            with pytest.raises(ServerError) as info:
                await client.request("fail-connection")
            assert info.value.code == "protocol"
            assert info.value.connection_level
            with pytest.raises(ServerError) as info:
                await client.wait(held)
            assert info.value.code == "protocol" and info.value.request_id is None
            with pytest.raises(ServerError):
                client.send("echo")

    run(body)

    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        [result] = client.pipeline([("fail-connection", None, None, 1)])
        assert isinstance(result, ServerError) and result.code == "protocol"


def test_goaway_keeps_listed_requests() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            held = client.send("hold", stream=3)
            with pytest.raises(ServerError) as info:
                await client.request("goaway", stream=5)
            assert info.value.code == "goaway" and info.value.retryable
            response = await client.wait(held)  # listed in in_flight: still answered
            assert response.body == b"held"
            assert client.goaway is not None
            with pytest.raises(ServerError):
                client.send("echo")

    run(body)

    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        held_id = client.send("hold", stream=3)
        results = client.pipeline([("goaway", None, None, 5)])
        assert isinstance(results[0], ServerError) and results[0].code == "goaway"
        assert client.wait(held_id).body == b"held"


def test_timeouts() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            with pytest.raises(TimeoutError):
                await client.request("hold", timeout=0.2)
            # The connection is still usable.
            assert (await client.echo(b"x")).body == b"x"

    run(body)

    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        with pytest.raises(TimeoutError):
            client.request("hold", timeout=0.2)
        with pytest.raises(TimeoutError):
            client.pipeline([("hold", None, None, 3)], timeout=0.2)
        assert client.echo(b"y").body == b"y"


def test_connect_refused_and_silent_server() -> None:
    async def body(server: FakeServer) -> None:
        port = server.port
        await server.stop()
        with pytest.raises(OSError):
            await AsyncClient.connect("127.0.0.1", port, timeout=2)

    run(body)

    async def silent() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read()  # never sends settings
            finally:
                writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TimeoutError):
                await AsyncClient.connect("127.0.0.1", port, timeout=0.3)
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(Client.connect, "127.0.0.1", port, timeout=0.3)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(silent())


# ---- streams and compression ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["zstd-8mb", "zlib"])
def test_stream_context_compresses_a_repeated_response(encoding: str) -> None:
    data = os.urandom(16 * 1024)  # incompressible by itself

    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect(
            "127.0.0.1", server.port, encodings=(encoding,), context="stream", timeout=5
        ) as client:
            first = await client.echo(data, stream=3)
            second = await client.echo(data, stream=3)
            other = await client.echo(data, stream=5)  # another stream: another context
            assert first.body == second.body == other.body == data
            assert first.wire_bytes > len(data)
            assert second.wire_bytes < second.raw_bytes / 4
            assert other.wire_bytes > len(data)
            assert second.ratio > 4
            total_wire = first.wire_bytes + second.wire_bytes + other.wire_bytes
            total_raw = first.raw_bytes + second.raw_bytes + other.raw_bytes
            assert client.wire_bytes_received == total_wire
            assert client.raw_bytes_received == total_raw
            # Settings frame(s) plus the three responses.
            assert client.bytes_received > total_wire

    run(body)


def test_end_stream_and_reuse() -> None:
    async def body(server: FakeServer) -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, timeout=5) as client:
            data = varied(20_000, 9)
            assert (await client.request("echo", None, data, stream=3, end_stream=True)).body == (
                data
            )
            # Stream 3 begins again: a fresh context on both sides.
            again = await client.echo(data, stream=3)
            assert again.body == data
            client.set_data_encoding(5, "zstd-8mb")
            assert (await client.echo(data, stream=5)).body == data
            client.end_stream(5)
            client.end_stream(5)  # not open any more: nothing to send
            assert (await client.echo(data, stream=5)).body == data  # unencoded data now
            with pytest.raises(ValueError):
                client.send("echo", stream=2)

    run(body)

    with (
        FakeServerThread() as server,
        Client.connect("127.0.0.1", server.port, timeout=5) as client,
    ):
        assert client.request("echo", None, b"a", stream=7, end_stream=True).body == b"a"
        assert client.echo(b"b", stream=7).body == b"b"
        client.end_stream(7)
        assert client.echo(b"c", stream=7).body == b"c"
        with pytest.raises(ValueError):
            client.pipeline([("echo", None, None, 256)])


def test_stream_pool_placement_is_stable() -> None:
    pool = StreamPool(4)
    assert pool.streams == (1, 3, 5, 7)
    assert len(pool) == 4
    for key in ["src/a.py", "docs", "", "ünïcode/ключ"]:
        # The bench's stream policy places a group on the same index over as many streams.
        expected = pool.streams[stream_index(key, 4)]
        assert pool.stream_for(key) == expected == pool(key)
        assert StreamPool(4).stream_for(key) == expected
    # Known values: stable across runs and processes (BLAKE2b, not hash()).
    assert [pool.stream_for(k) for k in "abcd"] == [7, 3, 7, 7]
    offset = StreamPool(8, first=101)
    assert offset.streams == tuple(range(101, 117, 2))
    placed = {offset.stream_for(f"group-{i}") for i in range(200)}
    assert placed == set(offset.streams)
    assert StreamPool(128).streams[-1] == 255
    for bad in [(0, 1), (4, 2), (4, 0), (129, 1), (2, 255)]:
        with pytest.raises(ValueError):
            StreamPool(*bad)


def test_response_helpers() -> None:
    response = Response(1, 1, {"status": "ok", "digest": body_digest(b"abc")}, b"abc", 20, 10, 0.1)
    assert response.ok and response.verify_digest() is True and response.ratio == 2.0
    assert response.raise_for_status() is response
    assert Response(3, 1, {"status": "ok"}, b"", 1, 9, 0.0).verify_digest() is None
    bad = Response(5, 1, {"status": "weird", "digest": body_digest(b"x")}, b"y", 1, 9, 0.0)
    assert not bad.ok and bad.verify_digest() is False
    with pytest.raises(ServerError):
        bad.raise_for_status()
    assert stream_settings_for("zstd-8mb", 3, "stream").window_log == 23
