"""Micro-benchmarks of the protocol core and of the worker's steps
(:mod:`bench.microbench_worker`), kept to check the speed-ups they proved:
``python -m bench.microbench``. Each figure is the median of several runs in this process,
so compare figures of one run (the machine is shared and noisy)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from bench import microbench_worker
from bench.client_results import Response, body_digest
from bench.client_session import ClientSession
from bench.corpus import Request
from bench.passes import acquire_slot, check_response
from bench.stats import LatencyRecorder
from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import Encoder
from server.protocol.frames import FrameDecoder
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ClientSettings, ServerSettings, StreamSettings
from server.protocol.responses import ServerStreamWriter
from server.protocol.server_conn import ServerConnection

REQUESTS = 20_000  # odd request ids up to 40,000: all fit in 16 bits
RUNS = 5


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def request_capture(count: int) -> bytes:
    """Settings and ``count`` small get requests over four streams, as a client sends them."""
    client = ClientConnection(ClientSettings(encodings=("zstd-8mb",)))
    parts = [client.initiate()]
    for i in range(count):  # odd ids 1 .. 2 * count - 1, all in flight at once
        stream = 1 + 2 * (i % 4)
        parts.append(client.send_request(stream, "get", {"a": i}, request_id=2 * i + 1)[1])
    return b"".join(parts)


def server_connection_us_per_request(capture: bytes, count: int) -> float:
    limits = Limits(max_inflight=1 << 20, max_inflight_per_stream=1 << 20)
    settings = ServerSettings("bench", ENCODINGS, 32768, 1, limits.to_wire())
    conn = ServerConnection(limits, settings)
    start = time.perf_counter()
    events = conn.receive_data(capture)
    elapsed = time.perf_counter() - start
    assert len(events) == count + 1
    return elapsed / count * 1e6


def frame_decoder_mb_per_s(capture: bytes) -> float:
    decoder = FrameDecoder(1 << 20)
    start = time.perf_counter()
    for offset in range(0, len(capture), 4096):  # socket-sized reads
        decoder.feed(capture[offset : offset + 4096])
    return len(capture) / (time.perf_counter() - start) / 1e6


def encoder_us_per_response(context: str, body: bytes, count: int = 2000) -> float:
    encoder = Encoder(StreamSettings("zstd-8mb", 3, 23, context), 32768)
    start = time.perf_counter()
    for _ in range(count):
        encoder.encode_response(body)
    return (time.perf_counter() - start) / count * 1e6


def response_capture(count: int, body: bytes, digest: str = "blake2b-256:" + "0" * 64) -> bytes:
    """``count`` zstd-8mb responses on one stream context, as a worker sends them."""
    writer = ServerStreamWriter(2, StreamSettings("zstd-8mb", 3, 23, "stream"), 32768)
    header = {"status": "ok", "size": len(body), "digest": digest}
    return b"".join(writer.response(2 * i + 1, header, body) for i in range(count))


def client_connection_us_per_response(capture: bytes, count: int) -> float:
    client = ClientConnection()
    for i in range(count):
        client.send_request(1, "get", {}, request_id=2 * i + 1)
    start = time.perf_counter()
    for offset in range(0, len(capture), 65536):
        client.receive_data(capture[offset : offset + 65536])
    elapsed = time.perf_counter() - start
    assert client.in_flight == 0
    return elapsed / count * 1e6


def client_session_us_per_request(body: bytes, count: int) -> tuple[float, float]:
    """The bench client's own work per request, without I/O: (building the request,
    reading its response: frames, decoding, the Response, verification, latency)."""
    digest = body_digest(body)
    answers = response_capture(count, body, digest)
    session = ClientSession(ClientSettings(encodings=("zstd-8mb",)))
    request = Request("get", {"key": "k"}, "group", len(body), digest)
    recorder = LatencyRecorder()
    start = time.perf_counter()
    for _ in range(count):
        session.request("get", request.args, None, 1, False)
    built = time.perf_counter()
    ok = 0
    for offset in range(0, len(answers), 65536):
        for _rid, outcome in session.feed(answers[offset : offset + 65536]):
            assert isinstance(outcome, Response)
            ok += check_response(outcome, request) is None
            recorder.record_s(outcome.latency_s)
    end = time.perf_counter()
    assert ok == count == recorder.count, (ok, recorder.count)
    return (built - start) / count * 1e6, (end - built) / count * 1e6


def window_acquire_us(count: int = 20_000) -> float:
    """The closed model's window, acquired while a slot is free (the usual case)."""

    async def measure() -> float:
        window = asyncio.Semaphore(count)
        start = time.perf_counter()
        for _ in range(count):
            await acquire_slot(window, 60.0)
        return (time.perf_counter() - start) / count * 1e6

    return asyncio.run(measure())


def main() -> None:
    capture = request_capture(REQUESTS)
    rows = [
        (
            "ServerConnection, small requests",
            median_of(RUNS, lambda: server_connection_us_per_request(capture, REQUESTS)),
            "us/request",
        ),
        (
            "FrameDecoder, 4 KiB reads",
            median_of(RUNS, lambda: frame_decoder_mb_per_s(capture)),
            "MB/s",
        ),
    ]
    with open(__file__, "rb") as f:
        body = f.read()
    responses = response_capture(5000, body)
    rows.append(
        (
            f"ClientConnection, zstd-8mb {len(body)} B responses",
            median_of(RUNS, lambda: client_connection_us_per_response(responses, 5000)),
            "us/response",
        )
    )
    build, read = client_session_us_per_request(body, 5000)
    rows.append(("ClientSession, get request built", build, "us/request"))
    rows.append((f"ClientSession, {len(body)} B response read and verified", read, "us/response"))
    window = median_of(RUNS, window_acquire_us)
    rows.append(("bench window acquired (a slot is free)", window, "us"))
    for context in ("stream", "request", "frame"):

        def measure(context: str = context) -> float:
            return encoder_us_per_response(context, body)

        label = f"Encoder zstd-8mb level 3, {context} context, {len(body)} B"
        rows.append((label, median_of(RUNS, measure), "us/response"))
    rows += microbench_worker.rows(RUNS)
    for name, value, unit in rows:
        print(f"{name:<52} {value:10.2f} {unit}")


if __name__ == "__main__":
    main()
