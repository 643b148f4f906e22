"""A worker's table of client streams and the budget of their compression contexts.

Each stream, keyed by ``(front, connection, stream)``, owns a :class:`StreamContext`: its
:class:`ServerStreamWriter` (the compressor), the decoder of the client's command data, its
send window and the messages waiting behind the response being sent.

The worker keeps at most ``max_contexts_per_worker`` contexts and
``max_context_bytes_per_worker`` bytes of them; past either, the least recently used streams
lose their context (their next response starts the server stream again). A context being
sent (a response not yet complete) is never evicted, nor is the most recently used stream's;
it counts against the budget all the same (a client that stops reading mid-response holds
it). Before a stream makes a new context, idle ones are evicted to make room for it
(:meth:`ContextTable.make_room`); once contexts being sent fill the budget by themselves,
no stream may make one (the worker answers ``overloaded``). The check is O(1) per request:
the table keeps running totals of the contexts (of the streams with an encoder or a
response in progress), and of those being sent, refreshed when a stream's context can
change, and an LRU of only the streams that may hold a context, so eviction never walks
over streams that hold none.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

from server.ipc.envelope import Envelope
from server.ipc.flow import SendWindow
from server.ipc.messages import StreamParams
from server.protocol.encoding import Decoder
from server.protocol.responses import ResponseInProgress, ServerStreamWriter
from workers.bodies import ChunkedBody

#: ``(front, connection, stream)``: the front's index (the socket the stream came in on),
#: the front's connection id and the client's stream id.
StreamKey = tuple[int, int, int]


@dataclasses.dataclass
class Sending:
    """A response being sent, a step at a time, as the stream's credit allows."""

    env: Envelope
    end: bool
    raw_before: int
    wire_before: int
    #: The response being produced; None while a chunked body's digest is computed.
    response: ResponseInProgress | None = None
    body: ChunkedBody | None = None

    def close(self) -> None:
        """Let go of the body's source (an open file): the response is complete or dropped."""
        if self.response is not None:
            self.response.close()
        if self.body is not None:
            self.body.close()


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
    #: The context's bytes as counted in the table's totals; None while it does not count.
    counted: int | None = None
    #: Counted while a response was being sent (in the table's totals of those too).
    counted_sending: bool = False
    #: In the worker's queue of streams with a response to go on with.
    scheduled: bool = False


class ContextTable:
    """The streams of one worker (over all fronts), least recently used first."""

    def __init__(self, max_contexts: int, max_bytes: int) -> None:
        self.max_contexts = max_contexts
        self.max_bytes = max_bytes
        self.streams: collections.OrderedDict[StreamKey, StreamContext] = collections.OrderedDict()
        #: The streams that may hold a context, in the order of ``streams``.
        self._lru: collections.OrderedDict[StreamKey, StreamContext] = collections.OrderedDict()
        #: Contexts that count against the budget (every stream's encoder).
        self.context_count = 0
        self.context_bytes = 0
        #: Of those, the contexts of responses being sent (which cannot be evicted).
        self.sending_count = 0
        self.sending_bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.streams)

    def get(self, key: StreamKey) -> StreamContext | None:
        return self.streams.get(key)

    def open(self, key: StreamKey, ctx: StreamContext) -> None:
        """A new stream (a reopened one keeps its place in the LRU order)."""
        old = self.streams.get(key)
        if old is not None:
            self._uncount(old)
            self._lru.pop(key, None)
        self.streams[key] = ctx

    def touch(self, key: StreamKey, ctx: StreamContext) -> None:
        """The stream takes a request: it becomes the most recently used."""
        self.streams.move_to_end(key)
        self._lru[key] = ctx
        self._lru.move_to_end(key)

    def pop(self, key: StreamKey) -> StreamContext | None:
        """Drop the stream (a response it was sending is dropped with it)."""
        ctx = self.streams.pop(key, None)
        if ctx is not None:
            self._uncount(ctx)
            self._lru.pop(key, None)
            if ctx.sending is not None:
                ctx.sending.close()
                ctx.sending = None
        return ctx

    def remove_where(self, front: int, conn: int | None = None) -> int:
        """Drop the streams of a front (or of one of its connections); how many."""
        keys = [k for k in self.streams if k[0] == front and (conn is None or k[1] == conn)]
        for key in keys:
            self.pop(key)
        return len(keys)

    def refresh(self, key: StreamKey, ctx: StreamContext) -> None:
        """Count the stream's context as it is now (call after its context may have
        changed: a response started or completed, an error sent, a reset)."""
        # A response in progress holds its context from the start (made at its first step).
        has_context = ctx.writer.encoder is not None or ctx.sending is not None
        counts = has_context and self.streams.get(key) is ctx
        self._uncount(ctx)
        if counts:
            ctx.counted = ctx.writer.memory()
            self.context_count += 1
            self.context_bytes += ctx.counted
            if ctx.sending is not None:
                ctx.counted_sending = True
                self.sending_count += 1
                self.sending_bytes += ctx.counted

    def _uncount(self, ctx: StreamContext) -> None:
        if ctx.counted is not None:
            self.context_count -= 1
            self.context_bytes -= ctx.counted
            if ctx.counted_sending:
                ctx.counted_sending = False
                self.sending_count -= 1
                self.sending_bytes -= ctx.counted
            ctx.counted = None

    def over_budget(self) -> bool:
        return self.context_count > self.max_contexts or self.context_bytes > self.max_bytes

    def _full(self) -> bool:
        """No room for one more context."""
        return self.context_count >= self.max_contexts or self.context_bytes >= self.max_bytes

    def make_room(self) -> bool:
        """Before a stream makes a new context: reset the least recently used idle contexts
        until there is room for one more. False (nothing reset) when the contexts of
        responses being sent, which no eviction can free, fill the budget by themselves."""
        if self.sending_count >= self.max_contexts or self.sending_bytes >= self.max_bytes:
            return False
        self._evict_while(self._full)
        return True

    def evict(self) -> None:
        """Reset the least recently used contexts until the budget holds (never one being
        sent, never the most recently used stream's)."""
        self._evict_while(self.over_budget)

    def _evict_while(self, condition: Callable[[], bool]) -> None:
        if not condition():
            return
        newest = next(reversed(self.streams.values()), None)
        dropped: list[StreamKey] = []
        for key, ctx in self._lru.items():  # least recently used first
            if not condition() or ctx is newest:
                break
            if ctx.sending is not None:
                continue  # mid-response: it keeps its context
            if ctx.writer.encoder is not None:
                ctx.writer.reset()
                self._uncount(ctx)
                self.evictions += 1
            dropped.append(key)  # it holds no context until its next request
        for key in dropped:
            del self._lru[key]

    def memory(self) -> int:
        """Every stream's context bytes, those being sent included (for stats)."""
        return sum(ctx.writer.memory() for ctx in self.streams.values())
