"""The worker core driven directly (tests/units/workerharness.py): batches from fronts in,
each front's batch out. No sockets, no processes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from workerharness import (
    IDENTITY,
    ZSTD,
    Harness,
    client_events,
    completed,
    errors,
    frames,
    live_contexts,
    make_core,
    trace,
)

from server.ipc.batch import encode_message
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import STREAM_CREDIT_BYTES
from server.ipc.messages import (
    Fatal,
    Ready,
    Rejection,
    Welcome,
    WorkerStats,
    encode_request,
)
from server.protocol.events import (
    DataChunk,
    ResponseBody,
    ResponseError,
    ResponseHeader,
)
from server.protocol.frames import FrameType, decode_frames
from server.protocol.limits import Limits
from server.protocol.payloads import pack


@pytest.fixture
def w(tmp_path: Path) -> Harness:
    return Harness(make_core(tmp_path))


# -- start, fronts, control -----------------------------------------------------------------


def test_start_says_ready_to_every_front(w: Harness) -> None:
    w.core.start()
    sent = w.collect()
    assert [(s.front, s.env.kind) for s in sent] == [(0, Kind.READY), (1, Kind.READY)]
    assert all(Ready.decode(s.parts[0]) == Ready(4321, 2, "host-a") for s in sent)
    w.core.heartbeat(1)
    assert trace(w.collect()) == ["1 HEARTBEAT 0/0/0 0"]
    assert w.send(0, Envelope(Kind.HEARTBEAT)) == []  # a front's heartbeat needs no answer


def test_requests_answers_and_errors(w: Harness) -> None:
    w.open(3)
    w.request(3, 1, "put", {"key": "k"}, b"value")
    w.request(3, 3, "get", {"key": "k"})
    w.request(3, 5, "get", {"key": "../k"})
    w.request(3, 7, "nope")
    events = client_events(frames(w.sent), (3, 1), (3, 3), (3, 5), (3, 7))
    bodies = [e.data for e in events if isinstance(e, ResponseBody)]
    errors = [e.error.code for e in events if isinstance(e, ResponseError)]
    assert bodies == [b"value"] and completed(events) == [1, 3]
    assert errors == ["bad-request", "unknown-command"]
    assert trace(w.sent)[:2] == [
        "0 FRAMES 1/3/1 done|open : 0 4 begin stream-settings eos ; "
        "1 4 encoded command-response eos",
        "0 FRAMES 1/3/3 done|open : 3 4 encoded command-response eos",
    ]
    assert all(s.env.flags & Flag.DONE for s in w.sent)


def test_each_front_has_its_own_streams(w: Harness) -> None:
    """Connection 1, stream 3 of front 0 and of front 1 are two streams; answers go back to
    the front that asked, and what one front drops leaves the other's streams alone."""
    w.open(3, IDENTITY, front=0)
    w.open(3, IDENTITY, front=1)
    assert trace(w.request(3, 1, "echo", data=b"zero", front=0))[0].startswith("0 FRAMES 1/3/1")
    assert trace(w.request(3, 1, "echo", data=b"one", front=1))[0].startswith("1 FRAMES 1/3/1")
    assert w.send(0, Envelope(Kind.CONN_CLOSED, 0, 1)) == []
    assert w.request(3, 3, "echo", data=b"gone", front=0) == []
    w.request(3, 3, "echo", data=b"still here", front=1)
    events = client_events(frames(w.sent, front=1), (3, 1), (3, 3))
    assert [e.data for e in events if isinstance(e, ResponseBody)] == [b"one", b"still here"]
    assert [k[0] for k in w.core.table.streams] == [1]


def test_rejoin_drops_that_fronts_streams_and_says_ready_again(w: Harness) -> None:
    w.open(3, front=0)
    w.open(5, front=1)
    w.open(7, front=1)
    assert trace(w.send(1, Envelope(Kind.REJOIN))) == ["1 READY 0/0/0 0"]
    assert list(w.core.table.streams) == [(0, 1, 3)]
    w.core.rejoin(0)  # the loop's call when a remote worker's front fell silent
    assert trace(w.collect()) == ["0 READY 0/0/0 0"] and not w.core.table.streams


