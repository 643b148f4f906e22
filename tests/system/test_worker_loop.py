"""The worker's ZeroMQ loop against fronts played by ROUTER sockets in the test: READY to
every front, HEARTBEAT when idle, REJOIN per front, a WELCOME naming another front, SHUTDOWN.
The loop runs in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from server.ipc.batch import decode_batch, encode_message
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import STREAM_CREDIT_BYTES
from server.ipc.messages import Ready, StreamParams, Welcome, WorkerStats, encode_request
from server.protocol.client_conn import ClientConnection
from server.protocol.events import DataChunk, ResponseBody, ResponseComplete
from server.protocol.limits import Limits
from server.protocol.payloads import pack
from workers.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)

IDENTITY = StreamParams("identity", None, "stream", 32768, True).encode()


class Front:
    """One front's ROUTER."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 2)  # a front that does not read fills up soon
        self.sock.bind(endpoint)

    def next(self, timeout_s: float = 10.0) -> tuple[bytes, Envelope, list[bytes]]:
        """The next message (the test's batches hold one each; a worker's may hold more,
        so they are queued)."""
        if not getattr(self, "_queue", None):
            assert self.sock.poll(int(timeout_s * 1000)), "nothing from the worker"
            identity, blob = self.sock.recv_multipart()
            self._queue = [(identity, m) for m in decode_batch(blob)]
        identity, message = self._queue.pop(0)
        return identity, Envelope.unpack(message[0]), message[1:]

    def next_kind(self, kind: Kind, timeout_s: float = 10.0) -> tuple[bytes, list[bytes]]:
        while True:
            identity, env, parts = self.next(timeout_s)
            if env.kind is kind:
                return identity, parts

    def send(self, env: Envelope, *parts: bytes, to: bytes = b"w3") -> None:
        self.sock.send_multipart([to, encode_message([env.pack(), *parts])])


