"""The asyncio adapter of one client connection: bytes in to the core, the core's events to
the router, the core's output to the transport. TCP, stdio and HTTP all use it (stdio and
HTTP through transports of their own).

It also owns what needs a clock or a transport: the idle, frame and paused-reader timeouts,
one write per connection per turn of the loop, and dropping a client that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol

from server.config import ServeConfig
from server.http import HttpScope
from server.ipc.messages import StreamParams
from server.protocol.encoding import clamp_level, negotiate_encoding
from server.protocol.error_frames import final_error_code
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
)
from server.protocol.payloads import ClientSettings, ServerSettings
from server.protocol.server_conn import ServerConnection
from server.request_meter import REJECTED, Pending, RequestMeter
from server.router import Action, Router

log = logging.getLogger("zplex.front")

#: The hold on reading while the client does not read its responses.
WRITE_HOLD = "write"
#: How often each connection checks its idle and frame timeouts.
TIMER_PERIOD_S = 1.0


def negotiate(config: ServeConfig, settings: ClientSettings) -> StreamParams:
    """What the client's settings get from this server: encoding, level, write permission."""
    encoding = negotiate_encoding(settings.encodings, config.encodings)
    wish = settings.level if settings.level is not None else config.level
    level = clamp_level(encoding, wish, config.limits.max_level)
    token = config.write_token
    write = (
        token is not None
        and settings.token is not None
        and hmac.compare_digest(token.encode(), settings.token.encode())
    )
    return StreamParams(encoding, level, settings.context, settings.max_frame_size, write)


@dataclasses.dataclass(slots=True)
class FrontCounters:
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    meter: RequestMeter = dataclasses.field(default_factory=RequestMeter)


class ConnectionHost(Protocol):
    """What a connection needs of the front that holds it."""

    config: ServeConfig
    server_settings: ServerSettings
    router: Router
    counters: FrontCounters

    def apply(self, actions: list[Action]) -> None: ...
    def connection_count(self) -> int: ...
    def connection_closed(self, conn: FrontConnection) -> None: ...


