"""The requests of one server connection, sans I/O: assembled from their command-request
and command-data frames, checked against the in-flight limits and the caps on their maps and
data, and turned into :class:`RequestReady` or :class:`RequestRejected` events.

A request is answered with an error as soon as it is known to fail for a cap or permission
(its map over ``max_request_map_bytes``, its data over ``max_request_data_bytes``, the data of
the connection's unfinished requests over :data:`BUFFERED_REQUESTS` x
``max_request_data_bytes``, a write command without write permission): the rest of its frames
are discarded as they come, and no data of it is held. Other refusals (in-flight limits,
shutting down, a refused stream, a bad map) are answered once its last frame has arrived.
"""

from __future__ import annotations

import dataclasses

from .errors import ErrorCode, PayloadError, ProtocolError
from .events import DataChunk, RequestReady, RequestRejected, ServerEvent
from .frames import (
    DATA_EOS,
    REQUEST_HAVE_DATA,
    REQUEST_MORE,
    REQUEST_NEW,
    STREAM_ENCODED,
    Frame,
)
from .limits import Limits
from .payloads import CommandRequest, unpack_map
from .server_states import REQUEST_ERRORS, REQUEST_TABLE, ReqInput, ReqState, StreamState

#: Command data a connection may hold for unfinished requests, in max_request_data_bytes.
BUFFERED_REQUESTS = 2


@dataclasses.dataclass(slots=True)
class PendingRequest:
    request_id: int
    stream_id: int
    have_data: bool
    state: ReqState = ReqState.MAP
    map_parts: list[bytes] = dataclasses.field(default_factory=list)
    map_size: int = 0
    data: list[DataChunk] = dataclasses.field(default_factory=list)
    data_size: int = 0
    rejection: tuple[ErrorCode, str] | None = None
    rejection_reported: bool = False  # its RequestRejected went out before its last frame
    command: CommandRequest | None = None  # decoded once its map is complete
    frames: int = 0  # frames received (progress, for the adapter's no-progress timeout)
    counted: bool = True  # counts against the in-flight limits
    answered: bool = False
    partial: bool = False  # some of its response was sent (a retry could repeat it)


@dataclasses.dataclass(slots=True)
class StreamEntry:
    state: StreamState = StreamState.CLOSED
    inflight: int = 0
    encoded_data: bool = False  # a non-identity stream-settings is in effect
    settings_parts: list[bytes] = dataclasses.field(default_factory=list)
    incomplete: set[int] = dataclasses.field(default_factory=set)  # requests still arriving
    server_open: bool = False  # the server stream c + 1 has begun and not ended


