"""The protocol state both zplex clients share, without I/O: :class:`ClientSession` holds the
sans-I/O :class:`~server.protocol.client_conn.ClientConnection`, the calls in flight and the
counters, and turns received bytes into ``(request id, outcome)`` pairs; plus the checks and
argument builders of the client's calls."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from bench.client_results import ConnectionLost, Outcome, Response, ServerError, fresh
from server.protocol.client_conn import ClientConnection
from server.protocol.errors import RemoteError
from server.protocol.events import (
    ConnectionErrorReceived,
    ProgressReceived,
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ResponseHeader,
    ServerSettingsReceived,
    TextOutputReceived,
)
from server.protocol.limits import MAX_FRAME_SIZE_LIMIT, MAX_WINDOW_LOG, MIN_CLIENT_FRAME_SIZE
from server.protocol.payloads import (
    CONTEXTS,
    ClientSettings,
    ErrorResponse,
    ServerSettings,
    StreamSettings,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7410
DEFAULT_ENCODINGS = ("zstd-8mb", "zlib", "identity")
DEFAULT_TIMEOUT = 30.0
#: Text-output messages kept (the most recent ones).
MAX_MESSAGES = 256


@dataclasses.dataclass(slots=True)
class PendingCall:
    request_id: int
    stream_id: int
    name: str
    started: float
    header: dict[str, Any] | None = None
    parts: builtins.list[bytes] = dataclasses.field(default_factory=builtins.list)
    progress: tuple[int, int | None] | None = None


class ClientSession:
    """The protocol state shared by both clients: the core connection, the calls in flight,
    counters. Turns received bytes into (request id, outcome) pairs."""

    def __init__(self, settings: ClientSettings) -> None:
        self.conn = ClientConnection(settings)
        self.settings = settings
        self.calls: dict[int, PendingCall] = {}
        self.server_settings: ServerSettings | None = None
        #: Set when the connection can take no new request (connection-level error, loss).
        self.failure: ServerError | ConnectionLost | None = None
        self.goaway: ServerError | None = None
        self.messages: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_MESSAGES)
        self.bytes_sent = 0
        self.bytes_received = 0  # every byte read from the socket
        self.raw_bytes_received = 0  # decoded response bytes (headers and bodies)
        self.wire_bytes_received = 0  # response frames as received
        self.responses = 0
        self.errors = 0

    def check_usable(self) -> None:
        """Raise if no new request may be sent: after a goaway (retryable, even once the
        connection has closed), a connection-level error or the connection's loss."""
        if self.goaway is not None:
            raise self.goaway.copy()
        if self.failure is not None:
            raise fresh(self.failure)

    def request(
        self,
        name: str,
        args: dict[str, Any] | None,
        data: bytes | None,
        stream: int,
        end_stream: bool,
    ) -> tuple[int, bytes]:
        self.check_usable()
        if data is not None and not isinstance(data, bytes):
            data = bytes(data)
        rid, out = self.conn.send_request(stream, name, args, data, end_stream=end_stream)
        self.calls[rid] = PendingCall(rid, stream, name, time.monotonic())
        self.bytes_sent += len(out)
        return rid, out

    def data_encoding(self, stream: int, encoding: str, level: int | None, context: str) -> bytes:
        self.check_usable()
        if level is None:
            level = self.settings.level
        settings = StreamSettings(
            encoding,
            level if encoding != "identity" else None,
            MAX_WINDOW_LOG if encoding == "zstd-8mb" else None,
            context,
        )
        out = self.conn.set_data_encoding(stream, settings)
        self.bytes_sent += len(out)
        return out

    def end_stream(self, stream: int) -> bytes:
        check_stream(stream)
        out = self.conn.end_stream(stream)
        self.bytes_sent += len(out)
        return out

    def fail_all(self, exc: ServerError | ConnectionLost) -> builtins.list[tuple[int, Outcome]]:
        if self.failure is None:
            self.failure = exc
        done: builtins.list[tuple[int, Outcome]] = [(rid, fresh(exc)) for rid in self.calls]
        self.calls.clear()
        return done

    def feed(self, data: bytes) -> builtins.list[tuple[int, Outcome]]:
        self.bytes_received += len(data)
        if self.failure is not None:
            return []
        try:
            events = self.conn.receive_data(data)
        except RemoteError as exc:
            broken = ServerError(
                str(exc.code),
                f"the server broke the protocol: {exc.message}",
                details={"detected_by": "client"},
            )
            return self.fail_all(broken)
        done: builtins.list[tuple[int, Outcome]] = []
        for event in events:
            match event:
                case ServerSettingsReceived(settings=settings):
                    self.server_settings = settings
                case ResponseHeader(request_id=rid, header=header):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.header = header
                case ResponseBody(request_id=rid, data=chunk):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.parts.append(chunk)
                case ResponseComplete(request_id=rid, raw_bytes=raw, wire_bytes=wire):
                    self.raw_bytes_received += raw
                    self.wire_bytes_received += wire
                    self.responses += 1
                    call = self.calls.pop(rid, None)
                    if call is not None:
                        response = Response(
                            rid,
                            call.stream_id,
                            call.header or {},
                            b"".join(call.parts),
                            raw,
                            wire,
                            time.monotonic() - call.started,
                        )
                        done.append((rid, response))
                case ResponseError(request_id=rid, error=error, partial=partial, wire_bytes=w):
                    self.wire_bytes_received += w
                    self.errors += 1
                    if self.calls.pop(rid, None) is not None:
                        done.append((rid, ServerError.from_wire(error, rid, partial)))
                case ConnectionErrorReceived(error=error):
                    done += self._connection_error(error)
                case TextOutputReceived(level=level, message=message):
                    self.messages.append((level, message))
                case ProgressReceived(request_id=rid, progress=progress):
                    call = self.calls.get(rid)
                    if call is not None:
                        call.progress = (progress.done, progress.total)
                case _:
                    pass  # ServerStreamEnded: the core already dropped the stream's decoder
        return done

    def _connection_error(self, error: ErrorResponse) -> builtins.list[tuple[int, Outcome]]:
        exc = ServerError.from_wire(error, None)
        if error.code != "goaway":
            return self.fail_all(exc)
        self.goaway = exc
        listed = error.details.get("in_flight")
        keep = {r for r in listed if isinstance(r, int)} if isinstance(listed, list) else set()
        done: builtins.list[tuple[int, Outcome]] = []
        for rid in builtins.list(self.calls):
            if rid not in keep:
                del self.calls[rid]
                done.append((rid, exc.copy()))
        return done