def test_shutdown_from_any_front_stops_before_the_rest_of_its_batch(w: Harness) -> None:
    w.open(3, IDENTITY)
    echo = encode_request(pack({"name": "echo", "args": {}}), None)
    blob = b"".join(
        [
            encode_message([Envelope(Kind.SHUTDOWN).pack()]),
            encode_message([Envelope(Kind.REQUEST, 0, 1, 1, 3).pack(), *echo]),
        ]
    )
    assert w.core.receive(1, blob) is False and w.core.stopped
    assert w.collect() == []


def test_a_welcome_sets_index_limits_and_joins_further_fronts(tmp_path: Path) -> None:
    w = Harness(make_core(tmp_path, index=-1, endpoints=("tcp://a:1",), remote=True))
    w.core.start()
    assert [Ready.decode(s.parts[0]).index for s in w.collect()] == [-1]
    welcome = Welcome(5, "zplex/front", Limits(max_contexts_per_worker=7), ("tcp://b:2",))
    sent = w.send(0, Envelope(Kind.WELCOME), welcome.encode())
    assert [(s.front, s.env.kind, Ready.decode(s.parts[0]).index) for s in sent] == [
        (1, Kind.READY, 5)
    ]
    assert w.core.endpoints == ["tcp://a:1", "tcp://b:2"]
    assert w.core.limits.max_contexts_per_worker == 7 == w.core.table.max_contexts
    # The second front knows the worker by its own index; the first front's welcome again
    # (after a rejoin) names no front that is not joined already.
    w.send(1, Envelope(Kind.WELCOME), Welcome(9, "zplex/front", Limits()).encode())
    assert w.send(0, Envelope(Kind.WELCOME), welcome.encode()) == []
    stats = [
        WorkerStats.decode(s.parts[0])
        for front in (0, 1)
        for s in w.send(front, Envelope(Kind.STATS, conn=77))
    ]
    assert [(s.index, s.remote) for s in stats] == [(5, True), (9, True)]
    assert w.request(3, 1, "capabilities") == []  # no stream opened: nothing to answer


def test_a_remote_worker_offers_delete_as_its_front_says(tmp_path: Path) -> None:
    """``--allow-delete`` is the front's: its WELCOME tells a remote worker (started without
    the flag) whether to run ``delete``, so every worker of the server offers the same."""
    w = Harness(make_core(tmp_path, index=-1, endpoints=("tcp://a:1",), remote=True))
    w.core.start()
    w.collect()
    w.core.commands.store.put("obj", b"x")
    w.open(3, IDENTITY)
    rid = 1
    for allow in (False, True):
        w.send(
            0,
            Envelope(Kind.WELCOME),
            Welcome(5, "zplex/f", Limits(), (), allow_delete=allow).encode(),
        )
        w.request(3, rid, "delete", {"key": "obj"})
        w.request(3, rid + 2, "capabilities")
        rid += 4
    events = client_events(frames(w.sent, stream=3), *((3, r) for r in (1, 3, 5, 7)))
    assert errors(events) == [(1, "unknown-command", False)]
    headers = {e.request_id: e.header for e in events if isinstance(e, ResponseHeader)}
    assert headers[5] == {"status": "ok", "size": 1}  # the second delete ran
    assert ["delete" in headers[rid]["commands"] for rid in (3, 7)] == [False, True]
    assert completed(events) == [3, 5, 7]


# -- credit and waiting messages ------------------------------------------------------------


def test_credit_pauses_a_stream_while_others_go_on_and_keeps_its_order(w: Harness) -> None:
    size = STREAM_CREDIT_BYTES + (1 << 20)  # more than one window: the stream pauses
    w.open(3, IDENTITY)
    first = w.request(3, 1, "generate", {"size": size, "kind": "random"})
    assert first and all(s.env.request == 1 for s in first)
    assert not first[-1].env.flags & Flag.DONE
    # Behind the paused response, in order: a request, a rejection, the stream's end.
    assert w.request(3, 3, "echo", data=b"after") == []
    reject = Rejection("overloaded", "busy", True).encode()
    assert w.send(0, Envelope(Kind.REJECT, 0, 1, 5, 3), reject) == []
    assert w.send(0, Envelope(Kind.STREAM_END, 0, 1, 0, 3)) == []
    # Another stream of the same connection is not held up.
    w.open(5, IDENTITY)
    other = w.request(5, 1001, "echo", data=b"other stream")
    assert trace(other)[0].startswith("0 FRAMES 1/5/1001 done|open")
    # A paused stream's context is not evicted.
    assert (0, 1, 3) in live_contexts(w.core)
    rest = w.credit(3, 1 << 30)
    assert [s.env.request for s in rest][-3:] == [3, 5, 0]
    assert trace(rest)[-1] == "0 FRAMES 1/3/0 open : 0 4 end stream-settings eos"
    events = client_events(frames(w.sent, stream=3), (3, 1), (3, 3), (3, 5))
    assert completed(events) == [1, 3]
    assert [(e.request_id, e.error.code) for e in events if isinstance(e, ResponseError)] == [
        (5, "overloaded")
    ]
    body = b"".join(e.data for e in events if isinstance(e, ResponseBody) and e.request_id == 1)
    assert len(body) == size
    assert (0, 1, 3) not in w.core.table.streams


