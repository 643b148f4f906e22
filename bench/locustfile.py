"""A Locust user that drives zplex through the project's client library, for load from many
machines (``locust -f bench/locustfile.py --host HOST:PORT``; README, "Load from many
machines with Locust").

Each user is one connection (the synchronous :class:`bench.client.Client`) with
``ZPLEX_STREAMS`` streams. It replays a workload like ``zplex bench`` does: the objects of
``ZPLEX_WORKLOAD`` (``stdlib``, ``versioned`` or ``dir:PATH``) in the workload's order, each
on the stream its affinity group hashes to (groups cut for balance as in the bench), so
related objects share a long-lived compression context. The first user of each Locust
process puts the objects the server's store lacks, with ``ZPLEX_TOKEN``. Every ``get`` is
reported to Locust's statistics with its latency and response size (the body's bytes); an
error-response is a failure named by its error code, a lost connection or a timeout by what
happened, and a body whose size or digest differs from the object's by ``content-mismatch``.

Why the synchronous client under gevent: Locust runs every user as a gevent greenlet and
monkey-patches ``socket``, ``select`` and ``selectors`` when it starts, so the synchronous
client, which waits on a selector, yields to the other users while it waits, with no code of
its own. The asyncio client would need an event loop per user inside a greenlet, and that
loop would block every other user of the process while it runs.

Other settings: ``ZPLEX_ENCODING`` (``zstd-8mb``), ``ZPLEX_LEVEL`` (3), ``ZPLEX_LIMIT_BYTES``
(the corpus cap; the bench's default).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import gevent.lock
from locust import User, constant, task

from bench.affinity import split_groups
from bench.client import Client, ConnectionLost, ServerError, StreamPool, body_digest
from bench.workload_items import Item, Workload
from bench.workloads import parse_workload

#: Smallest affinity group the workload is cut into (as the bench does: ``bench.corpus``).
MIN_GROUP_BYTES = 1 << 20
TIMEOUT_S = 30.0
#: Requests in flight while the store is filled.
FILL_BATCH = 32
STORED_WORKLOADS = ("stdlib", "versioned", "dir:")


@dataclass(frozen=True)
class Settings:
    workload: str
    token: str | None
    streams: int
    encoding: str
    level: int
    limit_bytes: int | None

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> Settings:
        workload = env.get("ZPLEX_WORKLOAD", "stdlib")
        if not workload.startswith(STORED_WORKLOADS):
            raise ValueError(
                f"ZPLEX_WORKLOAD must be stdlib, versioned or dir:PATH, not {workload!r}"
            )
        limit = env.get("ZPLEX_LIMIT_BYTES")
        return cls(
            workload=workload,
            token=env.get("ZPLEX_TOKEN") or None,
            streams=int(env.get("ZPLEX_STREAMS", "4")),
            encoding=env.get("ZPLEX_ENCODING", "zstd-8mb"),
            level=int(env.get("ZPLEX_LEVEL", "3")),
            limit_bytes=int(limit) if limit else None,
        )


def parse_host(host: str | None) -> tuple[str, int]:
    """Locust's ``--host`` as ``HOST:PORT`` (``[V6]:PORT`` too; a ``tcp://`` prefix is
    allowed)."""
    if not host:
        raise ValueError("give the server as --host HOST:PORT")
    rest = host.removeprefix("tcp://")
    name, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not name:
        raise ValueError(f"--host takes HOST:PORT, not {host!r}")
    return name.strip("[]"), int(port)


@dataclass(frozen=True)
class Replay:
    """The workload as the users replay it: items in order, each with its stream and the
    digest its body must have."""

    name: str
    items: list[Item]
    streams: list[int]
    digests: list[str]


def build_replay(workload: Workload, n_streams: int) -> Replay:
    """Groups cut as the bench cuts them for ``n_streams`` streams, each group on the stream
    it hashes to."""
    cut = max(MIN_GROUP_BYTES, -(-workload.raw_bytes // max(1, n_streams)))
    items = split_groups(workload, cut).items
    pool = StreamPool(n_streams)
    return Replay(
        workload.name,
        items,
        [pool.stream_for(item.group) for item in items],
        [body_digest(item.data) for item in items],
    )


def fill_store(client: Client, replay: Replay, token: str | None) -> int:
    """Put the objects the store lacks (or holds with another size); returns how many."""
    listed = client.list()
    held = {str(k): int(s) for k, s in listed.header.get("keys", [])}
    missing = [item for item in replay.items if held.get(item.key) != len(item.data)]
    if missing and token is None:
        raise RuntimeError(f"the store lacks {len(missing)} objects: set ZPLEX_TOKEN to put them")
    for start in range(0, len(missing), FILL_BATCH):
        batch = [("put", {"key": i.key}, i.data, 1) for i in missing[start : start + FILL_BATCH]]
        for result in client.pipeline(batch, TIMEOUT_S):
            if isinstance(result, ServerError):
                raise RuntimeError(f"cannot fill the store: {result}")
    return len(missing)


class _Shared:
    """What the users of one Locust process share: the replay, built once, and whether the
    store was filled."""

    lock = gevent.lock.Semaphore()
    replay: Replay | None = None
    filled = False


class ZplexUser(User):
    """One connection replaying the workload, one request at a time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.settings = Settings.from_env()
        host, port = parse_host(self.host)
        self.client = Client.connect(
            host,
            port,
            encodings=(self.settings.encoding,),
            level=self.settings.level,
            context="stream",
            token=self.settings.token,
            timeout=TIMEOUT_S,
        )
        with _Shared.lock:
            if _Shared.replay is None:
                kwargs: dict[str, Any] = {}
                if self.settings.limit_bytes is not None:
                    kwargs["limit_bytes"] = self.settings.limit_bytes
                workload = parse_workload(self.settings.workload, **kwargs)
                _Shared.replay = build_replay(workload, self.settings.streams)
            if not _Shared.filled:
                fill_store(self.client, _Shared.replay, self.settings.token)
                _Shared.filled = True
        self.replay = _Shared.replay
        self.next = 0

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    @task
    def get(self) -> None:
        replay = self.replay
        index = self.next
        self.next = (index + 1) % len(replay.items)
        item = replay.items[index]
        started = time.perf_counter()
        length = 0
        failure: Exception | None = None
        try:
            response = self.client.get(item.key, stream=replay.streams[index])
            length = len(response.body)
            if length != len(item.data) or body_digest(response.body) != replay.digests[index]:
                failure = ZplexFailure("content-mismatch")
        except ServerError as exc:
            failure = ZplexFailure(str(exc.code))
        except (ConnectionLost, OSError, TimeoutError) as exc:
            failure = ZplexFailure(type(exc).__name__)
        self.environment.events.request.fire(
            request_type="get",
            name=replay.name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=failure,
            context={},
        )
        if failure is not None and self.client.closed:  # a new connection for the next one
            self.on_stop()
            self.on_start()


class ZplexFailure(Exception):
    """A failed request, named by its error code (Locust groups failures by message)."""