@pytest.fixture
def fronts(tmp_path: Path) -> Iterator[list[Front]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made = [Front(ctx, f"ipc://{tmp_path}/front-{n}") for n in range(3)]
    try:
        yield made
    finally:
        for front in made:
            front.sock.close(linger=0)
        ctx.term()


@pytest.fixture
def worker(
    tmp_path: Path, fronts: list[Front], monkeypatch: pytest.MonkeyPatch
) -> Iterator[threading.Thread]:
    monkeypatch.setattr("workers.worker.HIGH_WATER_MARK", 2)
    config = WorkerConfig(
        3,
        "",
        str(tmp_path / "store"),
        "zplex/t",
        Limits(),
        endpoints=(fronts[0].endpoint, fronts[1].endpoint),
    )
    loop = Worker(config)
    thread = threading.Thread(target=loop.run, name="worker-loop", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        if thread.is_alive():
            fronts[0].send(Envelope(Kind.SHUTDOWN))
        thread.join(10)
        assert not thread.is_alive()


def echo(front: Front, stream: int, rid: int, data: bytes) -> bytes:
    parts = encode_request(pack({"name": "echo", "args": {}}), [DataChunk(False, data)])
    front.send(Envelope(Kind.REQUEST, Flag.HAS_DATA, 1, rid, stream), *parts)
    _identity, frames = front.next_kind(Kind.FRAMES)
    return frames[0]


def test_one_worker_serves_every_front(fronts: list[Front], worker: threading.Thread) -> None:
    first, second, third = fronts
    for front in (first, second):
        identity, parts = front.next_kind(Kind.READY)
        assert identity == b"w3" and Ready.decode(parts[0]).index == 3
    # An idle worker says it is alive, on every front.
    for front in (first, second):
        front.next_kind(Kind.HEARTBEAT, timeout_s=5.0)
    # The same connection and stream on two fronts are two streams, each answered back.
    for front in (first, second):
        front.send(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), IDENTITY)
    assert echo(first, 3, 1, b"to the first").endswith(b"to the first")
    assert echo(second, 3, 1, b"to the second").endswith(b"to the second")
    # REJOIN on the second front drops its streams only, and the worker says READY there.
    second.send(Envelope(Kind.REJOIN))
    second.next_kind(Kind.READY)
    first.send(Envelope(Kind.STATS, conn=9))
    _identity, reply = first.next_kind(Kind.STATS_REPLY)
    stats = WorkerStats.decode(reply[0])
    assert (stats.streams, stats.requests) == (1, 2)
    # A WELCOME naming another front: the worker joins it too.
    welcome = Welcome(3, "zplex/t", Limits(), (third.endpoint,))
    first.send(Envelope(Kind.WELCOME), welcome.encode())
    identity, parts = third.next_kind(Kind.READY)
    assert identity == b"w3" and Ready.decode(parts[0]).index == 3
    # SHUTDOWN from any front ends the worker.
    third.send(Envelope(Kind.SHUTDOWN))
    worker.join(10)
    assert not worker.is_alive()


def test_a_front_that_does_not_read_holds_up_no_other_front(
    fronts: list[Front], worker: threading.Thread
) -> None:
    first, second, _third = fronts
    for front in (first, second):
        front.next_kind(Kind.READY)
        front.send(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 3), IDENTITY)
    # The second front sends requests and reads nothing; the worker answers each in a
    # batch of its own, far more batches than the second front's queues hold. The first
    # front is answered all the same.
    rids = range(1, 61, 2)
    # All of them within the stream's credit (the second front grants none).
    data = bytes(range(256)) * (STREAM_CREDIT_BYTES // 256 // (len(rids) + 2))
    command = pack({"name": "echo", "args": {}})
    for rid in rids:
        parts = encode_request(command, [DataChunk(False, data)])
        second.send(Envelope(Kind.REQUEST, Flag.HAS_DATA, 1, rid, 3), *parts)
        time.sleep(0.005)
        assert echo(first, 3, rid, b"not held up").endswith(b"not held up")
    # When the second front reads again, its responses arrive whole and in order.
    client = ClientConnection()
    for rid in rids:
        client.send_request(3, "echo", request_id=rid)
    bodies = {rid: bytearray() for rid in rids}
    done: list[int] = []
    while len(done) < len(rids):
        _identity, env, parts = second.next()
        if env.kind is Kind.FRAMES:
            for event in client.receive_data(parts[0]):
                if isinstance(event, ResponseBody):
                    bodies[event.request_id] += event.data
                elif isinstance(event, ResponseComplete):
                    done.append(event.request_id)
    assert done == list(rids)
    assert all(body == data for body in bodies.values())


def test_the_loop_answers_and_heartbeats_between_the_steps_of_a_long_response(
    fronts: list[Front], worker: threading.Thread
) -> None:
    """Level 19 on 16 MiB of text is many seconds of the worker's CPU. Between its chunks the
    loop still reads its sockets and heartbeats: a STATS asked once its first frames are out
    is answered before its last, and the other front, sent nothing, gets HEARTBEATs."""
    first, second, _third = fronts
    for front in (first, second):
        front.next_kind(Kind.READY)
    level19 = StreamParams("zstd-8mb", 19, "stream", 32768, True).encode()
    first.send(Envelope(Kind.STREAM_OPEN, 0, 1, 0, 5), level19)
    command = pack({"name": "generate", "args": {"size": 16 << 20, "kind": "text"}})
    first.send(Envelope(Kind.REQUEST, 0, 1, 1, 5), *encode_request(command, None))
    _identity, env, _parts = first.next(timeout_s=30)
    assert env.kind is Kind.FRAMES and not env.flags & Flag.DONE  # the first frames
    first.send(Envelope(Kind.STATS, conn=7))
    while True:
        _identity, env, _parts = first.next(timeout_s=30)
        if env.kind is Kind.STATS_REPLY:
            break
        assert not (env.kind is Kind.FRAMES and env.flags & Flag.DONE), "answered after"
    # Reading both fronts as messages come: two HEARTBEATs reach the second front before
    # the long response's last frames reach the first.
    heartbeats = 0
    while heartbeats < 2:
        for front in (first, second):
            if getattr(front, "_queue", None) or front.sock.poll(10):
                _identity, env, _parts = front.next()
                assert not (env.kind is Kind.FRAMES and env.flags & Flag.DONE), heartbeats
                heartbeats += env.kind is Kind.HEARTBEAT
    first.send(Envelope(Kind.CONN_CLOSED, 0, 1))  # the worker drops the long response