def test_credit_for_an_unknown_stream_is_ignored(w: Harness) -> None:
    assert w.credit(9, 100) == []


# -- streams: reject, end, reset, connection closed, fatal ----------------------------------


def test_a_rejection_is_answered_in_order_and_may_end_the_stream(w: Harness) -> None:
    w.open(3)
    reject = Rejection("overloaded", "busy", True).encode()
    sent = w.send(0, Envelope(Kind.REJECT, Flag.END_STREAM, 1, 1, 3), reject)
    assert trace(sent) == ["0 FRAMES 1/3/1 done : 1 4 begin|end error-response 0"]
    assert not w.core.table.streams
    assert w.send(0, Envelope(Kind.REJECT, 0, 1, 3, 3), reject) == []  # unknown now


def test_end_stream_drops_the_context(w: Harness) -> None:
    w.open(3)
    sent = w.request(3, 1, "echo", data=b"bye", flags=Flag.END_STREAM)
    assert not w.core.table.streams
    assert sent[-1].env.flags == Flag.DONE  # the server stream is not open any more
    assert "end" in trace(sent)[-1].split(" : ")[1]


def test_stream_end_ends_a_begun_server_stream_only(w: Harness) -> None:
    w.open(3)
    w.open(5)
    w.request(3, 1, "echo", data=b"x")
    assert trace(w.send(0, Envelope(Kind.STREAM_END, 0, 1, 0, 3))) == [
        "0 FRAMES 1/3/0 open : 0 4 end stream-settings eos"
    ]
    assert w.send(0, Envelope(Kind.STREAM_END, 0, 1, 0, 5)) == []  # never begun
    assert not w.core.table.streams


def test_a_reset_stream_begins_its_server_stream_again(w: Harness) -> None:
    w.open(3)
    w.request(3, 1, "echo", data=b"one")
    assert w.send(0, Envelope(Kind.STREAM_RESET, 0, 1, 0, 3)) == []
    assert live_contexts(w.core) == [] and w.core.table.context_count == 0
    sent = w.request(3, 3, "echo", data=b"two")
    assert trace(sent) == [
        "0 FRAMES 1/3/3 done|open : 0 4 begin stream-settings eos ; "
        "3 4 encoded command-response eos"
    ]


def test_conn_closed_drops_every_stream_of_the_connection(w: Harness) -> None:
    w.open(3, conn=1)
    w.open(5, conn=1)
    w.open(3, conn=2)
    assert w.send(0, Envelope(Kind.CONN_CLOSED, 0, 1)) == []
    assert list(w.core.table.streams) == [(0, 2, 3)]
    assert w.request(5, 1, "echo", data=b"late", conn=1) == []


def test_corrupt_encoded_data_fails_the_connection(w: Harness) -> None:
    w.open(3)
    w.open(5)
    settings = pack({"encoding": "zstd-8mb", "context": "stream"})
    w.send(0, Envelope(Kind.CLIENT_STREAM_SETTINGS, 0, 1, 0, 3), settings)
    parts = encode_request(
        pack({"name": "echo", "args": {}}), [DataChunk(True, b"not zstd at all")]
    )
    sent = w.send(0, Envelope(Kind.REQUEST, Flag.HAS_DATA, 1, 1, 3), *parts)
    assert trace(sent) == ["0 CONN_FATAL 1/3/1 0"]
    assert Fatal.decode(sent[0].parts[0]).code == "too-large"
    assert not w.core.table.streams  # every stream of the connection
    # Messages the front sent before it learnt of the failure are dropped quietly.
    assert w.request(3, 3, "echo") == []
    assert w.request(5, 1, "echo") == []


