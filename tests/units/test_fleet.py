"""The worker fleet without sockets: fake links, a fake clock, recorded events."""

from __future__ import annotations

import asyncio

import pytest

from server.fleet import Fleet
from server.ipc.envelope import Envelope, Kind
from server.ipc.messages import Fatal, Ready, Welcome, WorkerStats
from server.ipc.remote import REMOTE_SILENCE_S
from server.protocol.errors import ErrorCode
from server.protocol.limits import Limits


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, list[bytes]]] = []
        self.dropped: list[bytes] = []

    def send(self, identity: bytes, message: list[bytes]) -> None:
        self.sent.append((identity, message))

    def flush(self) -> None:
        pass

    def drop(self, identity: bytes) -> None:
        self.dropped.append(identity)

    def close(self) -> None:
        pass

    def kinds(self) -> list[tuple[bytes, str]]:
        out = [(identity, Envelope.unpack(m[0]).kind.name) for identity, m in self.sent]
        self.sent.clear()
        return out


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def worker_ready(self, index: int) -> None:
        self.seen.append(("ready", index))

    def worker_lost(self, index: int) -> None:
        self.seen.append(("lost", index))

    def frames(self, worker: int, env: Envelope, data: bytes) -> None:
        self.seen.append(("frames", (worker, env.conn, data)))

    def fatal(self, worker: int, env: Envelope, fatal: Fatal) -> None:
        self.seen.append(("fatal", (worker, fatal.code)))

    def worker_backlogged(self, index: int, backlogged: bool) -> None:
        self.seen.append(("backlogged" if backlogged else "flowing", index))

    def worker_silent(self, index: int) -> None:
        self.seen.append(("silent", index))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def fleet(local: int = 2) -> tuple[Fleet, Recorder, FakeLink, FakeLink, Clock]:
    events, clock = Recorder(), Clock()
    f = Fleet(local, "zplex/t", Limits(max_streams=7), events, clock)
    f.local, f.remote = FakeLink(), FakeLink()
    return f, events, f.local, f.remote, clock  # type: ignore[return-value]


def ready(pid: int, index: int, host: str = "") -> list[bytes]:
    return [Envelope(Kind.READY).pack(), Ready(pid, index, host).encode()]


def test_local_workers_become_ready_and_their_frames_are_handed_on() -> None:
    f, events, _local, _remote, _clock = fleet()
    f.from_local(b"w0", ready(11, 0))
    assert not f.local_ready
    f.from_local(b"w1", ready(12, 1))
    assert f.local_ready and [s.pid for s in f.slots] == [11, 12]
    f.from_local(b"w1", [Envelope(Kind.FRAMES, 0, 5, 1, 1).pack(), b"bytes"])
    fatal = Fatal(ErrorCode.PROTOCOL, "out of step").encode()
    f.from_local(b"w0", [Envelope(Kind.CONN_FATAL, 0, 5, 1, 1).pack(), fatal])
    assert events.seen == [
        ("ready", 0),
        ("ready", 1),
        ("frames", (1, 5, b"bytes")),
        ("fatal", (0, ErrorCode.PROTOCOL)),
    ]


@pytest.mark.parametrize(
    ("identity", "parts"),
    [
        (b"w1", ready(1, 0)),  # READY for another slot
        (b"w7", [Envelope(Kind.FRAMES).pack(), b""]),  # no such worker
        (b"x", [Envelope(Kind.FRAMES).pack(), b""]),
        (b"w0", [Envelope(Kind.STREAM_OPEN).pack(), b""]),  # a front -> worker kind
        (b"w0", [b"garbage"]),
    ],
)
def test_bad_local_messages_raise_for_the_link_to_log(identity: bytes, parts: list[bytes]) -> None:
    f, events, _local, _remote, _clock = fleet()
    f.from_local(b"w0", ready(11, 0))
    events.seen.clear()
    with pytest.raises(ValueError):
        f.from_local(identity, parts)
    assert events.seen == []


def test_a_local_worker_this_front_does_not_know_is_told_to_rejoin() -> None:
    """A restarted front hears first from workers that served its predecessor: what they
    send is stale, and they must start over with this front (REJOIN, then READY)."""
    f, events, local, _remote, _clock = fleet()
    f.from_local(b"w0", [Envelope(Kind.HEARTBEAT).pack()])
    f.from_local(b"w1", [Envelope(Kind.FRAMES, 0, 5, 1, 1).pack(), b"stale"])
    assert local.kinds() == [(b"w0", "REJOIN"), (b"w1", "REJOIN")]
    assert events.seen == []
    f.from_local(b"w0", ready(11, 0))
    f.from_local(b"w0", [Envelope(Kind.HEARTBEAT).pack()])
    assert local.kinds() == [] and events.seen == [("ready", 0)]


def test_a_second_ready_from_a_local_worker_loses_its_streams_first() -> None:
    f, events, _local, _remote, _clock = fleet()
    f.from_local(b"w0", ready(11, 0))
    f.from_local(b"w0", ready(12, 0))  # replaced before this front saw the old one go
    assert events.seen == [("ready", 0), ("lost", 0), ("ready", 0)]
    assert f.slots[0].pid == 12 and f.losses == 1


