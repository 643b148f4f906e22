"""The worker section of ``python -m bench.microbench``: the worker's core driven in this
process (no front, no sockets but the ZeroMQ one measured on its own), with the cost per
request of each step a worker takes for a small ``get`` under the ``stream`` policy.

The store holds the ``.py`` files of two standard-library packages; the requests go round
four streams (one per directory), as ``zplex bench -w stdlib --policies stream`` sends them.
"""

from __future__ import annotations

import functools
import os
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from server.ipc.batch import Batch, decode_batch, encode_message
from server.ipc.envelope import Envelope, Kind
from server.ipc.messages import StreamParams, decode_request, encode_request
from server.protocol.encoding import stream_settings_for
from server.protocol.limits import Limits
from server.protocol.payloads import StreamSettings, pack
from server.protocol.responses import ServerStreamWriter
from workers.bodies import ChunkedBody
from workers.commands import Call, Commands, ServerInfo
from workers.core import WorkerCore
from workers.store import ObjectStore

#: Requests per measured run, in batches of this many (about what a front sends a worker
#: in one turn of its loop under the bench's load).
REQUESTS = 2000
BATCH = 16
STREAMS = 4
PACKAGES = ("json", "email")


def fill_store(root: Path) -> list[str]:
    """The stdlib packages' ``.py`` files, as objects under ``<package>/<file>``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    store = ObjectStore(root)
    keys: list[str] = []
    for package in PACKAGES:
        for path in sorted((stdlib / package).glob("*.py")):
            key = f"{package}/{path.name}"
            store.put(key, path.read_bytes())
            keys.append(key)
    return keys


def request_batches(keys: list[str], count: int) -> list[bytes]:
    """``count`` get requests for the keys in turn, each on its directory's stream, as
    batches of :data:`BATCH` messages."""
    out: list[bytes] = []
    batch = Batch()
    for i in range(count):
        key = keys[i % len(keys)]
        stream = 1 + 2 * (PACKAGES.index(key.split("/")[0]) % STREAMS)
        env = Envelope(Kind.REQUEST, 0, 1, (2 * i + 1) & 0xFFFF, stream)
        batch.add([env.pack(), *encode_request(pack({"name": "get", "args": {"key": key}}), None)])
        if len(batch.records) == BATCH:
            out.append(batch.take())
    if batch.records:
        out.append(batch.take())
    return out


def new_core(root: Path) -> WorkerCore:
    limits = Limits()
    commands = Commands(ObjectStore(root, sweep=False), ServerInfo("bench", limits, 1 << 20))
    core = WorkerCore(commands, limits, index=0, endpoints=("inproc://front",), pid=os.getpid())
    params = StreamParams("zstd-8mb", 3, "stream", 32768, False).encode()
    opens = Batch()
    for s in range(STREAMS):
        opens.add([Envelope(Kind.STREAM_OPEN, 0, 1, 0, 1 + 2 * s).pack(), params])
    core.receive(0, opens.take())
    core.take()
    return core


def us_per_request(run: Callable[[], object], count: int, runs: int) -> float:
    """The median over ``runs`` of ``run()``'s time per request, in microseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] / count * 1e6


def rows(runs: int = 5) -> list[tuple[str, float, str]]:
    """The worker's steps, each in µs per request (median of ``runs``)."""
    with tempfile.TemporaryDirectory(prefix="zplex-microbench-") as tmp:
        root = Path(tmp)
        keys = fill_store(root)
        return _measure(root, keys, runs)


def _measure(root: Path, keys: list[str], runs: int) -> list[tuple[str, float, str]]:
    batches = request_batches(keys, REQUESTS)
    messages = [m for blob in batches for m in decode_batch(blob)]
    store = ObjectStore(root, sweep=False)
    commands = Commands(store, ServerInfo("bench", Limits(), 1 << 20))
    calls = [Call({"key": keys[i % len(keys)]}, None, False) for i in range(REQUESTS)]
    results = [commands.get(call) for call in calls]
    out: list[tuple[str, float, str]] = []

    def add(label: str, run: Callable[[], object]) -> None:
        out.append((f"worker: {label}", us_per_request(run, REQUESTS, runs), "us/request"))

    add("decode batches", lambda: [decode_batch(blob) for blob in batches])

    def decode_messages() -> None:
        for m in messages:
            Envelope.unpack(m[0])
            decode_request(m[1:], False)

    add("envelope + request map", decode_messages)

    def open_stat() -> None:
        for key in keys * (REQUESTS // len(keys)):
            store.reader(key).close()

    add("store: open, stat, digest cache", open_stat)

    def get() -> None:
        for call in calls:  # each body dropped at once, as the worker does once it is sent
            commands.get(call)

    add("get: open, read, digest cache", get)
    writers = [ServerStreamWriter(2 * s + 2, _settings(), 32768) for s in range(STREAMS)]

    def compress() -> None:
        for i, (header, body) in enumerate(results):
            assert isinstance(body, bytes)
            writers[i % STREAMS].begin_response(2 * i + 1, header, body).step()

    add("pack header, compress, frame", compress)
    for small in (False, True):
        label = f"compress, 64 streams in turn, {'small' if small else 'default'} tables"
        add(label, functools.partial(_interleaved, results, small))
    frames = [b"\0" * 1100] * REQUESTS

    def outbox() -> None:
        batch = Batch()
        for i, data in enumerate(frames):
            batch.add([Envelope(Kind.FRAMES, 4, 1, 2 * i + 1, 1).pack(), data])
            if i % BATCH == BATCH - 1:
                batch.take()

    add("envelope + batch encode (out)", outbox)
    blobs = [
        b"".join(encode_message([b"\0" * 10, f]) for f in frames[i : i + BATCH])
        for i in range(0, len(frames), BATCH)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        pair = ZmqPair(f"ipc://{tmp}/s")
        try:
            pair.send_all(blobs[:10])  # connected
            add(f"zmq send + recv, a batch per {BATCH}", lambda: pair.send_all(blobs))
        finally:
            pair.close()
    core = new_core(root)

    def whole() -> None:
        for blob in batches:
            core.receive(0, blob)
            core.take()

    add("core: a batch in, its batch out", whole)
    return out


def _settings() -> StreamSettings:
    return stream_settings_for("zstd-8mb", 3, "stream")


def _interleaved(results: list[tuple[dict[str, Any], bytes | ChunkedBody]], small: bool) -> None:
    """The responses over 64 fresh stream contexts in turn (64 hot contexts, as a worker
    serving 64 busy streams holds), with default or small zstd match tables."""
    writers = [ServerStreamWriter(2 * s + 2, _settings(), 32768) for s in range(64)]
    for writer in writers:
        writer.small_tables = small
    for i, (header, body) in enumerate(results):
        assert isinstance(body, bytes)
        writers[(i // 4) % 64].begin_response(2 * i + 1, header, body).step()


class ZmqPair:
    """A DEALER connected to a ROUTER over ipc, as a worker to its front."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(endpoint)
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.connect(endpoint)

    def send_all(self, blobs: list[bytes]) -> None:
        """Each blob sent as the worker does (copied when small), and received."""
        for blob in blobs:
            self.dealer.send(blob, 0, copy=len(blob) < 65536)
            self.router.recv_multipart()

    def close(self) -> None:
        self.dealer.close(0)
        self.router.close(0)
        self.ctx.term()
