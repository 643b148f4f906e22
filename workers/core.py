"""The worker's sans-I/O core: messages from the fronts in, wire-ready messages out.

One worker serves every front: a message comes in with the index of the front it came from
(the socket it arrived on), and every message the core produces goes back to one front, in
that front's batch (:class:`Outbox`). The core holds the table of client streams and their
compression contexts (:mod:`workers.contexts`), runs the commands, sends each response as
its stream's credit allows, keeps a stream's later messages waiting in order behind the
response being sent, and counts what it did. It owns no socket, reads no clock and knows
nothing of processes: :mod:`workers.worker` drives it.

Messages of one stream are answered in order, so responses on a stream never interleave.
Responses of different streams do: a response is produced in steps of a chunk (read or
generated, compressed, sent; :mod:`workers.bodies`). A small one is complete in the step
that starts it; a larger one goes on in :meth:`WorkerCore.work`, which the loop calls
between polls of its sockets, one step of one stream at a time, round-robin over the
streams that have credit. So a long response (level 19 on a large body) holds up the
worker's other streams by one step at most, its first frames go out while the rest is
compressed, and the worker keeps handling messages (and heartbeating) meanwhile.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence

from server.ipc.batch import Batch, decode_batch
from server.ipc.envelope import STREAM_SCOPED, Envelope, Flag, Kind
from server.ipc.flow import decode_credit
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
from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS, Decoder, stream_settings_for
from server.protocol.errors import DecodeError, ErrorCode, RequestError
from server.protocol.events import DataChunk
from server.protocol.limits import Limits
from server.protocol.responses import ServerStreamWriter
from workers.bodies import ChunkedBody
from workers.commands import Call, Commands, ServerInfo
from workers.contexts import ContextTable, Sending, StreamContext, StreamKey

log = logging.getLogger("zplex.worker")

#: Output gathered before the outbox asks to be sent without waiting for the end of the batch.
FLUSH_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessUsage:
    """The worker process's own figures, read by the loop when a front asks for stats."""

    pid: int
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    rss: int = 0
    max_rss: int = 0


class Outbox:
    """Messages for the fronts, one batch per front. ``on_full`` is called once the
    batches hold :data:`FLUSH_BYTES` (the loop sends them then, not only at the end of the
    batch being handled)."""

    def __init__(self, on_full: Callable[[], None] | None = None) -> None:
        self.batches: dict[int, Batch] = {}
        self.size = 0
        self.on_full = on_full

    def add(self, front: int, message: list[bytes]) -> None:
        batch = self.batches.get(front)
        if batch is None:
            batch = self.batches[front] = Batch()
        before = batch.size
        batch.add(message)
        self.size += batch.size - before
        if self.size >= FLUSH_BYTES and self.on_full is not None:
            self.on_full()

    def take(self) -> list[tuple[int, bytes]]:
        """Each front's batch (fronts with nothing to send are left out)."""
        out = [(front, batch.take()) for front, batch in self.batches.items() if batch.records]
        self.size = 0
        return out


