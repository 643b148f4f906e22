"""Responses produced a chunk at a time and interleaved over the streams of one worker,
driven through the sans-I/O core (tests/units/workerharness.py): no sockets, no processes."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import tracemalloc
from pathlib import Path

import pytest
from workerharness import (
    IDENTITY,
    ZSTD,
    Harness,
    Sent,
    client_events,
    completed,
    errors,
    frames,
    make_core,
)

from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import STREAM_CREDIT_BYTES
from server.ipc.messages import encode_request
from server.protocol.encoding import Encoder
from server.protocol.events import ClientEvent, DataChunk, ResponseBody, ResponseHeader
from server.protocol.frames import FrameType, decode_frames
from server.protocol.limits import Limits
from server.protocol.payloads import StreamSettings, pack, unpack_map
from workers.bodies import BODY_CHUNK_BYTES, CHUNKED_ABOVE_BYTES
from workers.commands import Commands, ServerInfo
from workers.core import WorkerCore
from workers.generate import generate
from workers.store import ObjectStore, digest

MIB = 1 << 20


@pytest.fixture
def w(tmp_path: Path) -> Harness:
    return Harness(make_core(tmp_path))


def body_of(events: list[ClientEvent], rid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ResponseBody) and e.request_id == rid)


def header_of(events: list[ClientEvent], rid: int) -> dict[str, object]:
    (header,) = [e.header for e in events if isinstance(e, ResponseHeader) and e.request_id == rid]
    return dict(header)


def done_index(sent: list[Sent], stream: int, rid: int) -> int:
    """Where, among the messages sent, the request's last frames went."""
    (index,) = [
        i
        for i, s in enumerate(sent)
        if s.env.kind is Kind.FRAMES
        and (s.env.stream, s.env.request) == (stream, rid)
        and s.env.flags & Flag.DONE
    ]
    return index


def store_of(w: Harness) -> ObjectStore:
    return w.core.commands.store


# -- interleaving ---------------------------------------------------------------------------


def test_a_short_response_completes_before_a_long_one_on_another_stream(w: Harness) -> None:
    """Two streams of one worker: a long response goes on a chunk at a time; a shorter one
    asked for meanwhile takes every other step, and completes first."""
    w.open(1)
    w.open(3)
    for stream in (1, 3):
        w.credit(stream, 1 << 30)  # a client that reads all: only the scheduling matters
    long_size, short_size = 24 * MIB, 2 * MIB
    w.request(1, 1, "generate", {"size": long_size, "kind": "random"}, run=False)
    w.run(steps=3)
    assert w.core.has_work()
    w.request(3, 3, "generate", {"size": short_size, "kind": "random"}, run=False)
    turns: list[int] = []
    while w.core.has_work():
        if (0, 1, 3) in w.core.table.streams and w.core.table.streams[(0, 1, 3)].sending:
            turns.append(w.core.runnable[0][0][2])
        w.run(steps=1)
    # Round-robin: while the short response was in progress, the streams took turns.
    assert len(turns) > 2 * short_size // BODY_CHUNK_BYTES
    assert all(a != b for a, b in itertools.pairwise(turns)), turns
    assert done_index(w.sent, 3, 3) < done_index(w.sent, 1, 1)
    for stream, rid, size in ((1, 1, long_size), (3, 3, short_size)):
        events = client_events(frames(w.sent, stream=stream), (stream, rid))
        assert completed(events) == [rid]
        body = body_of(events, rid)
        assert body == generate(size, "random") and header_of(events, rid)["size"] == size
        assert header_of(events, rid)["digest"] == digest(body)