class FrontConnection(asyncio.Protocol):
    def __init__(self, host: ConnectionHost, conn_id: int, http: HttpScope | None = None) -> None:
        self.host = host
        self.id = conn_id
        self.http = http
        self.loop = asyncio.get_running_loop()
        self.limits = host.config.limits
        self.sc = ServerConnection(
            self.limits, host.server_settings, allow_delete=host.config.allow_delete
        )
        self.transport: asyncio.Transport | None = None
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        #: Unfinished requests: the frame count last seen and since when it has not moved.
        self._progress: dict[int, tuple[int, float]] = {}
        self.closing = False
        self.eof = False
        self.write_paused_since: float | None = None
        self._read_holds: set[str] = set()
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.meter = host.counters.meter
        self.pending: dict[int, Pending] = {}  # requests in flight, for the meter
        write = http is not None and http.write
        host.router.open_connection(conn_id, StreamParams("identity", None, "stream", 32768, write))

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.host.connection_count() > self.limits.max_connections:
            self.fail_goaway("too many connections; try again later")
            return
        self._schedule_flush()
        self._timer = self.loop.call_later(TIMER_PERIOD_S, self._check_timers)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = time.monotonic()
        self.last_activity = now
        self.host.counters.bytes_in += len(data)
        for event in self.sc.receive_data(data):
            self._event(event)
            if self.closing:
                return
        if self.sc.partial_frame:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None
        self._after_output()

    def eof_received(self) -> bool:
        """End of input: answer what is in flight, then close. Input that ends inside a
        frame or a request is a protocol error: it can never complete."""
        self.eof = True
        if self.sc.partial_frame or self.sc.incomplete_ids():
            self.fail(ErrorCode.PROTOCOL, "the input ended inside a frame or a request")
            return True
        self.sc.start_goaway()
        self._after_output()
        return True  # keep the write side open until the answers are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        self.host.connection_closed(self)

    def pause_writing(self) -> None:
        # A client that does not read its responses stops being read from (no new work)
        # and gets no more credit (its streams stop sending on the workers).
        self.write_paused_since = time.monotonic()
        self.host.router.pause(self.id)
        self.hold_reading(WRITE_HOLD)

    def resume_writing(self) -> None:
        self.write_paused_since = None
        self.release_reading(WRITE_HOLD)
        self.host.apply(self.host.router.resume(self.id))

    @property
    def output_buffered(self) -> int:
        """Response bytes waiting for the client in the transport."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def hold_reading(self, reason: str) -> None:
        """Stop reading from the client (no new work) for ``reason``: its own writes are
        stuck, or a worker it feeds has a full queue. Reading resumes once every reason is
        released."""
        if not self._read_holds and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self._read_holds.add(reason)

    def release_reading(self, reason: str) -> None:
        if reason not in self._read_holds:
            return
        self._read_holds.discard(reason)
        if not self._read_holds and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- events from the core -------------------------------------------------------------

    def _event(self, event: ServerEvent) -> None:
        match event:  # the usual event first
            case RequestReady():
                self.host.counters.requests += 1
                self.meter.begin(self.pending, event.request_id, event.stream_id, event.name)
                if self.http is not None and self.http.command not in (
                    "multirequest",
                    event.name,
                ):
                    message = f"this URL runs {self.http.command!r}, not {event.name!r}"
                    rejected = RequestRejected(
                        event.request_id, event.stream_id, ErrorCode.BAD_REQUEST, message,
                        event.end_stream,
                    )  # fmt: skip
                    self.host.apply(self.host.router.event(self.id, rejected))
                    return
                self.host.apply(self.host.router.event(self.id, event))
            case SettingsReceived(settings=settings):
                params = negotiate(self.host.config, settings)
                if self.http is not None:  # over HTTP, only the URL grants write permission
                    params = dataclasses.replace(params, write=self.http.write)
                self.host.router.set_params(self.id, params)
                for refused in self.sc.permit_writes(params.write):
                    self.host.apply(self.host.router.event(self.id, refused))
            case ConnectionFailed(code=code, message=message):
                log.info(
                    "connection %d: %s error: %s", self.id, code, message,
                    extra={"conn": self.id, "code": str(code)},
                )  # fmt: skip
                self.meter.connection_failed(str(code))
                self.close()  # the core queued the error frame
            case RequestRejected():
                self.meter.begin(self.pending, event.request_id, event.stream_id, REJECTED)
                self.host.apply(self.host.router.event(self.id, event))
            case _:
                self.host.apply(self.host.router.event(self.id, event))

    # -- output (the front's actions land here) --------------------------------------------

    def deliver(
        self, stream: int, request: int, data: bytes, *, done: bool, stream_open: bool
    ) -> None:
        self.sc.send_frames(stream, request, data, done=done, stream_open=stream_open)
        if done and request:
            self.meter.answered(self.pending, request, final_error_code(data))
        self._after_output()

    def answer_error(
        self,
        stream: int,
        request: int,
        code: ErrorCode,
        message: str,
        retryable: bool,
        end_stream: bool,
    ) -> None:
        self.sc.send_error(stream, request, code, message, retryable, end_stream=end_stream)
        self.meter.answered(self.pending, request, str(code))
        self._after_output()

    def end_server_stream(self, stream: int) -> None:
        self.sc.end_server_stream(stream)
        self._after_output()

    def fail_stream(self, stream: int, code: ErrorCode, message: str) -> None:
        self.sc.fail_stream(stream, code, message)
        self.meter.stream_failed(self.pending, stream, str(code))
        self._after_output()

    def _after_output(self) -> None:
        if self.sc.has_output:
            self._schedule_flush()
        if self.sc.drained and not self.closing:
            self.close()

    def _schedule_flush(self) -> None:
        """What one turn of the loop queues goes out in one write (many responses arrive
        from workers in one batch)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.sc.data_to_send()
        transport = self.transport
        if not data or transport is None or transport.is_closing():
            return
        self.host.counters.bytes_out += len(data)
        transport.write(data)
        if transport.get_write_buffer_size() > self.host.config.max_output_buffer_bytes:
            log.warning(
                "connection %d: client does not read its responses; dropping it", self.id,
                extra={"conn": self.id},
            )  # fmt: skip
            self._reset()

    def _reset(self) -> None:
        """Drop the connection at once, discarding what the kernel still holds for it."""
        self.closing = True
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def close(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def fail(self, code: ErrorCode, message: str) -> None:
        """A connection-level error: send it, then close."""
        self.meter.connection_failed(str(code))
        self.sc.fail(code, message)
        self.close()

    def fail_goaway(self, message: str) -> None:
        """Refuse the connection: a goaway listing nothing, then close."""
        self.sc.send_goaway(message, listing=False)
        self.close()

    def goaway(self) -> None:
        """The server is shutting down: list what will still be answered, answer it, close."""
        self.sc.send_goaway("the server is shutting down")
        self._after_output()

    def _stalled_request(self, now: float) -> bool:
        """A request whose frames stopped coming for frame_timeout_s ends the connection (it
        holds an in-flight place and maybe data, and can never complete)."""
        progress = self.sc.incomplete_progress()
        seen = self._progress
        self._progress = {}
        for rid, frames in progress.items():
            last = seen.get(rid)
            since = last[1] if last is not None and last[0] == frames else now
            if now - since > self.limits.frame_timeout_s:
                self.fail(
                    ErrorCode.PROTOCOL,
                    f"request {rid} made no progress within frame_timeout_s",
                )
                return True
            self._progress[rid] = (frames, since)
        return False

    def _check_timers(self) -> None:
        if self.closing:
            return
        now = time.monotonic()
        if (
            self.partial_since is not None
            and now - self.partial_since > self.limits.frame_timeout_s
        ):
            self.fail(ErrorCode.PROTOCOL, "a frame was not completed within frame_timeout_s")
            return
        if self._stalled_request(now):
            return
        paused = self.write_paused_since
        if paused is not None and now - paused > self.limits.idle_timeout_s:
            log.warning(
                "connection %d: client read nothing for %.0f s; dropping it", self.id, now - paused
            )
            self._reset()
            return
        if self.eof:
            pass  # input ended: only the answers in flight remain
        elif not self.sc.in_flight_ids() and now - self.last_activity > self.limits.idle_timeout_s:
            log.info(
                "connection %d idle for %.0f s; closing", self.id, self.limits.idle_timeout_s,
                extra={"conn": self.id},
            )  # fmt: skip
            self.fail_goaway("idle for longer than idle_timeout_s")
            return
        self._timer = self.loop.call_later(TIMER_PERIOD_S, self._check_timers)


ConnectionFactory = Callable[[HttpScope | None], FrontConnection]