class WorkerCore:
    def __init__(
        self,
        commands: Commands,
        limits: Limits,
        *,
        index: int,
        endpoints: Sequence[str],
        pid: int,
        host: str = "",
        remote: bool = False,
        usage: Callable[[], ProcessUsage] | None = None,
        on_full: Callable[[], None] | None = None,
        small_tables_from: int = SMALL_TABLES_FROM_CONTEXTS,
    ) -> None:
        self.commands = commands
        self.limits = limits
        self.index = index
        #: The fronts served, by index: the endpoint of each (a remote worker learns more
        #: of them from a WELCOME; the loop connects a socket for each new one).
        self.endpoints = list(endpoints)
        #: A remote worker's index as each front knows it (from that front's WELCOME).
        self.indexes: dict[int, int] = {}
        self.pid = pid
        self.host = host
        self.remote = remote
        self.usage = usage or (lambda: ProcessUsage(pid))
        self.table = ContextTable(
            limits.max_contexts_per_worker, limits.max_context_bytes_per_worker
        )
        self.out = Outbox(on_full)
        #: Streams with a response in progress and credit, in turn (round-robin).
        self.runnable: collections.deque[tuple[StreamKey, StreamContext]] = collections.deque()
        self.requests = 0
        self.bytes_raw = 0
        self.bytes_wire = 0
        #: Raw and wire bytes of the finished responses by (encoding, context).
        self.traffic: dict[tuple[str, str], list[int]] = {}
        #: Contexts held from which a new one gets small zstd match tables, and how many did.
        self.small_tables_from = small_tables_from
        self.small_table_contexts = 0
        self.stopped = False

    # -- the loop's side -----------------------------------------------------------------

    def start(self) -> None:
        """READY to every front."""
        for front in range(len(self.endpoints)):
            self.ready(front)

    def ready(self, front: int) -> None:
        ready = Ready(self.pid, self.indexes.get(front, self.index), self.host)
        self.out.add(front, [Envelope(Kind.READY).pack(), ready.encode()])

    def heartbeat(self, front: int) -> None:
        self.out.add(front, [Envelope(Kind.HEARTBEAT).pack()])

    def goodbye(self, front: int) -> None:
        """This (remote) worker stops: the front drops it at once."""
        self.out.add(front, [Envelope(Kind.GOODBYE).pack()])

    def rejoin(self, front: int) -> None:
        """The front no longer knows this worker (it restarted, or declared the worker
        lost): drop that front's streams and say READY to it again."""
        dropped = self.table.remove_where(front)
        log.info("front %d: joining again (%d streams dropped)", front, dropped)
        self.ready(front)

    def receive(self, front: int, blob: bytes) -> bool:
        """Handle a batch from a front; False once a front said SHUTDOWN (the rest of the
        batch is not handled)."""
        for message in decode_batch(blob):
            env = Envelope.unpack(message[0])
            if env.kind is Kind.SHUTDOWN:
                self.stopped = True
                return False
            try:
                self.handle(front, env, message[1:])
            except Exception:  # a bug must not take the other streams down
                log.exception("failed to handle %s from front %d", env, front)
        return True

    def take(self) -> list[tuple[int, bytes]]:
        """The batches to send, one per front."""
        return self.out.take()

    # -- messages ------------------------------------------------------------------------

    def handle(self, front: int, env: Envelope, parts: list[bytes]) -> None:
        if env.kind in STREAM_SCOPED:
            ctx = self.table.get((front, env.conn, env.stream))
            if ctx is not None and (ctx.sending is not None or ctx.waiting):
                ctx.waiting.append((env, parts))
                return
        elif env.kind is Kind.CREDIT:
            key = (front, env.conn, env.stream)
            ctx = self.table.get(key)
            if ctx is not None:
                ctx.window.grant(decode_credit(parts[0]))
                self._schedule(key, ctx)
            return
        self._dispatch(front, env, parts)

    def _stream(self, key: StreamKey) -> StreamContext | None:
        """The stream's context; None once its connection failed here (the front may have
        sent more for it before it learnt that), which needs no answer."""
        ctx = self.table.get(key)
        if ctx is None:
            log.debug("message for unknown stream %s", key)
        return ctx

    def _dispatch(self, front: int, env: Envelope, parts: list[bytes]) -> None:
        key = (front, env.conn, env.stream)
        kind = env.kind
        if kind is Kind.STREAM_OPEN:
            params = StreamParams.decode(parts[0])
            settings = stream_settings_for(params.encoding, params.level, params.context)
            writer = ServerStreamWriter(env.stream + 1, settings, params.max_frame_size)
            self.table.open(key, StreamContext(params, writer))
        elif kind is Kind.REQUEST:
            self._request(key, env, parts)
        elif kind is Kind.REJECT:
            ctx = self._stream(key)
            if ctx is None:
                return
            err = Rejection.decode(parts[0])
            end = bool(env.flags & Flag.END_STREAM)
            self._answer_error(key, env, ctx, err.code, err.message, err.retryable, end)
            self._finished(key, ctx, end)
        elif kind is Kind.CLIENT_STREAM_SETTINGS:
            ctx = self._stream(key)
            if ctx is None:
                return
            settings = decode_stream_settings(parts[0])
            try:
                ctx.decoder = Decoder(settings) if settings.encoding != "identity" else None
            except DecodeError as exc:
                self._fatal(key, env, exc.code, exc.message)
        elif kind is Kind.STREAM_END:
            ended = self.table.pop(key)
            if ended is not None:
                data = ended.writer.end()
                if data:
                    self._send_frames(key, env, ended, data, done=False)
        elif kind is Kind.STREAM_RESET:
            reset = self.table.get(key)
            if reset is not None:
                reset.writer.reset()
                reset.decoder = None
                self.table.refresh(key, reset)
        elif kind is Kind.CONN_CLOSED:
            self.table.remove_where(front, env.conn)
        elif kind is Kind.WELCOME:
            self._welcome(front, Welcome.decode(parts[0]))
        elif kind is Kind.REJOIN:
            self.rejoin(front)
        elif kind is Kind.HEARTBEAT:
            pass
        elif kind is Kind.STATS:
            reply = self.stats(front).encode()
            self.out.add(front, [Envelope(Kind.STATS_REPLY, conn=env.conn).pack(), reply])
        else:
            log.error("unexpected message kind %s from front %d", kind, front)

    def _welcome(self, front: int, welcome: Welcome) -> None:
        """A remote worker learns its index, the server's name, the limits, from how many
        contexts held a new one gets small match tables and whether ``delete`` is offered;
        from its first front, also the endpoints of the other fronts, which it joins."""
        self.indexes[front] = welcome.index
        if front == 0:
            self.index = welcome.index
        self.limits = welcome.limits
        self.small_tables_from = welcome.small_tables_from
        self.table.max_contexts = welcome.limits.max_contexts_per_worker
        self.table.max_bytes = welcome.limits.max_context_bytes_per_worker
        info = self.commands.info
        self.commands.info = ServerInfo(
            welcome.server, self.limits, info.max_generate_bytes, welcome.allow_delete
        )
        log.info("joined front %d as worker %d", front, welcome.index)
        for listed in welcome.fronts:
            endpoint = reachable_endpoint(listed, self.endpoints[front])
            if endpoint not in self.endpoints:
                self.endpoints.append(endpoint)
                self.ready(len(self.endpoints) - 1)

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

    def _request(self, key: StreamKey, env: Envelope, parts: list[bytes]) -> None:
        ctx = self._stream(key)
        if ctx is None:
            return
        self.table.touch(key, ctx)
        end = bool(env.flags & Flag.END_STREAM)
        request = decode_request(parts, bool(env.flags & Flag.HAS_DATA))
        name = request.command.name
        self.requests += 1
        data: bytes | None = None
        if request.data is not None:  # decoded even if refused: the decoder stays in step
            try:
                data = self._decode_data(ctx, request.data)
            except DecodeError as exc:
                self._fatal(key, env, exc.code, exc.message)
                return
        if ctx.writer.encoder is None:
            if not self.table.make_room():
                message = "the worker's contexts are all held by responses in progress"
                self._answer_error(key, env, ctx, ErrorCode.OVERLOADED, message, True, end)
                self._finished(key, ctx, end)
                return
            small = self.table.context_count >= self.small_tables_from
            ctx.writer.small_tables = small
            if small and ctx.params.encoding == "zstd-8mb" and ctx.params.context != "frame":
                self.small_table_contexts += 1
        call = Call(request.command.args, data, ctx.params.write, request.snapshot)
        try:
            header, body = self.commands.run(name, call)
        except RequestError as exc:
            self._answer_error(key, env, ctx, exc.code, exc.message, exc.retryable, end)
        except Exception:
            log.exception("command %r failed", name)
            self._answer_error(key, env, ctx, ErrorCode.INTERNAL, "the command failed", False, end)
        else:
            writer = ctx.writer
            sending = Sending(env, end, writer.raw_bytes, writer.wire_bytes)
            if isinstance(body, ChunkedBody):
                sending.body = body
            else:
                sending.response = writer.begin_response(env.request, header, body, end_stream=end)
            ctx.sending = sending
            if ctx.window.is_open:
                self._step(key, ctx)  # a small response is complete at once
            if ctx.sending is sending:
                self.table.refresh(key, ctx)  # mid-response: it counts, and is not evicted
                self._schedule(key, ctx)
            return
        self._finished(key, ctx, end)

    # -- responses in progress -----------------------------------------------------------

    def has_work(self) -> bool:
        """Whether a stream has a response to go on with (the loop then calls :meth:`work`
        between polls of its sockets instead of waiting for messages)."""
        return bool(self.runnable)

    def work(self, steps: int = 1) -> None:
        """Go on with the responses in progress, one step (a chunk) of one stream at a
        time, round-robin over the streams that have credit: a long response never holds
        up the others more than a step."""
        for _ in range(steps):
            if not self.runnable:
                return
            key, ctx = self.runnable.popleft()
            ctx.scheduled = False
            if self.table.get(key) is ctx and ctx.sending is not None and ctx.window.is_open:
                self._step(key, ctx)
                self._schedule(key, ctx)

    def _schedule(self, key: StreamKey, ctx: StreamContext) -> None:
        if ctx.sending is not None and ctx.window.is_open and not ctx.scheduled:
            ctx.scheduled = True
            self.runnable.append((key, ctx))

    def _step(self, key: StreamKey, ctx: StreamContext) -> None:
        """One step of the stream's response: hash a chunk of a body whose digest the header
        needs, or feed one chunk to the compressor and send what it gave."""
        sending = ctx.sending
        assert sending is not None
        env = sending.env
        response = sending.response
        if response is None:
            body = sending.body
            assert body is not None
            if not body.ready:
                try:
                    body.digest_step()
                except Exception as exc:  # e.g. a file truncated while it is read
                    log.warning("the body of request %d failed: %r", env.request, exc)
                    ctx.sending = None
                    sending.close()
                    message = "the response failed"
                    end = sending.end
                    self._answer_error(key, env, ctx, ErrorCode.INTERNAL, message, False, end)
                    self._finished(key, ctx, end)
                return
            response = sending.response = ctx.writer.begin_response(
                env.request, body.header, body.chunks(), end_stream=sending.end
            )
        data = response.step()
        if data or response.done:
            self._send_frames(key, env, ctx, data, done=response.done)
            ctx.window.consume(len(data))
        if response.done:
            ctx.sending = None
            sending.close()
            self.bytes_raw += ctx.writer.raw_bytes - sending.raw_before
            self.bytes_wire += ctx.writer.wire_bytes - sending.wire_before
            self._count_traffic(ctx, sending.raw_before, sending.wire_before)
            self._finished(key, ctx, sending.end)
        else:  # the context grows as it compresses: counted as it is now
            self.table.refresh(key, ctx)

    def _count_traffic(self, ctx: StreamContext, raw_before: int, wire_before: int) -> None:
        tally = self.traffic.get((ctx.params.encoding, ctx.params.context))
        if tally is None:
            tally = self.traffic[(ctx.params.encoding, ctx.params.context)] = [0, 0]
        tally[0] += ctx.writer.raw_bytes - raw_before
        tally[1] += ctx.writer.wire_bytes - wire_before

    def _finished(self, key: StreamKey, ctx: StreamContext, end: bool) -> None:
        """A request of the stream is answered: drop the stream if it ended, then handle
        what waited behind it, in order."""
        if end:
            if self.table.get(key) is ctx:
                self.table.pop(key)
        else:
            self.table.refresh(key, ctx)
            self.table.evict()
        while ctx.waiting:
            current = self.table.get(key)
            if current is not None and current is not ctx and current.sending is not None:
                current.waiting.extend(ctx.waiting)  # the stream reopened and is busy again
                ctx.waiting.clear()
                return
            if current is ctx and ctx.sending is not None:
                return  # a waiting request started a response: the rest waits for it
            env, parts = ctx.waiting.popleft()
            self._dispatch(key[0], env, parts)

    def _answer_error(
        self,
        key: StreamKey,
        env: Envelope,
        ctx: StreamContext,
        code: str,
        message: str,
        retryable: bool,
        end: bool,
    ) -> None:
        frame = ctx.writer.error(env.request, code, message, retryable, end_stream=end)
        self._send_frames(key, env, ctx, frame, done=True)

    def _send_frames(
        self, key: StreamKey, env: Envelope, ctx: StreamContext, data: bytes, *, done: bool
    ) -> None:
        # Before a response's last chunk the stream is open whatever the writer (which may
        # have made the last chunk already) says.
        stream_open = ctx.writer.begun or not done
        flags = (Flag.DONE if done else 0) | (Flag.STREAM_OPEN if stream_open else 0)
        out = Envelope(Kind.FRAMES, flags, env.conn, env.request, env.stream)
        self.out.add(key[0], [out.pack(), data])

    def _fatal(self, key: StreamKey, env: Envelope, code: ErrorCode, message: str) -> None:
        """The stream's decoding context is out of step: the connection must end."""
        self.table.remove_where(key[0], env.conn)
        out = Envelope(Kind.CONN_FATAL, 0, env.conn, env.request, env.stream)
        self.out.add(key[0], [out.pack(), Fatal(code, message).encode()])

    # -- figures -------------------------------------------------------------------------

    def stats(self, front: int = 0) -> WorkerStats:
        """This worker's figures, over every front (the index is the one ``front`` knows)."""
        usage = self.usage()
        return WorkerStats(
            pid=usage.pid,
            index=self.indexes.get(front, self.index),
            remote=self.remote,
            cpu_user=usage.cpu_user,
            cpu_system=usage.cpu_system,
            rss=usage.rss,
            max_rss=usage.max_rss,
            streams=len(self.table),
            context_bytes=self.table.memory(),
            requests=self.requests,
            bytes_raw=self.bytes_raw,
            bytes_wire=self.bytes_wire,
            evictions=self.table.evictions,
            small_table_contexts=self.small_table_contexts,
            traffic=[
                [enc, context, raw, wire] for (enc, context), (raw, wire) in self.traffic.items()
            ],
        )


#: Hosts a front binds to that a worker cannot connect to: it uses the host it reached the
#: front on instead.
ANY_HOST = ("*", "0.0.0.0", "[::]", "::")


def reachable_endpoint(listed: str, via: str) -> str:
    """``listed`` (from a WELCOME) with a wildcard host replaced by the host of ``via`` (the
    endpoint this worker reached the front on): ``tcp://0.0.0.0:7501`` via
    ``tcp://10.0.0.5:7500`` is ``tcp://10.0.0.5:7501``."""
    scheme, sep, rest = listed.partition("://")
    host, colon, port = rest.rpartition(":")
    if not (sep and colon) or host not in ANY_HOST:
        return listed
    via_host = via.partition("://")[2].rpartition(":")[0]
    return f"{scheme}://{via_host}:{port}"