def test_a_remote_worker_is_welcomed_watched_and_lost() -> None:
    f, events, _local, remote, clock = fleet()
    f.from_remote(b"r-a", ready(21, -1, "host-a"))
    (slot,) = [s for s in f.slots if s.remote]
    assert slot.index == 2 and slot.host == "host-a"
    (identity, welcome) = remote.sent[0]
    assert identity == b"r-a" and Welcome.decode(welcome[1]) == Welcome(2, "zplex/t", f.limits)
    remote.sent.clear()
    clock.now += REMOTE_SILENCE_S / 2
    f.heartbeat()
    assert remote.kinds() == [(b"r-a", "HEARTBEAT")]
    f.from_remote(b"r-a", [Envelope(Kind.HEARTBEAT).pack()])  # heard: last_seen moves on
    clock.now += REMOTE_SILENCE_S + 1
    f.heartbeat()
    assert events.seen == [("ready", 2), ("lost", 2)]
    assert remote.kinds() == []
    # It speaks again after being declared lost: told to start over, nothing handed on.
    f.from_remote(b"r-a", [Envelope(Kind.FRAMES, 0, 1, 1, 1).pack(), b"stale"])
    assert remote.kinds() == [(b"r-a", "REJOIN")]
    f.from_remote(b"r-b", [Envelope(Kind.FRAMES, 0, 1, 1, 1).pack(), b"unknown"])
    assert remote.kinds() == [(b"r-b", "REJOIN")]
    assert events.seen == [("ready", 2), ("lost", 2)]


def test_a_remote_worker_that_starts_over_loses_its_streams_first() -> None:
    f, events, _local, _remote, _clock = fleet(local=0)
    f.from_remote(b"r-a", ready(21, -1))
    f.from_remote(b"r-a", ready(22, -1))
    assert events.seen == [("ready", 0), ("lost", 0), ("ready", 0)]
    assert f.slots[0].pid == 22


def test_gather_stats_asks_every_ready_worker_and_sorts_the_answers() -> None:
    f, _events, local, _remote, _clock = fleet()
    f.from_local(b"w0", ready(11, 0))
    f.from_local(b"w1", ready(12, 1))

    def reply(index: int, token: int) -> list[bytes]:
        stats = WorkerStats(10 + index, index, False, 1.0, 0.5, 1, 2, 0, 0, 3, 4, 5, 0)
        return [Envelope(Kind.STATS_REPLY, conn=token).pack(), stats.encode()]

    async def scenario() -> list[dict[str, object]]:
        task = asyncio.ensure_future(f.gather_stats(timeout=5))
        await asyncio.sleep(0)
        token = Envelope.unpack(local.sent[0][1][0]).conn
        assert local.kinds() == [(b"w0", "STATS"), (b"w1", "STATS")]
        f.from_local(b"w1", reply(1, token))
        f.from_local(b"w0", reply(0, token))
        return await task

    replies = asyncio.run(scenario())
    assert [r["index"] for r in replies] == [0, 1] and replies[0]["pid"] == 10


def test_gather_stats_gives_up_on_silent_workers() -> None:
    f, _events, _local, _remote, _clock = fleet(local=1)
    f.from_local(b"w0", ready(11, 0))
    assert asyncio.run(f.gather_stats(timeout=0.01)) == []


def test_shutdown_goes_to_ready_remote_workers_only() -> None:
    f, _events, local, remote, _clock = fleet(local=1)
    f.from_local(b"w0", ready(12, 0))
    f.from_remote(b"r-a", ready(21, -1))
    remote.sent.clear()
    f.shutdown_remote()
    assert remote.kinds() == [(b"r-a", "SHUTDOWN")]
    f.worker_exited(1)
    f.shutdown_remote()
    assert remote.kinds() == [] and local.kinds() == []


def test_a_local_worker_that_falls_silent_is_reported() -> None:
    f, events, local, _remote, clock = fleet()
    f.from_local(b"w0", ready(11, 0))
    f.from_local(b"w1", ready(12, 1))
    clock.now += f.local_silence_s - 1
    f.from_local(b"w1", [Envelope(Kind.HEARTBEAT).pack()])  # w1 is heard from; w0 is not
    f.heartbeat()
    assert events.seen[-1] == ("ready", 1)
    clock.now += 2
    f.heartbeat()
    assert events.seen[-1] == ("silent", 0)
    assert local.kinds() == []  # local workers are not sent heartbeats


def test_a_lost_worker_loses_its_backlog_and_backlogs_are_reported_by_index() -> None:
    f, events, local, remote, _clock = fleet()
    f.from_local(b"w1", ready(12, 1))
    f.from_remote(b"r-a", ready(21, -1))
    f.backlogged(b"w1", True)
    f.backlogged(b"r-a", True)
    f.backlogged(b"nobody", True)
    assert events.seen[-2:] == [("backlogged", 1), ("backlogged", 2)]
    f.worker_exited(1)
    assert local.dropped == [b"w1"] and remote.dropped == []