def test_the_first_frames_of_a_long_response_go_out_before_it_is_all_compressed(
    w: Harness,
) -> None:
    w.open(1, IDENTITY)
    w.credit(1, 1 << 30)
    w.request(1, 1, "echo", data=bytes(range(256)) * (MIB // 64), run=False)  # 4 MiB
    first = w.run(steps=1)
    assert first and not first[-1].env.flags & Flag.DONE
    assert sum(len(s.parts[0]) for s in first) <= 2 * BODY_CHUNK_BYTES
    assert w.core.has_work()
    w.run()
    assert completed(client_events(frames(w.sent), (1, 1))) == [1]


def test_a_worker_handles_messages_between_the_steps_of_a_long_response(w: Harness) -> None:
    """Stats, heartbeats and other streams' small requests are answered while a long response
    is in progress: the loop hands over messages between steps."""
    w.open(1)
    w.open(3, IDENTITY)
    w.credit(1, 1 << 30)
    w.request(1, 1, "generate", {"size": 16 * MIB, "kind": "text"}, run=False)
    w.run(steps=2)
    answer = w.request(3, 1, "echo", data=b"quick", run=False)
    assert completed(client_events(frames(answer), (3, 1))) == [1]
    stats = w.send(0, Envelope(Kind.STATS, conn=9), run=False)
    assert [s.env.kind for s in stats] == [Kind.STATS_REPLY]
    assert w.core.has_work()  # the long response is still in progress


# -- memory held per stream -----------------------------------------------------------------


def test_a_stream_that_is_not_read_holds_its_credit_and_a_chunk_at_most(w: Harness) -> None:
    """A response far larger than the credit, to a client that reads nothing: the worker
    sends a window's worth and a chunk, then pauses; meanwhile it never holds more than a
    few chunks (the body is never built whole); each grant lets a window more through."""
    size = 40 * MIB
    w.open(1, IDENTITY)

    def sent_bytes() -> int:
        """Steps until the stream pauses; the bytes sent (handed to the front, not kept)."""
        total = 0
        while True:
            total += sum(len(blob) for _, blob in w.core.take())
            if not w.core.has_work():
                return total
            w.core.work()

    tracemalloc.start()
    try:
        w.request(1, 1, "generate", {"size": size, "kind": "random"}, run=False)
        first = sent_bytes()
        _, peak = tracemalloc.get_traced_memory()
        assert STREAM_CREDIT_BYTES <= first <= STREAM_CREDIT_BYTES + 2 * BODY_CHUNK_BYTES
        # A step's copies of one chunk (made, encoded, framed, batched): far from the body.
        assert peak <= 8 * BODY_CHUNK_BYTES, peak
        tracemalloc.reset_peak()
        w.credit(1, first, run=False)
        again = sent_bytes()
        _, peak = tracemalloc.get_traced_memory()
        assert first - BODY_CHUNK_BYTES <= again <= first + 2 * BODY_CHUNK_BYTES
        assert peak <= 8 * BODY_CHUNK_BYTES, peak
    finally:
        tracemalloc.stop()
    last = w.credit(1, 1 << 30)
    assert last[-1].env.flags & Flag.DONE and not w.core.has_work()
    assert w.core.table.streams[(0, 1, 1)].sending is None


# -- get in chunks --------------------------------------------------------------------------


def test_a_large_object_is_read_a_chunk_at_a_time_and_its_digest_cached(w: Harness) -> None:
    data = generate(3 * MIB + 5, "text", 3)
    store_of(w).put("big", data)
    store_of(w)._digests.clear()  # as after a restart: the digest is not known
    for stream in (1, 3):
        w.open(stream)
        w.credit(stream, 1 << 30)
    w.request(1, 1, "get", {"key": "big"})
    assert len(store_of(w)._digests) == 1  # found by the first pass, cached
    first = w.request(3, 3, "get", {"key": "big"}, run=False)
    assert first  # no digest pass: the body's first frames at once
    w.run()
    w.request(1, 5, "get", {"key": "big", "offset": 7, "length": 2 * MIB})
    events = client_events(frames(w.sent, stream=1), (1, 1), (1, 5))
    events += client_events(frames(w.sent, stream=3), (3, 3))
    assert completed(events) == [1, 5, 3]
    for rid in (1, 3):
        assert body_of(events, rid) == data
        assert header_of(events, rid) == {"status": "ok", "size": len(data), "digest": digest(data)}
    assert body_of(events, 5) == data[7 : 7 + 2 * MIB]
    assert header_of(events, 5)["digest"] == digest(data[7 : 7 + 2 * MIB])
    assert header_of(events, 5)["object_size"] == len(data)


def test_an_object_truncated_while_it_is_read_ends_its_request_with_an_error(
    w: Harness,
) -> None:
    """Truncated during the digest pass: nothing was sent, the request gets ``internal``.
    Truncated while sent (the digest cached): the response ends with ``internal`` after
    its first frames. Either way the stream carries on, decodable."""
    store = store_of(w)
    store.put("a", generate(4 * MIB, "log", 1))
    store._digests.clear()
    w.open(1)
    w.credit(1, 1 << 30)
    w.request(1, 1, "get", {"key": "a"}, run=False)
    w.run(steps=1)
    os.truncate(store.path_for("a"), MIB)
    w.run()
    store.put("b", generate(4 * MIB, "log", 2))  # its digest is cached by the put
    w.request(1, 3, "get", {"key": "b"}, run=False)
    w.run(steps=2)
    os.truncate(store.path_for("b"), MIB)
    w.run()
    w.request(1, 5, "echo", data=b"still decodable")
    events = client_events(frames(w.sent), (1, 1), (1, 3), (1, 5))
    assert errors(events) == [(1, "internal", False), (3, "internal", False)]
    assert completed(events) == [5] and body_of(events, 5) == b"still decodable"


def test_a_stream_dropped_mid_response_lets_go_of_its_file(w: Harness) -> None:
    store_of(w).put("big", bytes(8 * MIB))
    store_of(w).get("big", 0, 1)  # the store keeps its directory's descriptor from here
    open_fds = len(os.listdir("/proc/self/fd"))
    w.open(1, IDENTITY)
    w.request(1, 1, "get", {"key": "big"})  # paused at its credit: the file stays open
    assert len(os.listdir("/proc/self/fd")) == open_fds + 1
    w.send(0, Envelope(Kind.CONN_CLOSED, 0, 1))
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert not w.core.has_work() and not w.core.table.streams


# -- generate -------------------------------------------------------------------------------


def test_generate_is_capped_by_the_configured_size(tmp_path: Path) -> None:
    limits = Limits()
    cap = CHUNKED_ABOVE_BYTES * 3
    commands = Commands(ObjectStore(str(tmp_path / "s")), ServerInfo("zplex/t", limits, cap))
    w = Harness(WorkerCore(commands, limits, index=0, endpoints=("x",), pid=1))
    w.open(1)
    w.credit(1, 1 << 30)
    w.request(1, 1, "generate", {"size": cap + 1})
    w.request(1, 3, "generate", {"size": cap, "kind": "json", "seed": 4})
    events = client_events(frames(w.sent), (1, 1), (1, 3))
    assert errors(events) == [(1, "bad-request", False)]
    body = body_of(events, 3)
    assert body == generate(cap, "json", 4)
    assert header_of(events, 3)["digest"] == digest(body)
    assert hashlib.blake2b(body, digest_size=32).hexdigest() in str(header_of(events, 3))


# -- the budget with responses in progress ---------------------------------------------------


def test_totals_hold_with_responses_in_progress_paused_and_dropped(tmp_path: Path) -> None:
    """Random traffic over many streams, with responses larger than the credit, grants,
    steps, closed connections: after every message the table's totals (of every context,
    and of those being sent) equal a count over the streams, the worker never holds more
    contexts than its budget (room is made before a context is), and every stream that can
    go on is queued, once."""
    limits = Limits(max_contexts_per_worker=4)
    w = Harness(make_core(tmp_path, limits))
    rng = random.Random(11)
    opened: set[tuple[int, int]] = set()
    rid = 1
    for _ in range(600):
        conn, stream = rng.randrange(1, 3), rng.randrange(1, 16, 2)
        if (conn, stream) not in opened:
            w.open(stream, rng.choice([ZSTD, ZSTD, IDENTITY]), conn=conn)
            opened.add((conn, stream))
        roll = rng.random()
        if roll < 0.3:
            size = rng.choice([1000, 3 * MIB, 6 * MIB])
            args = {"size": size, "kind": "random", "seed": rid}
            w.request(stream, rid, "generate", args, conn=conn, run=False)
            rid += 2
        elif roll < 0.5:
            w.credit(stream, rng.choice([MIB, 4 * MIB]), conn=conn, run=False)
        elif roll < 0.55:
            w.send(0, Envelope(Kind.CONN_CLOSED, 0, conn), run=False)
            opened = {o for o in opened if o[0] != conn}
        else:
            w.run(steps=rng.randrange(1, 6))
        table = w.core.table
        live = [c for c in table.streams.values() if c.writer.encoder is not None or c.sending]
        sending = [c for c in live if c.sending is not None]
        assert table.context_count == len(live)
        assert table.context_bytes == sum(c.counted or 0 for c in live)
        assert all(c.counted == c.writer.memory() for c in live if not c.sending)
        assert table.sending_count == len(sending)
        assert table.sending_bytes == sum(c.counted or 0 for c in sending)
        assert table.context_count <= limits.max_contexts_per_worker
        # Every stream with a response in progress and credit is queued, once.
        queued = [key for key, ctx in w.core.runnable if table.get(key) is ctx]
        assert len(queued) == len(set(queued))
        for key, ctx in table.streams.items():
            if ctx.sending is not None and ctx.window.is_open:
                assert key in queued
    assert rid > 50 and any(code == "overloaded" for _, code, _ in all_errors(w))


def all_errors(w: Harness) -> list[tuple[int, str, bool]]:
    found = []
    for conn in (1, 2):
        for stream in range(1, 16, 2):
            data = b"".join(
                s.parts[0]
                for s in w.sent
                if s.env.kind is Kind.FRAMES and (s.env.conn, s.env.stream) == (conn, stream)
            )
            found += errors_in(data)
    return found


def errors_in(data: bytes) -> list[tuple[int, str, bool]]:
    """The error-responses among frames (decoded on their own, without a client's state)."""
    out = []
    for frame in decode_frames(data):
        if frame.frame_type is FrameType.ERROR_RESPONSE:
            error = unpack_map(frame.payload, "error")
            out.append((frame.request_id, error["code"], error.get("retryable", False)))
    return out


def test_a_request_refused_for_the_budget_still_keeps_the_stream_decoder_in_step(
    tmp_path: Path,
) -> None:
    """The client's command data on a ``stream`` context refers to its earlier data: a
    request answered ``overloaded`` still has its data decoded, so the next one decodes."""
    w = Harness(make_core(tmp_path, Limits(max_contexts_per_worker=1)))
    w.open(1)
    w.request(1, 1, "generate", {"size": 3 * STREAM_CREDIT_BYTES, "kind": "random"})
    w.open(3)
    settings = StreamSettings("zstd-8mb", 3, 23, "stream")
    w.send(0, Envelope(Kind.CLIENT_STREAM_SETTINGS, 0, 1, 0, 3), pack(settings.to_wire()))
    encoder = Encoder(settings, 32768)
    command = pack({"name": "echo", "args": {}})
    for rid, data in ((3, b"the same words again " * 500), (5, b"the same words again! " * 500)):
        chunks = [DataChunk(True, p) for p in encoder.feed(data) + encoder.end_response()]
        parts = encode_request(command, chunks)
        w.send(0, Envelope(Kind.REQUEST, Flag.HAS_DATA, 1, rid, 3), *parts)
        if rid == 3:
            w.credit(1, 1 << 30)  # the response in progress completes: the budget is free
    events = client_events(frames(w.sent, stream=3), (3, 3), (3, 5))
    assert errors(events) == [(3, "overloaded", True)]
    assert completed(events) == [5] and body_of(events, 5) == b"the same words again! " * 500