class ConnectionRequests:
    """Every request of a connection from its first frame until it is answered and its
    last frame has arrived. ``streams`` is the connection's stream table (shared)."""

    def __init__(
        self, limits: Limits, streams: dict[int, StreamEntry], write_commands: frozenset[str]
    ) -> None:
        self.limits = limits
        self.streams = streams
        #: The write commands the server offers (one it withholds is unknown, not forbidden).
        self.write_commands = write_commands
        self.by_id: dict[int, PendingRequest] = {}
        #: Requests counted against max_inflight.
        self.inflight = 0
        #: Refuse new requests (``shutting-down``).
        self.goaway = False
        #: Command data held for requests whose last frame has not come, at most
        #: ``max_buffered`` (without a bound, 256 unfinished requests could hold 256 x 64 MiB).
        self.buffered = 0
        self.max_buffered = BUFFERED_REQUESTS * limits.max_request_data_bytes
        #: Whether this connection may run write commands (the front sets it once it has
        #: read the settings); when known, a write command without it is refused as soon as
        #: its map is complete, before any of its data is held. None: not checked here.
        self.write_allowed: bool | None = None

    def permit_writes(self, allowed: bool) -> list[ServerEvent]:
        self.write_allowed = allowed
        events: list[ServerEvent] = []
        for request in list(self.by_id.values()):
            if request.state is ReqState.DATA:
                self._check_write(request, events)
        return events

    def response_sent(self, request_id: int) -> None:
        """The request's last frame (eos or error) was sent."""
        request = self.by_id.get(request_id)
        if request is None or request.answered:
            return
        request.answered = True
        if request.counted:
            request.counted = False
            self.inflight -= 1
            stream = self.streams.get(request.stream_id)
            if stream is not None:
                stream.inflight -= 1
        if request.state is ReqState.DONE:
            del self.by_id[request_id]

    def request_frame(self, frame: Frame, stream: StreamEntry, events: list[ServerEvent]) -> None:
        flags = frame.flags
        have_data = bool(flags & REQUEST_HAVE_DATA)
        more = bool(flags & REQUEST_MORE)
        rid = frame.request_id
        if flags & REQUEST_NEW:
            if rid == 0 or rid % 2 == 0:
                raise ProtocolError(f"request id {rid} is not odd")
            if rid in self.by_id:
                raise ProtocolError(f"request id {rid} is already in flight")
            request = self.by_id[rid] = PendingRequest(rid, frame.stream_id, have_data)
            stream.incomplete.add(rid)
            if stream.state is StreamState.REJECTED:
                request.rejection = (
                    ErrorCode.TOO_MANY_STREAMS,
                    f"stream {frame.stream_id} could not be opened: max_streams is "
                    f"{self.limits.max_streams}",
                )
            elif self.goaway:
                request.rejection = (ErrorCode.SHUTTING_DOWN, "the server is shutting down")
            elif self.inflight >= self.limits.max_inflight:
                request.rejection = (
                    ErrorCode.OVERLOADED,
                    f"max_inflight ({self.limits.max_inflight}) requests already in flight",
                )
            elif stream.inflight >= self.limits.max_inflight_per_stream:
                request.rejection = (
                    ErrorCode.OVERLOADED,
                    f"max_inflight_per_stream ({self.limits.max_inflight_per_stream}) "
                    "requests already in flight on this stream",
                )
            if request.rejection is None:
                self.inflight += 1
                stream.inflight += 1
            else:
                request.counted = False
                self._advance(request, ReqInput.REJECT)
        else:
            request = self._known_request(rid, frame)
            if request.have_data != have_data:
                raise ProtocolError(f"have-data changed between frames of request {rid}")
        request.frames += 1
        if more:
            req_input = ReqInput.MAP_MORE
        else:
            req_input = ReqInput.MAP_LAST_DATA if have_data else ReqInput.MAP_LAST
        if request.state is ReqState.MAP:
            request.map_parts.append(frame.payload)
            request.map_size += len(frame.payload)
            if request.map_size > self.limits.max_request_map_bytes:
                # Answered now: a map that never ends must not go unanswered.
                self._reject(
                    request,
                    ErrorCode.TOO_LARGE,
                    f"command-request map over max_request_map_bytes "
                    f"({self.limits.max_request_map_bytes})",
                    events,
                )
        self._advance(request, req_input)
        if request.state is ReqState.DATA and request.rejection is None:
            self._map_complete(request)
            self._check_write(request, events)
        elif request.state is ReqState.DONE:
            self._complete(request, events)

    def data_frame(self, frame: Frame, stream: StreamEntry, events: list[ServerEvent]) -> None:
        request = self._known_request(frame.request_id, frame)
        eos = bool(frame.flags & DATA_EOS)
        req_input = ReqInput.DATA_EOS if eos else ReqInput.DATA_MORE
        if not request.have_data:
            raise ProtocolError(f"command-data for request {request.request_id} without have-data")
        encoded = bool(frame.stream_flags & STREAM_ENCODED)
        if encoded and not stream.encoded_data:
            raise ProtocolError("encoded command-data before an encoding stream-settings")
        key = (request.state, req_input)
        if key not in REQUEST_TABLE:
            raise ProtocolError(REQUEST_ERRORS.get(key, "request rule broken"))
        request.frames += 1
        if request.state is ReqState.DATA:
            size = len(frame.payload)
            request.data_size += size
            # Unencoded data is capped here; encoded data is capped by its decoded size on
            # the worker, and its wire size here at twice the limit (no decoded size can
            # justify more).
            cap = self.limits.max_request_data_bytes * (2 if encoded else 1)
            if request.data_size > cap:
                self._reject(
                    request,
                    ErrorCode.TOO_LARGE,
                    f"command data over max_request_data_bytes "
                    f"({self.limits.max_request_data_bytes})",
                    events,
                )
            elif not self._check_write(request, events):
                pass  # refused: its data is not held
            elif self.buffered + size > self.max_buffered:
                self._reject(
                    request,
                    ErrorCode.TOO_LARGE,
                    f"command data of this connection's unfinished requests over "
                    f"{BUFFERED_REQUESTS} x max_request_data_bytes ({self.max_buffered})",
                    events,
                )
            else:
                request.data.append(DataChunk(encoded, frame.payload))
                self.buffered += size
        self._advance(request, req_input)
        if request.state is ReqState.DONE:
            self._complete(request, events)

    def _known_request(self, rid: int, frame: Frame) -> PendingRequest:
        request = self.by_id.get(rid)
        if request is None:
            raise ProtocolError(f"frame for unknown request id {rid}")
        if request.stream_id != frame.stream_id:
            raise ProtocolError(f"frames of request {rid} on two streams")
        return request

    @staticmethod
    def _advance(request: PendingRequest, req_input: ReqInput) -> None:
        key = (request.state, req_input)
        if key not in REQUEST_TABLE:
            raise ProtocolError(REQUEST_ERRORS.get(key, "request rule broken"))
        request.state = REQUEST_TABLE[key]

    def _release(self, request: PendingRequest) -> None:
        """Drop the command data the request holds."""
        if request.data:  # most requests hold none: no generator for them
            self.buffered -= sum(len(chunk.payload) for chunk in request.data)
            request.data.clear()

    def _reject(
        self,
        request: PendingRequest,
        code: ErrorCode,
        message: str,
        events: list[ServerEvent] | None = None,
    ) -> None:
        """Reject the request; with ``events``, answer it now (the rest of its frames are
        discarded as they come), else once its last frame has arrived."""
        request.rejection = (code, message)
        request.map_parts.clear()
        self._release(request)
        self._advance(request, ReqInput.REJECT)
        if events is not None:
            request.rejection_reported = True
            events.append(
                RequestRejected(
                    request.request_id, request.stream_id, code, message, end_stream=False
                )
            )

    def _decode_map(self, request: PendingRequest) -> bytes:
        """Decode the complete map into ``request.command`` (or reject it: bad-request);
        returns the map's bytes."""
        payload = b"".join(request.map_parts)
        request.map_parts.clear()
        try:
            request.command = CommandRequest.from_wire(unpack_map(payload, "command request"))
        except PayloadError as exc:
            request.rejection = (ErrorCode.BAD_REQUEST, exc.message)
        return payload

    def _map_complete(self, request: PendingRequest) -> None:
        """The map of a request with data is complete: decode it, so that a write command
        can be refused before its data is held. A bad map is refused once the request is
        complete, as a request without data is."""
        request.map_parts = [self._decode_map(request)]
        if request.command is None:
            request.rejection = None  # decoded again, and refused, at the end

    def _check_write(self, request: PendingRequest, events: list[ServerEvent]) -> bool:
        """False (and the request refused now) if it is a write command and this connection
        may not write."""
        command = request.command
        if (
            self.write_allowed is False
            and command is not None
            and command.name in self.write_commands
        ):
            message = f"{command.name!r} needs write permission"
            self._reject(request, ErrorCode.FORBIDDEN, message, events)
            return False
        return True

    def _complete(self, request: PendingRequest, events: list[ServerEvent]) -> None:
        self.streams[request.stream_id].incomplete.discard(request.request_id)
        if request.answered:
            # Already answered (response_sent before its last frame arrived): its id is free
            # now, and it must not be answered twice.
            del self.by_id[request.request_id]
            return
        if request.rejection_reported:
            return  # answered when it was rejected; response_sent frees its id
        if request.rejection is None:
            payload = b"".join(request.map_parts)
            if request.command is None:
                payload = self._decode_map(request)
            request.map_parts.clear()
            command = request.command
            if command is not None:
                data = tuple(request.data)
                self._release(request)
                events.append(
                    RequestReady(
                        request.request_id,
                        request.stream_id,
                        command.name,
                        command.args,
                        data,
                        request.have_data,
                        end_stream=False,
                        command_map=payload,
                    )
                )
        if request.rejection is not None:
            code, message = request.rejection
            events.append(
                RequestRejected(
                    request.request_id, request.stream_id, code, message, end_stream=False
                )
            )
