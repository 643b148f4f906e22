"""The router, sans I/O: the core's events and the workers' messages in, actions out."""

from __future__ import annotations

from typing import Any

from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import CREDIT_GRANT_BYTES, decode_credit
from server.ipc.messages import Fatal, Rejection, StreamParams, decode_request
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    DataChunk,
    RequestReady,
    RequestRejected,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.payloads import StreamSettings, pack
from server.router import (
    Action,
    AnswerError,
    Deliver,
    EndServerStream,
    FailConnection,
    FailStream,
    GatherStats,
    Router,
    ToWorker,
)

PARAMS = StreamParams("zstd-8mb", 3, "stream", 32768, False)


def router(workers: int = 2, conns: tuple[int, ...] = (1,)) -> Router:
    r = Router()
    for index in range(workers):
        r.worker_ready(index)
    for conn in conns:
        r.open_connection(conn, PARAMS)
    return r


def ready(
    rid: int, sid: int = 1, name: str = "echo", end: bool = False, **args: Any
) -> RequestReady:
    command_map = pack({"name": name, "args": args})
    return RequestReady(rid, sid, name, args, (), False, end, command_map)


def trace(actions: list[Action]) -> list[str]:
    """Each message to a worker as ``w<worker> <KIND> c<conn> r<request> s<stream>``; other
    actions as their repr."""
    out = []
    for action in actions:
        if isinstance(action, ToWorker):
            env = Envelope.unpack(action.message[0])
            out.append(f"w{action.worker} {env.kind.name} c{env.conn} r{env.request} s{env.stream}")
        else:
            out.append(repr(action))
    return out


def test_a_stream_opens_on_the_least_loaded_worker_and_keeps_it() -> None:
    r = router()
    assert trace(r.event(1, ready(1, sid=1))) == ["w0 STREAM_OPEN c1 r0 s1", "w0 REQUEST c1 r1 s1"]
    assert trace(r.event(1, ready(3, sid=3))) == ["w1 STREAM_OPEN c1 r0 s3", "w1 REQUEST c1 r3 s3"]
    assert trace(r.event(1, ready(5, sid=1))) == ["w0 REQUEST c1 r5 s1"]
    assert r.loads == [1, 1]


def test_the_request_carries_the_clients_map_and_data_untouched() -> None:
    r = router()
    command_map = pack({"name": "put", "args": {"key": "k"}})
    chunks = (DataChunk(False, b"abc"), DataChunk(True, b"\x28\xb5"))
    event = RequestReady(1, 1, "put", {"key": "k"}, chunks, True, False, command_map)
    _open, message = r.event(1, event)
    assert isinstance(message, ToWorker)
    env = Envelope.unpack(message.message[0])
    assert env.flags & Flag.HAS_DATA
    assert message.message[1] is command_map
    body = decode_request(message.message[1:], has_data=True)
    assert body.data == chunks and body.command.name == "put"


def test_no_worker_means_a_local_retryable_overloaded() -> None:
    r = router(workers=0)
    (action,) = r.event(1, ready(1))
    assert action == AnswerError(
        1, 1, 1, ErrorCode.OVERLOADED, "no worker is available", True, False
    )
    assert r.event(1, StreamEnded(1)) == [EndServerStream(1, 1)]


def test_rejections_go_through_the_worker_except_refused_streams() -> None:
    r = router()
    refused = RequestRejected(1, 3, ErrorCode.TOO_MANY_STREAMS, "max_streams", False)
    (action,) = r.event(1, refused)
    assert isinstance(action, AnswerError) and action.code is ErrorCode.TOO_MANY_STREAMS
    over = RequestRejected(3, 1, ErrorCode.TOO_LARGE, "big", True)
    actions = r.event(1, over)
    assert trace(actions) == ["w0 STREAM_OPEN c1 r0 s1", "w0 REJECT c1 r3 s1"]
    reject = actions[1]
    assert isinstance(reject, ToWorker)
    assert Rejection.decode(reject.message[1]) == Rejection("too-large", "big", False)
    assert Envelope.unpack(reject.message[0]).flags & Flag.END_STREAM


