"""Micro-benchmark of one front's work per request, kept to check the speed-ups it proved:
``python -m server.front_microbench``.

A real :class:`~server.app.FrontApp` and :class:`~server.connection.FrontConnection` (with a
transport that only counts bytes) in this process, and a ZeroMQ DEALER standing in for worker 0
on the front's own endpoint. Requests go in as a client sends them (many per read); the fake
worker answers each with wire-ready frames, a batch per batch the front sent. The figure is
the front's CPU time per request, both ways, without the kernel's TCP and epoll costs (which
``zplex bench`` measures); the fake worker's own work is left out. Each figure is the median of
several runs: compare figures of one run (the machine is shared and noisy).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import zmq

from server.app import FrontApp
from server.config import ServeConfig
from server.ipc.batch import Batch, decode_batch
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.messages import Ready
from server.protocol.client_conn import ClientConnection
from server.protocol.limits import Limits
from server.protocol.payloads import ClientSettings, StreamSettings
from server.protocol.responses import ServerStreamWriter

REQUESTS = 4000  # per run; odd ids up to 8,000
STREAMS = 8
PER_READ = 16  # requests per socket read, as a pipelining client delivers them
RUNS = 5
BODY = b"def f(x):\n    return x * 2\n" * 100


class CountingTransport(asyncio.Transport):
    """What the connection writes to: counted, then dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def client_reads(count: int) -> tuple[bytes, list[bytes]]:
    """The client's settings, then ``count`` get requests on ``STREAMS`` streams, cut into
    reads of ``PER_READ`` requests."""
    client = ClientConnection(ClientSettings(encodings=("zstd-8mb",)))
    settings = client.initiate()
    reads: list[bytes] = []
    for start in range(0, count, PER_READ):
        part = []
        for i in range(start, min(count, start + PER_READ)):
            stream = 1 + 2 * (i % STREAMS)
            key = f"Lib/module{i}.py"
            part.append(client.send_request(stream, "get", {"key": key}, request_id=2 * i + 1)[1])
        reads.append(b"".join(part))
    return settings, reads


class FakeWorker:
    """Worker 0: answers every REQUEST of a batch with one response's frames, in one batch."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, b"w0")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.writers: dict[tuple[int, int], ServerStreamWriter] = {}
        self.settings = StreamSettings("zstd-8mb", 3, 23, "stream")
        self.busy_s = 0.0  # its own time, left out of the front's

    def say_ready(self) -> None:
        batch = Batch()
        batch.add([Envelope(Kind.READY).pack(), Ready(os.getpid(), 0).encode()])
        self.sock.send(batch.take())

    def answer(self) -> int:
        """Answer what the front sent; returns the requests answered."""
        started = time.thread_time()
        answered = 0
        out = Batch()
        while True:
            try:
                blob = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            for message in decode_batch(blob):
                env = Envelope.unpack(message[0])
                if env.kind is not Kind.REQUEST:
                    continue
                key = (env.conn, env.stream)
                writer = self.writers.get(key)
                if writer is None:
                    writer = self.writers[key] = ServerStreamWriter(
                        env.stream + 1, self.settings, 32768
                    )
                header = {"status": "ok", "size": len(BODY)}
                frames = writer.response(env.request, header, BODY)
                flags = Flag.DONE | Flag.STREAM_OPEN
                reply = Envelope(Kind.FRAMES, flags, env.conn, env.request, env.stream)
                out.add([reply.pack(), frames])
                answered += 1
        if out.records:
            self.sock.send(out.take())
        self.busy_s += time.thread_time() - started
        return answered


async def front_us_per_request(count: int) -> tuple[float, float]:
    """(front CPU us per request, writes to the client per request)."""
    with tempfile.TemporaryDirectory() as ipc_dir:
        limits = Limits(max_inflight=1 << 16, max_inflight_per_stream=1 << 12)
        config = ServeConfig(workers=1, fronts=1, limits=limits)
        spec = {"config": config, "index": 0, "tcp_port": None, "http_port": None}
        spec.update(ipc_dir=ipc_dir, fronts=1)
        app = FrontApp(spec, lambda *args, **kwargs: None)
        worker = FakeWorker(app.zctx, app.endpoint)
        try:
            worker.say_ready()
            while not app.router.ready or not app.router.ready[0]:
                await asyncio.sleep(0.001)
            conn = app.new_connection()
            transport = CountingTransport()
            conn.connection_made(transport)
            settings, reads = client_reads(count)
            conn.data_received(settings)
            await asyncio.sleep(0.01)
            worker.busy_s = 0.0
            answered = 0
            started = time.thread_time()
            for data in reads:
                conn.data_received(data)
                await asyncio.sleep(0)  # the front's flush of its batch to the worker
                answered += worker.answer()
                await asyncio.sleep(0)  # the front reads the answers, then writes
            deadline = time.monotonic() + 10
            while answered < count and time.monotonic() < deadline:
                await asyncio.sleep(0)
                answered += worker.answer()
            while conn.pending and time.monotonic() < deadline:
                await asyncio.sleep(0)
            elapsed = time.thread_time() - started - worker.busy_s
            assert answered == count and not conn.pending, (answered, len(conn.pending))
            return elapsed / count * 1e6, transport.writes / count
        finally:
            for conn in list(app.connections.values()):
                conn.connection_lost(None)
            await asyncio.sleep(0.01)  # the worker hears that the connection closed
            worker.sock.close(linger=0)
            await app.shutdown()


def main() -> None:
    runs = [asyncio.run(front_us_per_request(REQUESTS)) for _ in range(RUNS)]
    us = statistics.median(run[0] for run in runs)
    writes = statistics.median(run[1] for run in runs)
    label = f"front, get of {len(BODY)} B, {PER_READ} requests a read"
    print(f"{label:<52} {us:10.2f} us/request ({writes:.2f} writes/request)")


if __name__ == "__main__":
    main()
