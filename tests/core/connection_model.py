"""A reference model of the server connection's bookkeeping, for the model-based test
(tests/core/test_server_model.py): what each client frame must produce as events and what the
in-flight set, the per-stream state and the counts must be after it.

It is written from the protocol's rules (docs/protocol.md), independently of
server/protocol/server_conn.py: plain dicts and strings, no state tables.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import msgpack

from server.protocol.errors import ErrorCode
from server.protocol.events import (
    DataChunk,
    RequestReady,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
    StreamEnded,
    StreamReset,
)
from server.protocol.limits import Limits
from server.protocol.payloads import ClientSettings, pack
from server.protocol.server_requests import BUFFERED_REQUESTS

#: Small limits, so that every rejection is reached within a few steps.
LIMITS = Limits(
    max_streams=2,
    max_inflight=4,
    max_inflight_per_stream=2,
    max_request_map_bytes=96,
    max_request_data_bytes=64,
)
STREAMS = (1, 3, 5)
REQUEST_IDS = (1, 3, 5, 7, 9, 11, 13)


@dataclasses.dataclass
class ModelRequest:
    rid: int
    sid: int
    have_data: bool
    parts: list[bytes]  # map parts still to send
    command: bytes  # the whole map
    phase: str = "map"  # map, data, done
    rejection: ErrorCode | None = None
    counted: bool = True
    map_size: int = 0
    data_size: int = 0
    data: list[DataChunk] = dataclasses.field(default_factory=list)
    partial: bool = False
    reported: bool = False  # refused for a cap before its last frame, and said so at once
    answered: bool = False


@dataclasses.dataclass
class ModelStream:
    state: str = "closed"  # closed, open, rejected
    inflight: int = 0
    encoded: bool = False
    server_open: bool = False


class ConnectionModel:
    def __init__(self) -> None:
        self.settings_done = False
        self.goaway = False
        self.streams = {sid: ModelStream() for sid in (*STREAMS, 7)}
        self.requests: dict[int, ModelRequest] = {}  # creation order, like the connection's

    # -- queries ---------------------------------------------------------------------------

    def unanswered(self) -> list[int]:
        return sorted(rid for rid, r in self.requests.items() if not r.answered)

    def answerable(self) -> list[int]:
        """Requests the front would answer now: complete ones, and those refused early."""
        return sorted(
            r.rid
            for r in self.requests.values()
            if not r.answered and (r.phase == "done" or r.reported)
        )

    def buffered(self) -> int:
        """Command data the connection holds for requests still arriving."""
        return sum(
            len(chunk.payload)
            for r in self.requests.values()
            if r.phase == "data" and r.rejection is None
            for chunk in r.data
        )

    def incomplete(self, sid: int | None = None) -> list[int]:
        return sorted(
            r.rid
            for r in self.requests.values()
            if r.phase != "done" and (sid is None or r.sid == sid)
        )

    def inflight(self) -> int:
        return sum(1 for r in self.requests.values() if r.counted)

    def open_streams(self) -> int:
        return sum(1 for s in self.streams.values() if s.state == "open")

    def free_ids(self) -> list[int]:
        return [rid for rid in REQUEST_IDS if rid not in self.requests]

    def in_phase(self, phase: str) -> list[int]:
        return sorted(r.rid for r in self.requests.values() if r.phase == phase)

    def done_unanswered_on(self, sid: int) -> list[int]:
        return [
            r.rid
            for r in self.requests.values()
            if r.sid == sid and r.phase == "done" and not r.answered
        ]

    # -- the frame envelope: connection, stream entry, end ----------------------------------

    def enter(self, sid: int, begin: bool, is_settings: bool = False) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        if not self.settings_done:
            self.settings_done = True
            if not is_settings:
                events.append(SettingsReceived(ClientSettings(), explicit=False))
        stream = self.streams[sid]
        if begin:
            assert not self.incomplete(sid), "a valid begin needs no incomplete request"
            if stream.state == "open":
                events.append(StreamReset(sid))
                stream.encoded = False
                stream.server_open = False
            elif self.open_streams() >= LIMITS.max_streams:
                stream.state = "rejected"
            else:
                stream.state = "open"
        else:
            assert stream.state != "closed", "a valid frame without begin needs an open stream"
        return events

    def end(self, sid: int, events: list[ServerEvent], before: int) -> None:
        last = events[-1] if len(events) > before else None
        if isinstance(last, RequestReady | RequestRejected):
            events[-1] = last._replace(end_stream=True)
        else:
            events.append(StreamEnded(sid))
        assert not self.incomplete(sid), "a valid end needs no incomplete request"
        stream = self.streams[sid]
        stream.state = "closed"
        stream.encoded = False

    # -- requests ----------------------------------------------------------------------------

    def new_request(self, rid: int, sid: int, have_data: bool, parts: list[bytes]) -> ModelRequest:
        stream = self.streams[sid]
        request = ModelRequest(rid, sid, have_data, list(parts), b"".join(parts))
        if stream.state == "rejected":
            request.rejection = ErrorCode.TOO_MANY_STREAMS
        elif self.goaway:
            request.rejection = ErrorCode.SHUTTING_DOWN
        elif (
            self.inflight() >= LIMITS.max_inflight
            or stream.inflight >= LIMITS.max_inflight_per_stream
        ):
            request.rejection = ErrorCode.OVERLOADED
        if request.rejection is None:
            stream.inflight += 1
        else:
            request.counted = False
        self.requests[rid] = request
        return request

    def map_part(self, request: ModelRequest, events: list[ServerEvent]) -> bytes:
        """Send the next part of the request's map; returns it."""
        part = request.parts.pop(0)
        if request.rejection is None:
            request.map_size += len(part)
            if request.map_size > LIMITS.max_request_map_bytes:
                self._refuse_now(request, events)
        if not request.parts:
            request.phase = "data" if request.have_data else "done"
            if request.phase == "done":
                self._complete(request, events)
        return part

    def _refuse_now(self, request: ModelRequest, events: list[ServerEvent]) -> None:
        """A cap passed: too-large, answered at once; the rest of its frames are discarded."""
        request.rejection = ErrorCode.TOO_LARGE
        request.data.clear()
        request.reported = True
        events.append(
            RequestRejected(request.rid, request.sid, ErrorCode.TOO_LARGE, "", end_stream=False)
        )

    def _complete(self, request: ModelRequest, events: list[ServerEvent]) -> None:
        if request.answered:
            del self.requests[request.rid]
        elif not request.reported:
            events.append(self._outcome(request))

    def data_frame(
        self, request: ModelRequest, payload: bytes, encoded: bool, eos: bool
    ) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        if request.rejection is None:
            request.data_size += len(payload)
            cap = LIMITS.max_request_data_bytes * (2 if encoded else 1)
            held = self.buffered() + len(payload)
            over = held > BUFFERED_REQUESTS * LIMITS.max_request_data_bytes
            if request.data_size > cap or over:
                self._refuse_now(request, events)
            else:
                request.data.append(DataChunk(encoded, payload))
        if eos:
            request.phase = "done"
            self._complete(request, events)
        return events

    def _outcome(self, request: ModelRequest) -> ServerEvent:
        if request.rejection is None:
            try:
                decoded: Any = _unpack(request.command)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict) and isinstance(decoded.get("name"), str):
                return RequestReady(
                    request.rid,
                    request.sid,
                    decoded["name"],
                    decoded.get("args", {}),
                    tuple(request.data),
                    request.have_data,
                    end_stream=False,
                    command_map=request.command,
                )
            request.rejection = ErrorCode.BAD_REQUEST
        return RequestRejected(request.rid, request.sid, request.rejection, "", end_stream=False)

    # -- the server's answers ------------------------------------------------------------------

    def answered(self, rid: int) -> None:
        request = self.requests[rid]
        request.answered = True
        if request.counted:
            request.counted = False
            self.streams[request.sid].inflight -= 1
        if request.phase == "done":
            del self.requests[rid]


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise ValueError(str(exc)) from None


def command_map(name: str, key: int, pad: int) -> bytes:
    args: dict[str, Any] = {"key": key}
    if pad:
        args["pad"] = "p" * pad
    return pack({"name": name, "args": args})


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]
