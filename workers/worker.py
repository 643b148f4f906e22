"""A worker process: one DEALER socket to the front, one context per client stream.

The loop is serial: messages of one stream arrive in order and are answered in order, so
responses on a stream never interleave. Each stream owns a :class:`ServerStreamWriter` (its
compressor) and, when the client encodes its command data, a :class:`Decoder`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import resource
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from server.ipc.batch import Batch, decode_batch
from server.ipc.envelope import STREAM_SCOPED, Envelope, Flag, Kind
from server.ipc.flow import SendWindow, decode_credit
from server.ipc.messages import (
    Fatal,
    Ready,
    Rejection,
    StreamParams,
    Welcome,
    WorkerStats,
    decode_request,
    decode_stream_settings,
)
from server.ipc.remote import FRONT_KEY, HEARTBEAT_INTERVAL_S, REMOTE_SILENCE_S, WORKER_KEY_SECRET
from server.protocol.encoding import Decoder, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode, RequestError
from server.protocol.events import DataChunk
from server.protocol.limits import Limits
from server.protocol.responses import ServerStreamWriter
from workers.commands import Call, Commands, ServerInfo
from workers.store import ObjectStore

log = logging.getLogger("zplex.worker")

#: Bound on queued messages each way: back-pressure instead of unbounded memory.
HIGH_WATER_MARK = 1000
#: How often an idle worker checks that its front is still alive.
PARENT_CHECK_S = 1.0
#: Output gathered before it is sent without waiting for the end of the batch.
FLUSH_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    index: int
    endpoint: str
    store: str
    server: str
    limits: Limits
    max_generate_bytes: int = 256 << 20
    log_level: str = "WARNING"
    #: A remote worker (``zplex worker``): the directory of its CURVE keys. It joins the
    #: front over TCP, learns its index and limits from the front's WELCOME, and watches
    #: the front with heartbeats instead of its parent process.
    keys: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The keyword arguments of this config (shallow: ``limits`` stays a Limits)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass
class Sending:
    """A response being sent, a chunk at a time, as the front grants credit."""

    env: Envelope
    chunks: Iterator[bytes]
    pending: bytes  # the next chunk (one is held back so that the last can be marked DONE)
    end: bool
    raw_before: int
    wire_before: int


@dataclasses.dataclass
class StreamContext:
    params: StreamParams
    writer: ServerStreamWriter
    decoder: Decoder | None = None
    #: Response bytes this stream may still send before the front grants more: a client
    #: that does not read pauses its own streams here, not the worker.
    window: SendWindow = dataclasses.field(default_factory=SendWindow)
    sending: Sending | None = None
    #: Messages of the stream that wait behind the response being sent (order is kept).
    waiting: collections.deque[tuple[Envelope, list[bytes]]] = dataclasses.field(
        default_factory=collections.deque
    )


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.commands = Commands(
            ObjectStore(config.store),
            ServerInfo(config.server, config.limits, config.max_generate_bytes),
        )
        self.streams: collections.OrderedDict[tuple[int, int], StreamContext] = (
            collections.OrderedDict()
        )
        self.requests = 0
        self.bytes_raw = 0
        self.bytes_wire = 0
        self.evictions = 0
        self.index = config.index
        self.remote = config.keys is not None
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        if config.keys is None:
            identity = f"w{config.index}"
        else:
            identity = f"r-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
            keys = Path(config.keys)
            public, secret = zmq.auth.load_certificate(keys / WORKER_KEY_SECRET)
            front_public, _ = zmq.auth.load_certificate(keys / FRONT_KEY)
            self.sock.curve_publickey = public
            if secret is None:
                raise ValueError(f"{WORKER_KEY_SECRET} has no secret key")
            self.sock.curve_secretkey = secret
            self.sock.curve_serverkey = front_public
        self.sock.setsockopt(zmq.IDENTITY, identity.encode())
        self.sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        self.sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(config.endpoint)
        self._parent = os.getppid()
        self._out = Batch()
        self._last_sent = self._last_heard = time.monotonic()

    # -- loop --------------------------------------------------------------------------

    def _ready(self) -> None:
        ready = Ready(os.getpid(), self.index, socket.gethostname())
        self._emit([Envelope(Kind.READY).pack(), ready.encode()])
        self._flush()

    def _start_over(self) -> None:
        """A remote worker the front no longer knows drops every stream and joins again."""
        self.streams.clear()
        self._last_heard = time.monotonic()
        self._ready()

    def run(self) -> None:
        self._ready()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        tick = int((HEARTBEAT_INTERVAL_S if self.remote else PARENT_CHECK_S) * 1000)
        try:
            while True:
                if poller.poll(tick) and not self._drain():
                    return
                if not self.remote:
                    if os.getppid() != self._parent:
                        log.warning("front is gone; worker %d exits", self.index)
                        return
                    continue
                now = time.monotonic()
                if now - self._last_heard > REMOTE_SILENCE_S:
                    log.warning("front silent for %.0f s; joining again", now - self._last_heard)
                    self._start_over()
                elif now - self._last_sent >= HEARTBEAT_INTERVAL_S:
                    self._emit([Envelope(Kind.HEARTBEAT).pack()])
                    self._flush()
        finally:
            self.sock.close()
            self._ctx.term()

    def _drain(self) -> bool:
        """Handle every batch that is waiting; False on SHUTDOWN."""
        try:
            while True:
                try:
                    blob = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return True
                self._last_heard = time.monotonic()
                for message in decode_batch(blob):
                    env = Envelope.unpack(message[0])
                    if env.kind is Kind.SHUTDOWN:
                        return False
                    try:
                        self.handle(env, message[1:])
                    except Exception:  # a bug must not take the other streams down
                        log.exception("failed to handle %s", env)
        finally:
            self._flush()

    def _emit(self, message: list[bytes]) -> None:
        """Queue a message for the front; big output goes at once, the rest at the end of
        the batch being handled."""
        self._out.add(message)
        if self._out.size >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._out.records:
            blob = self._out.take()
            self.sock.send(blob, 0, copy=len(blob) < 65536)
            self._last_sent = time.monotonic()

    def _stream(self, key: tuple[int, int]) -> StreamContext | None:
        """The stream's context; None once its connection failed here (the front may have
        sent more for it before it learnt that), which needs no answer."""
        ctx = self.streams.get(key)
        if ctx is None:
            log.debug("message for unknown stream %s", key)
        return ctx

    def handle(self, env: Envelope, parts: list[bytes]) -> None:
        if env.kind in STREAM_SCOPED:
            ctx = self.streams.get((env.conn, env.stream))
            if ctx is not None and (ctx.sending is not None or ctx.waiting):
                ctx.waiting.append((env, parts))
                return
        elif env.kind is Kind.CREDIT:
            ctx = self.streams.get((env.conn, env.stream))
            if ctx is not None:
                ctx.window.grant(decode_credit(parts[0]))
                self._pump((env.conn, env.stream), ctx)
            return
        self._dispatch(env, parts)

    def _dispatch(self, env: Envelope, parts: list[bytes]) -> None:
        key = (env.conn, env.stream)
        if env.kind is Kind.STREAM_OPEN:
            params = StreamParams.decode(parts[0])
            settings = stream_settings_for(params.encoding, params.level, params.context)
            writer = ServerStreamWriter(env.stream + 1, settings, params.max_frame_size)
            self.streams[key] = StreamContext(params, writer)
        elif env.kind is Kind.REQUEST:
            self._request(env, parts)
        elif env.kind is Kind.REJECT:
            ctx = self._stream(key)
            if ctx is None:
                return
            err = Rejection.decode(parts[0])
            end = bool(env.flags & Flag.END_STREAM)
            self._answer_error(env, ctx, err.code, err.message, err.retryable, end)
            self._finished(key, ctx, end)
        elif env.kind is Kind.CLIENT_STREAM_SETTINGS:
            ctx = self._stream(key)
            if ctx is None:
                return
            settings = decode_stream_settings(parts[0])
            try:
                ctx.decoder = Decoder(settings) if settings.encoding != "identity" else None
            except DecodeError as exc:
                self._fatal(env, exc.code, exc.message)
        elif env.kind is Kind.STREAM_END:
            ended = self.streams.pop(key, None)
            if ended is not None:
                data = ended.writer.end()
                if data:
                    self._send_frames(env, ended, data, done=False)
        elif env.kind is Kind.STREAM_RESET:
            reset = self.streams.get(key)
            if reset is not None:
                reset.writer.reset()
                reset.decoder = None
        elif env.kind is Kind.CONN_CLOSED:
            for stream_key in [k for k in self.streams if k[0] == env.conn]:
                del self.streams[stream_key]
        elif env.kind is Kind.WELCOME:
            welcome = Welcome.decode(parts[0])
            self.index = welcome.index
            self.limits = welcome.limits
            info = self.commands.info
            self.commands.info = ServerInfo(welcome.server, self.limits, info.max_generate_bytes)
            log.warning("joined the front as worker %d", self.index)
        elif env.kind is Kind.REJOIN:
            self._start_over()
        elif env.kind is Kind.HEARTBEAT:
            pass
        elif env.kind is Kind.STATS:
            reply = self.stats().encode()
            self._emit([Envelope(Kind.STATS_REPLY, conn=env.conn).pack(), reply])
        else:
            log.error("unexpected message kind %s", env.kind)

    # -- requests ------------------------------------------------------------------------

    def _decode_data(self, ctx: StreamContext, chunks: tuple[DataChunk, ...]) -> bytes:
        cap_request = self.limits.max_request_data_bytes
        cap_frame = self.limits.max_decoded_bytes_per_frame
        out: list[bytes] = []
        total = 0
        for encoded, payload in chunks:
            if encoded:
                if ctx.decoder is None:
                    raise DecodeError("encoded command data without an encoding")
                piece = ctx.decoder.decode(payload, min(cap_frame, cap_request - total))
            else:
                piece = payload
            total += len(piece)
            if total > cap_request:
                raise DecodeError("command data decodes past max_request_data_bytes")
            out.append(piece)
        return b"".join(out)

    def _request(self, env: Envelope, parts: list[bytes]) -> None:
        key = (env.conn, env.stream)
        ctx = self._stream(key)
        if ctx is None:
            return
        self.streams.move_to_end(key)
        end = bool(env.flags & Flag.END_STREAM)
        request = decode_request(parts, bool(env.flags & Flag.HAS_DATA))
        name = request.command.name
        self.requests += 1
        data: bytes | None = None
        if request.data is not None:
            try:
                data = self._decode_data(ctx, request.data)
            except DecodeError as exc:
                self._fatal(env, exc.code, exc.message)
                return
        call = Call(request.command.args, data, ctx.params.write, request.snapshot)
        try:
            header, body = self.commands.run(name, call)
        except RequestError as exc:
            self._answer_error(env, ctx, exc.code, exc.message, exc.retryable, end)
        except Exception:
            log.exception("command %r failed", name)
            self._answer_error(env, ctx, ErrorCode.INTERNAL, "the command failed", False, end)
        else:
            raw_before, wire_before = ctx.writer.raw_bytes, ctx.writer.wire_bytes
            chunks = ctx.writer.iter_response(env.request, header, body, end_stream=end)
            ctx.sending = Sending(env, chunks, next(chunks), end, raw_before, wire_before)
            self._pump(key, ctx)
            return
        self._finished(key, ctx, end)

    def _pump(self, key: tuple[int, int], ctx: StreamContext) -> None:
        """Send the stream's response while it has credit; when it is complete, go on with
        the stream's waiting messages."""
        while ctx.sending is not None and ctx.window.is_open:
            sending = ctx.sending
            following = next(sending.chunks, None)
            self._send_frames(sending.env, ctx, sending.pending, done=following is None)
            ctx.window.consume(len(sending.pending))
            if following is not None:
                sending.pending = following
                continue
            ctx.sending = None
            self.bytes_raw += ctx.writer.raw_bytes - sending.raw_before
            self.bytes_wire += ctx.writer.wire_bytes - sending.wire_before
            self._finished(key, ctx, sending.end)

    def _finished(self, key: tuple[int, int], ctx: StreamContext, end: bool) -> None:
        """A request of the stream is answered: drop the stream if it ended, then handle
        what waited behind it, in order."""
        if end:
            if self.streams.get(key) is ctx:
                del self.streams[key]
        else:
            self._evict()
        while ctx.waiting:
            current = self.streams.get(key)
            if current is not None and current is not ctx and current.sending is not None:
                current.waiting.extend(ctx.waiting)  # the stream reopened and is busy again
                ctx.waiting.clear()
                return
            if current is ctx and ctx.sending is not None:
                return  # a waiting request started a response: the rest waits for it
            env, parts = ctx.waiting.popleft()
            self._dispatch(env, parts)

    def _answer_error(
        self,
        env: Envelope,
        ctx: StreamContext,
        code: str,
        message: str,
        retryable: bool,
        end: bool,
    ) -> None:
        frame = ctx.writer.error(env.request, code, message, retryable, end_stream=end)
        self._send_frames(env, ctx, frame, done=True)

    def _send_frames(self, env: Envelope, ctx: StreamContext, data: bytes, *, done: bool) -> None:
        # Before a response's last chunk the stream is open whatever the writer (which may
        # have made the last chunk already) says.
        stream_open = ctx.writer.begun or not done
        flags = (Flag.DONE if done else 0) | (Flag.STREAM_OPEN if stream_open else 0)
        out = Envelope(Kind.FRAMES, flags, env.conn, env.request, env.stream)
        self._emit([out.pack(), data])

    def _fatal(self, env: Envelope, code: ErrorCode, message: str) -> None:
        """The stream's decoding context is out of step: the connection must end."""
        for stream_key in [k for k in self.streams if k[0] == env.conn]:
            del self.streams[stream_key]
        out = Envelope(Kind.CONN_FATAL, 0, env.conn, env.request, env.stream)
        self._emit([out.pack(), Fatal(code, message).encode()])

    def _evict(self) -> None:
        """Keep contexts within the worker's budget: the least recently used streams lose
        their compression context (their next response starts the server stream again)."""
        max_contexts = self.limits.max_contexts_per_worker
        max_bytes = self.limits.max_context_bytes_per_worker
        live = [
            ctx
            for ctx in self.streams.values()
            if ctx.writer.encoder is not None and ctx.sending is None  # never mid-response
        ]
        count = len(live)
        total = sum(ctx.writer.memory() for ctx in live)
        newest = next(reversed(self.streams.values()), None)
        for ctx in live:  # least recently used first
            if (count <= max_contexts and total <= max_bytes) or ctx is newest:
                break
            total -= ctx.writer.memory()
            ctx.writer.reset()
            count -= 1
            self.evictions += 1

    def stats(self) -> WorkerStats:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return WorkerStats(
            pid=os.getpid(),
            index=self.index,
            remote=self.remote,
            cpu_user=usage.ru_utime,
            cpu_system=usage.ru_stime,
            rss=_rss(),
            max_rss=usage.ru_maxrss * 1024,
            streams=len(self.streams),
            context_bytes=sum(ctx.writer.memory() for ctx in self.streams.values()),
            requests=self.requests,
            bytes_raw=self.bytes_raw,
            bytes_wire=self.bytes_wire,
            evictions=self.evictions,
        )


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def main(config: dict[str, Any]) -> None:
    """Process entry point (started with the ``spawn`` method by the supervisor)."""
    cfg = WorkerConfig(**config)
    logging.basicConfig(
        level=cfg.log_level, format=f"%(asctime)s worker{cfg.index} %(levelname)s %(message)s"
    )
    # The front owns Ctrl-C and shutdown; a worker ends on SHUTDOWN, SIGTERM or its front's
    # death.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    started = time.monotonic()
    Worker(cfg).run()
    log.info("worker %d exits after %.1f s", cfg.index, time.monotonic() - started)


def run_remote(endpoint: str, keys: str, store: str, log_level: str = "WARNING") -> int:
    """``zplex worker``: serve a front on another host until it says SHUTDOWN (or SIGTERM,
    Ctrl-C). Index, server name and limits come from the front's WELCOME."""
    logging.basicConfig(level=log_level, format="%(asctime)s worker %(levelname)s %(message)s")
    config = WorkerConfig(
        index=-1,
        endpoint=endpoint,
        store=store,
        server="zplex",
        limits=Limits(),
        log_level=log_level,
        keys=keys,
    )
    worker = Worker(config)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        worker.run()
    except KeyboardInterrupt:
        return 130
    return 0
