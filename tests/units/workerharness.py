"""A worker core driven directly, for the tests of the worker: batches from fronts in, each
front's batch out, no sockets, no processes. Output reads as a trace: one line per message,
``front kind conn/stream/request flags``, then for FRAMES the heads of its frames in the
notation."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from server.ipc.batch import decode_batch, encode_message
from server.ipc.envelope import Envelope, Flag, Kind
from server.ipc.flow import encode_credit
from server.ipc.messages import StreamParams, encode_request
from server.protocol.client_conn import ClientConnection
from server.protocol.events import ClientEvent, DataChunk, ResponseComplete, ResponseError
from server.protocol.frames import decode_frames
from server.protocol.limits import Limits
from server.protocol.notation import format_frame
from server.protocol.payloads import pack
from workers.commands import Commands, ServerInfo
from workers.core import ProcessUsage, WorkerCore
from workers.store import ObjectStore

ZSTD = StreamParams("zstd-8mb", 3, "stream", 32768, True).encode()
IDENTITY = StreamParams("identity", None, "stream", 32768, True).encode()
FRONTS = ("ipc:///tmp/front-0", "ipc:///tmp/front-1")
USAGE = ProcessUsage(pid=4321, cpu_user=1.5, cpu_system=0.25, rss=10 << 20, max_rss=12 << 20)


class Sent(NamedTuple):
    front: int
    env: Envelope
    parts: list[bytes]


class Harness:
    """A core and what it sent, front by front, in order."""

    def __init__(self, core: WorkerCore) -> None:
        self.core = core
        self.sent: list[Sent] = []

    def collect(self) -> list[Sent]:
        new = [
            Sent(front, Envelope.unpack(m[0]), m[1:])
            for front, blob in self.core.take()
            for m in decode_batch(blob)
        ]
        self.sent.extend(new)
        return new

    def send(self, front: int, env: Envelope, *parts: bytes, run: bool = True) -> list[Sent]:
        """One message from ``front``, as the loop hands it over; what the core sent (with
        ``run``, once the responses in progress went as far as their credit allows)."""
        assert self.core.receive(front, encode_message([env.pack(), *parts]))
        new = self.collect()
        return new + self.run() if run else new

    def run(self, steps: int | None = None) -> list[Sent]:
        """Steps of the responses in progress, as the loop takes them between polls: until
        none can go on, or ``steps`` of them; what the core sent."""
        while self.core.has_work() and steps != 0:
            self.core.work()
            steps = None if steps is None else steps - 1
        return self.collect()

    def open(self, stream: int, params: bytes = ZSTD, *, front: int = 0, conn: int = 1) -> None:
        env = Envelope(Kind.STREAM_OPEN, 0, conn, 0, stream)
        assert self.send(front, env, params, run=False) == []

    def request(
        self,
        stream: int,
        rid: int,
        name: str,
        args: dict[str, object] | None = None,
        data: bytes | None = None,
        *,
        flags: int = 0,
        front: int = 0,
        conn: int = 1,
        run: bool = True,
    ) -> list[Sent]:
        chunks = None
        if data is not None:
            flags |= Flag.HAS_DATA
            chunks = [DataChunk(False, data)]
        parts = encode_request(pack({"name": name, "args": args or {}}), chunks)
        env = Envelope(Kind.REQUEST, flags, conn, rid, stream)
        return self.send(front, env, *parts, run=run)

    def credit(
        self, stream: int, amount: int, *, front: int = 0, conn: int = 1, run: bool = True
    ) -> list[Sent]:
        env = Envelope(Kind.CREDIT, 0, conn, 0, stream)
        return self.send(front, env, encode_credit(amount), run=run)


def make_core(tmp_path: Path, limits: Limits | None = None, **kwargs: object) -> WorkerCore:
    limits = limits or Limits()
    commands = Commands(
        ObjectStore(str(tmp_path / "store")), ServerInfo("zplex/t", limits, 1 << 28)
    )
    options: dict[str, object] = {
        "index": 2,
        "endpoints": FRONTS,
        "pid": 4321,
        "host": "host-a",
        "usage": lambda: USAGE,
    }
    options.update(kwargs)
    return WorkerCore(commands, limits, **options)  # type: ignore[arg-type]


def trace(sent: list[Sent]) -> list[str]:
    lines = []
    for s in sent:
        env = s.env
        flags = [
            name
            for name, bit in (("done", Flag.DONE), ("open", Flag.STREAM_OPEN))
            if env.flags & bit
        ]
        ids = f"{env.conn}/{env.stream}/{env.request}"
        line = f"{s.front} {env.kind.name} {ids} {'|'.join(flags) or '0'}"
        if env.kind is Kind.FRAMES:
            heads = [format_frame(f._replace(payload=b"")) for f in decode_frames(s.parts[0])]
            line += " : " + " ; ".join(heads)
        lines.append(line)
    return lines


def frames(sent: list[Sent], front: int = 0, stream: int | None = None) -> bytes:
    return b"".join(
        s.parts[0]
        for s in sent
        if s.env.kind is Kind.FRAMES
        and s.front == front
        and (stream is None or s.env.stream == stream)
    )


def client_events(data: bytes, *streams_and_ids: tuple[int, int]) -> list[ClientEvent]:
    """What a client that sent these (stream, request id) pairs reads from ``data``."""
    conn = ClientConnection()
    for stream, rid in streams_and_ids:
        conn.send_request(stream, "x", request_id=rid)
    return conn.receive_data(data)


def completed(events: list[ClientEvent]) -> list[int]:
    return [e.request_id for e in events if isinstance(e, ResponseComplete)]


def errors(events: list[ClientEvent]) -> list[tuple[int, str, bool]]:
    """(request id, code, retryable) of each error-response."""
    return [
        (e.request_id, e.error.code, e.error.retryable)
        for e in events
        if isinstance(e, ResponseError)
    ]


def live_contexts(core: WorkerCore) -> list[tuple[int, int, int]]:
    return [k for k, ctx in core.table.streams.items() if ctx.writer.encoder is not None]