def frames(worker: int, request: int, data: bytes, *, done: bool, conn: int = 1, sid: int = 1):  # type: ignore[no-untyped-def]
    flags = (Flag.DONE if done else 0) | Flag.STREAM_OPEN
    return worker, Envelope(Kind.FRAMES, flags, conn, request, sid), data


def test_frames_are_delivered_and_credit_flows_back_while_the_client_reads() -> None:
    r = router()
    r.event(1, ready(1))
    big = b"x" * CREDIT_GRANT_BYTES
    deliver, grant = r.frames(*frames(0, 1, big, done=False))
    assert deliver == Deliver(1, 1, 1, big, False, True)
    assert isinstance(grant, ToWorker) and trace([grant]) == ["w0 CREDIT c1 r0 s1"]
    assert decode_credit(grant.message[1]) == CREDIT_GRANT_BYTES
    r.pause(1)
    assert len(r.frames(*frames(0, 1, big, done=False))) == 1  # no grant while paused
    (owed,) = r.resume(1)
    assert isinstance(owed, ToWorker) and decode_credit(owed.message[1]) == CREDIT_GRANT_BYTES


def test_frames_from_a_worker_that_does_not_serve_the_stream_are_dropped() -> None:
    r = router()
    r.event(1, ready(1))
    assert r.frames(*frames(1, 1, b"stale", done=True)) == []
    assert r.frames(*frames(0, 1, b"x", done=True, conn=9)) == []  # unknown connection
    env = Envelope(Kind.CONN_FATAL, 0, 1, 1, 1)
    fatal = Fatal(ErrorCode.TOO_LARGE, "bomb")
    assert r.fatal(1, env, fatal) == []
    assert r.fatal(0, env, fatal) == [FailConnection(1, ErrorCode.TOO_LARGE, "bomb")]


def test_worker_loss_fails_its_streams_and_replays_encoding_on_a_live_worker() -> None:
    r = router(workers=3, conns=(1, 2))
    r.event(1, ready(1, sid=1))  # worker 0
    settings = StreamSettings("zstd-8mb", 3, 23, "stream")
    r.event(1, StreamSettingsReceived(3, settings))  # worker 1, with encoded data
    r.event(2, ready(1, sid=1))  # worker 2
    r.event(1, ready(3, sid=5))  # worker 0
    actions = r.worker_lost(0)
    assert actions == [
        FailStream(1, 1, ErrorCode.WORKER_LOST, "the worker serving this stream was lost"),
        FailStream(1, 5, ErrorCode.WORKER_LOST, "the worker serving this stream was lost"),
    ]
    assert r.frames(*frames(0, 1, b"late", done=True)) == []  # the lost worker's last words
    actions = r.worker_lost(1)
    assert trace(actions)[1:] == ["w2 STREAM_OPEN c1 r0 s3", "w2 CLIENT_STREAM_SETTINGS c1 r0 s3"]
    assert trace(r.event(2, ready(3, sid=1))) == ["w2 REQUEST c2 r3 s1"]  # untouched
    assert r.pick_worker() == 2


def test_an_ended_stream_keeps_its_route_until_answered_and_its_worker_after() -> None:
    r = router()
    r.event(1, ready(1, sid=1))
    r.event(1, ready(1, sid=3))  # worker 1
    assert trace(r.event(1, StreamEnded(1))) == ["w0 STREAM_END c1 r0 s1"]
    assert r.loads == [0, 1]
    assert len(r.frames(*frames(0, 1, b"answer", done=True))) == 1
    assert r.connections[1].routes.keys() == {3}
    # Begun again, the stream goes back to its worker, though another is less loaded now.
    r.event(1, ready(3, sid=3, end=True))
    assert trace(r.event(1, ready(5, sid=1))) == ["w0 STREAM_OPEN c1 r0 s1", "w0 REQUEST c1 r5 s1"]