def check_stream(stream: int) -> None:
    if not isinstance(stream, int) or stream % 2 == 0 or not 0 < stream < 256:
        raise ValueError(f"client streams have odd ids in [1, 255], not {stream!r}")


def client_settings(
    encodings: Iterable[str],
    level: int | None,
    context: str,
    max_frame_size: int,
    token: str | None,
) -> ClientSettings:
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
    if not MIN_CLIENT_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
        raise ValueError(
            f"max_frame_size must be in [{MIN_CLIENT_FRAME_SIZE}, {MAX_FRAME_SIZE_LIMIT}]"
        )
    return ClientSettings(
        encodings=tuple(encodings),
        level=level,
        context=context,
        max_frame_size=max_frame_size,
        token=token,
    )


def get_args(
    key: str, offset: int | None, length: int | None, digest: bool = True
) -> dict[str, Any]:
    args: dict[str, Any] = {"key": key}
    if offset is not None:
        args["offset"] = offset
    if length is not None:
        args["length"] = length
    if not digest:
        args["digest"] = False
    return args


def generate_args(size: int, kind: str, seed: int, digest: bool = True) -> dict[str, Any]:
    args: dict[str, Any] = {"size": size, "kind": kind, "seed": seed}
    if not digest:
        args["digest"] = False
    return args


def list_args(prefix: str | None, limit: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if prefix is not None:
        args["prefix"] = prefix
    if limit is not None:
        args["limit"] = limit
    return args
