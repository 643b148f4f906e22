"""Helpers of the server-connection properties: a connection with given limits, a capture
cut into chunks, and the checks every sequence of events must pass whatever the input."""

from __future__ import annotations

import itertools
from typing import Any

from server.protocol.errors import ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.frames import decode_frames
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ServerSettings, pack, unpack_map
from server.protocol.server_conn import ServerConnection

SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, Limits().to_wire())
ECHO_MAP = pack({"name": "echo", "args": {}})


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def connection(**limits: Any) -> ServerConnection:
    return ServerConnection(Limits(**limits), SERVER_SETTINGS)


REQUEST_LEVEL_CODES = {
    ErrorCode.BAD_REQUEST,
    ErrorCode.TOO_LARGE,
    ErrorCode.TOO_MANY_STREAMS,
    ErrorCode.OVERLOADED,
    ErrorCode.SHUTTING_DOWN,
}


def check_events(events: list[ServerEvent], conn: ServerConnection | None = None) -> None:
    """What the front may rely on, whatever the input: at most one ConnectionFailed, last,
    with a documented connection-level code, whose frame is what the connection sends;
    requests and streams with valid ids, each request answered at most once by an event,
    request-level codes only; and (given the connection) every request event still in
    flight, none of them still incomplete."""
    failures = [i for i, e in enumerate(events) if isinstance(e, ConnectionFailed)]
    assert len(failures) <= 1
    if failures:
        assert failures[0] == len(events) - 1
        failed = events[-1]
        assert isinstance(failed, ConnectionFailed)
        assert failed.code in (ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE)
        (frame,) = decode_frames(failed.data)
        assert (frame.request_id, frame.stream_id, frame.type) == (0, 0, 5)
        assert unpack_map(frame.payload, "error")["code"] == failed.code.value
        if conn is not None:
            assert conn.failed and conn.data_to_send().endswith(failed.data)
    request_ids: list[int] = []
    for event in events:
        if isinstance(event, RequestReady | RequestRejected):
            assert event.request_id % 2 == 1 and event.stream_id % 2 == 1
            request_ids.append(event.request_id)
        if isinstance(event, RequestReady):
            command = unpack_map(event.command_map, "command")
            assert (command["name"], command.get("args", {})) == (event.name, event.args)
            assert event.has_data or not event.data
        elif isinstance(event, RequestRejected):
            assert event.code in REQUEST_LEVEL_CODES
        elif isinstance(event, StreamEnded | StreamReset | StreamSettingsReceived):
            assert event.stream_id % 2 == 1
    assert len(request_ids) == len(set(request_ids)), "a request answered twice"
    if conn is not None and not conn.failed:
        in_flight = set(conn.in_flight_ids())
        incomplete = set(conn.incomplete_ids())
        assert set(request_ids) <= in_flight
        assert not set(request_ids) & incomplete
        assert conn.inflight <= len(in_flight)


def feed_all(conn: ServerConnection, chunks: list[bytes]) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
        assert conn.inflight >= 0
    return events