# -- the context budget ---------------------------------------------------------------------


def test_least_recently_used_contexts_are_evicted_by_count(tmp_path: Path) -> None:
    w = Harness(make_core(tmp_path, Limits(max_contexts_per_worker=2)))
    for stream in (1, 3, 5, 7):
        w.open(stream)
        w.request(stream, stream, "generate", {"size": 1000})
    assert live_contexts(w.core) == [(0, 1, 5), (0, 1, 7)]  # the two most recent keep theirs
    assert w.core.table.evictions == 2
    # An evicted stream's next response starts its server stream again.
    again = trace(w.request(1, 9, "echo", data=b"back"))
    assert again == [
        "0 FRAMES 1/1/9 done|open : 0 2 begin stream-settings eos ; "
        "9 2 encoded command-response eos"
    ]
    assert live_contexts(w.core) == [(0, 1, 7), (0, 1, 1)]


def test_least_recently_used_contexts_are_evicted_by_bytes(tmp_path: Path) -> None:
    probe = Harness(make_core(tmp_path))
    probe.open(1)
    probe.request(1, 1, "echo", data=b"x")
    one = probe.core.table.context_bytes  # one zstd-8mb context
    w = Harness(make_core(tmp_path, Limits(max_context_bytes_per_worker=one * 5 // 2)))
    for stream in (1, 3, 5, 7, 9):
        w.open(stream)
        w.request(stream, stream, "echo", data=b"data")
    assert live_contexts(w.core) == [(0, 1, 7), (0, 1, 9)]
    assert w.core.table.evictions == 3
    assert w.core.table.context_bytes == 2 * one


def test_a_context_being_sent_is_never_evicted_and_counts_against_the_budget(
    tmp_path: Path,
) -> None:
    """A response paused mid-way (a client that does not read) keeps its context and that
    context counts: once such contexts fill the budget, a stream that needs a new context
    gets a retryable ``overloaded`` until they complete."""
    w = Harness(make_core(tmp_path, Limits(max_contexts_per_worker=1)))
    w.open(1)
    w.request(1, 1, "echo", data=b"warm")  # the stream's context counts
    big = w.request(1, 3, "generate", {"size": 3 * STREAM_CREDIT_BYTES, "kind": "random"})
    assert not big[-1].env.flags & Flag.DONE  # paused mid-response
    table = w.core.table
    assert (table.context_count, table.sending_count) == (1, 1)
    assert table.context_bytes == table.sending_bytes == w.core.table.memory() > 0
    for stream in (3, 5):
        w.open(stream)
        refused = w.request(stream, stream, "echo", data=b"small")
        events = client_events(frames(refused), (stream, stream))
        assert errors(events) == [(stream, "overloaded", True)]
    assert live_contexts(w.core) == [(0, 1, 1)]  # kept though the budget is full
    w.credit(1, 1 << 30)
    events = client_events(frames(w.sent, stream=1), (1, 1), (1, 3))
    assert completed(events) == [1, 3]  # and its response decodes whole
    assert (table.context_count, table.sending_count, table.sending_bytes) == (1, 0, 0)
    # Complete, it is an idle context again: evicted for the next stream that needs one.
    w.request(3, 7, "echo", data=b"small")
    assert completed(client_events(frames(w.sent, stream=3), (3, 3), (3, 7))) == [7]
    assert live_contexts(w.core) == [(0, 1, 3)]


def test_the_budget_holds_and_the_running_totals_match_the_contexts(tmp_path: Path) -> None:
    """Random traffic over many streams: after every message the totals equal a count over
    every stream, and the budget holds (only the most recent stream may exceed it)."""
    probe = Harness(make_core(tmp_path))
    probe.open(1)
    probe.request(1, 1, "echo", data=b"x")
    one = probe.core.table.context_bytes
    limits = Limits(max_contexts_per_worker=5, max_context_bytes_per_worker=one * 4)
    w = Harness(make_core(tmp_path, limits))
    rng = random.Random(7)
    opened: set[tuple[int, int]] = set()
    for n in range(400):
        front, stream = rng.randrange(2), rng.randrange(1, 40, 2)
        if (front, stream) not in opened:
            w.open(stream, rng.choice([ZSTD, ZSTD, IDENTITY]), front=front)
            opened.add((front, stream))
        roll = rng.random()
        if roll < 0.05:
            w.send(front, Envelope(Kind.STREAM_RESET, 0, 1, 0, stream))
        elif roll < 0.1:
            w.request(stream, 2 * n + 1, "echo", data=b"end", front=front, flags=Flag.END_STREAM)
            opened.discard((front, stream))
        else:
            w.request(stream, 2 * n + 1, "generate", {"size": rng.randrange(1, 5000)}, front=front)
        table = w.core.table
        live = [c for c in table.streams.values() if c.writer.encoder is not None]
        assert table.context_count == len(live)
        assert table.context_bytes == sum(c.writer.memory() for c in live)
        newest = next(reversed(table.streams.values()), None)
        rest = [c for c in live if c is not newest]
        assert len(rest) <= limits.max_contexts_per_worker
        assert sum(c.writer.memory() for c in rest) <= limits.max_context_bytes_per_worker
    assert w.core.table.evictions > 0


# -- stats ----------------------------------------------------------------------------------


def test_stats_count_over_every_front_and_answer_the_front_that_asked(w: Harness) -> None:
    w.open(3, IDENTITY, front=0)
    w.open(5, front=1)
    w.request(3, 1, "echo", data=b"a" * 100, front=0)
    w.request(5, 1, "generate", {"size": 5000, "kind": "zeros"}, front=1)
    w.request(5, 3, "nope", front=1)
    sent = w.send(1, Envelope(Kind.STATS, conn=42))
    assert trace(sent) == ["1 STATS_REPLY 42/0/0 0"]
    stats = WorkerStats.decode(sent[0].parts[0])
    # The responses' frames, stream-settings included (the wire bytes the worker counts).
    wire = sum(
        8 + len(f.payload)
        for s in w.sent
        if s.env.kind is Kind.FRAMES and s.env.request != 3
        for f in decode_frames(s.parts[0])
        if f.frame_type in (FrameType.COMMAND_RESPONSE, FrameType.STREAM_SETTINGS)
    )
    assert (stats.pid, stats.index, stats.remote, stats.cpu_user, stats.rss) == (
        4321,
        2,
        False,
        1.5,
        10 << 20,
    )
    assert (stats.streams, stats.requests, stats.evictions) == (2, 3, 0)
    assert stats.bytes_raw > 5100 and stats.bytes_wire == wire
    assert stats.context_bytes == w.core.table.memory() > 0


def test_contexts_made_while_many_are_hot_get_small_match_tables(tmp_path: Path) -> None:
    """From ``small_tables_from`` contexts held, a new zstd context gets small match tables:
    less memory, the same bodies for the client, and counted in the stats."""
    w = Harness(make_core(tmp_path, small_tables_from=2))
    body = b"".join(b"line %d of a text that repeats itself\n" % (i % 50) for i in range(3000))
    for n, stream in enumerate((1, 3, 5, 7)):
        w.open(stream, IDENTITY if stream == 7 else ZSTD)
        w.request(stream, 1, "echo", data=body)
        events = client_events(frames(w.sent, stream=stream), (stream, 1))
        assert b"".join(e.data for e in events if isinstance(e, ResponseBody)) == body
        assert w.core.table.streams[(0, 1, stream)].writer.small_tables is (n >= 2)
    memory = {s: w.core.table.streams[(0, 1, s)].writer.memory() for s in (1, 3, 5)}
    assert memory[5] < memory[1] - (512 << 10) and memory[1] == memory[3]  # tables, not window
    stats = WorkerStats.decode(w.send(0, Envelope(Kind.STATS, conn=1))[0].parts[0])
    assert stats.small_table_contexts == 1  # stream 5's (stream 7 is identity: no tables)


def test_worker_stats_from_a_worker_that_predates_a_field_decode_with_its_default() -> None:
    stats = WorkerStats(7, 1, False, 1.5, 0.25, 10, 20, 3, 4096, 9, 100, 40, 0)
    older = stats.to_map()
    del older["small_table_contexts"], older["traffic"]
    assert WorkerStats.decode(pack(older)) == stats