def test_stats_hold_the_streams_later_messages_until_gathered() -> None:
    r = router()
    r.event(1, ready(1))
    (gather,) = r.event(1, ready(3, name="stats"))
    assert isinstance(gather, GatherStats)
    assert r.event(1, ready(5)) == [] and r.event(1, StreamReset(1)) == []
    actions = r.stats_gathered(gather.token, {"front": {"pid": 1}})
    assert trace(actions) == [
        "w0 REQUEST c1 r3 s1",
        "w0 REQUEST c1 r5 s1",
        "w0 STREAM_RESET c1 r0 s1",
    ]
    first = actions[0]
    assert isinstance(first, ToWorker)
    assert decode_request(first.message[1:], has_data=False).snapshot == {"front": {"pid": 1}}
    assert r.stats_gathered(gather.token, {}) == []


def test_stats_for_a_stream_whose_worker_was_lost_are_dropped() -> None:
    r = router()
    (gather,) = r.event(1, ready(1, name="stats"))[1:]
    assert isinstance(gather, GatherStats)
    r.worker_lost(0)
    assert r.stats_gathered(gather.token, {}) == []


def test_closing_a_connection_tells_each_of_its_workers_once() -> None:
    r = router()
    r.event(1, ready(1, sid=1))
    r.event(1, ready(3, sid=3))
    r.event(1, ready(5, sid=5))
    assert trace(r.close_connection(1)) == ["w0 CONN_CLOSED c1 r0 s0", "w1 CONN_CLOSED c1 r0 s0"]
    assert r.loads == [0, 0]
    assert r.close_connection(1) == []


def test_nothing_stale_reaches_a_client_after_its_worker_was_lost() -> None:
    """A lost worker's frames, sent before or after the loss, are dropped, even once its
    replacement (same index) serves the stream again; frames for a request the stream does
    not wait for are dropped too."""
    r = router()
    r.event(1, ready(1, sid=1))  # on w0
    r.event(1, ready(3, sid=1))
    frames = Envelope(Kind.FRAMES, Flag.DONE | Flag.STREAM_OPEN, 1, 1, 1)
    assert [type(a) for a in r.frames(0, frames, b"answer 1")][:1] == [Deliver]
    lost = r.worker_lost(0)
    assert [a for a in lost if isinstance(a, FailStream)] == [
        FailStream(1, 1, ErrorCode.WORKER_LOST, lost[0].message)  # type: ignore[union-attr]
    ]
    late = Envelope(Kind.FRAMES, Flag.DONE | Flag.STREAM_OPEN, 1, 3, 1)
    assert r.frames(0, late, b"answer 3") == []  # its stream left the worker
    r.worker_ready(0)  # the replacement
    r.event(1, ready(5, sid=1))  # back on w0
    assert r.frames(0, late, b"answer 3") == []  # request 3 was answered with worker-lost
    assert r.frames(1, late, b"answer 3") == []  # and w1 never served stream 1
    current = Envelope(Kind.FRAMES, Flag.DONE | Flag.STREAM_OPEN, 1, 5, 1)
    assert [type(a) for a in r.frames(0, current, b"answer 5")][:1] == [Deliver]


def test_connections_using_a_worker() -> None:
    r = router(conns=(1, 2, 3))
    r.event(1, ready(1, sid=1))  # w0
    r.event(2, ready(1, sid=1))  # w1
    r.event(3, ready(1, sid=1))  # w0
    r.event(3, ready(3, sid=3))  # w1
    assert sorted(r.connections_using(0)) == [1, 3]
    assert sorted(r.connections_using(1)) == [2, 3]


def test_credit_held_front_wide_is_kept_and_granted_on_release() -> None:
    r = router()
    r.event(1, ready(1, sid=1))
    r.hold_credit()
    frames = Envelope(Kind.FRAMES, Flag.STREAM_OPEN, 1, 1, 1)
    actions = r.frames(0, frames, b"x" * CREDIT_GRANT_BYTES)
    assert [type(a) for a in actions] == [Deliver]  # delivered, but no credit back
    assert r.resume(1) == []  # a client reading again gets nothing while credit is held
    (grant,) = [a for a in r.release_credit() if isinstance(a, ToWorker)]
    assert decode_credit(grant.message[1]) == CREDIT_GRANT_BYTES
