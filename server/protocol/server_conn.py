"""The server side of a connection, sans I/O: client bytes in, typed events out, and every
byte the server sends on it out of :meth:`ServerConnection.data_to_send`.

It drives the three state machines of :mod:`server.protocol.server_states` and keeps the
connection's in-flight bookkeeping: which requests are answered, which have had part of
their response sent, and whether each server stream (``c + 1``) is open. The front adds the
frames its workers made (:meth:`~ServerConnection.send_frames`) and has the connection make
its own answers (errors, goaway).
"""

from __future__ import annotations

from .error_frames import CONTROL_STREAM, connection_error_frame, error_frame
from .errors import ErrorCode, PayloadError, ProtocolError, RemoteError
from .events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from .frames import (
    SETTINGS_EOS,
    STREAM_BEGIN,
    STREAM_END,
    TYPE_REQUEST,
    TYPE_SETTINGS,
    TYPE_STREAM_SETTINGS,
    Frame,
    FrameDecoder,
    FrameType,
    SettingsFlags,
    encode_frame,
    validate_frame,
)
from .limits import MAX_WINDOW_LOG, Limits
from .payloads import (
    WRITE_COMMANDS,
    ClientSettings,
    ServerSettings,
    StreamSettings,
    pack,
    unpack_map,
    withheld_commands,
)
from .server_requests import ConnectionRequests, StreamEntry
from .server_states import (
    CONN_ERRORS,
    CONN_TABLE,
    STREAM_ERRORS,
    STREAM_TABLE,
    ConnInput,
    ConnState,
    ReqState,
    StreamInput,
    StreamState,
)


class ServerConnection:
    """One connection as the server sees it.

    Input: ``receive_data(bytes)`` returns events. Output: the server's settings frame, the
    frames given to :meth:`send_frames`, and the answers made by :meth:`send_error`,
    :meth:`fail_stream`, :meth:`end_server_stream`, :meth:`send_goaway` and :meth:`fail`
    come out of :meth:`data_to_send` in order. A request is in flight from its first frame
    until its last response frame was handed over. After a :class:`ConnectionFailed` event
    (or :meth:`fail`) the connection accepts nothing more; its error frame is already queued.
    """

    def __init__(
        self, limits: Limits, server_settings: ServerSettings, *, allow_delete: bool = False
    ) -> None:
        """``allow_delete``: the server offers the ``delete`` extension (``--allow-delete``);
        without it ``delete`` is an unknown command, refused by no permission check here."""
        self.limits = limits
        self.server_settings = server_settings
        self.state = ConnState.AWAIT_SETTINGS
        self.client_settings = ClientSettings()
        self._decoder = FrameDecoder(limits.max_frame_size)
        self._settings_parts: list[bytes] = []
        self._streams: dict[int, StreamEntry] = {}
        write_commands = WRITE_COMMANDS - withheld_commands(allow_delete)
        self.requests = ConnectionRequests(limits, self._streams, write_commands)
        self._requests = self.requests.by_id
        self._out: list[bytes] = [self.initial_bytes()]

    # -- helpers for the I/O layer ---------------------------------------------------

    def initial_bytes(self) -> bytes:
        """The server's settings frame, its first frame on every connection (already
        queued in :meth:`data_to_send` of a new connection)."""
        return encode_frame(
            0,
            CONTROL_STREAM,
            0,
            FrameType.SENDER_PROTOCOL_SETTINGS,
            SettingsFlags.EOS,
            pack(self.server_settings.to_wire()),
        )

    @property
    def partial_frame(self) -> bool:
        """Whether bytes of an incomplete frame are buffered (for the frame timeout)."""
        return self._decoder.buffered > 0

    @property
    def open_streams(self) -> int:
        return sum(1 for s in self._streams.values() if s.state is StreamState.OPEN)

    @property
    def failed(self) -> bool:
        return self.state is ConnState.FAILED

    @property
    def drained(self) -> bool:
        """After a goaway: every request it listed has been answered."""
        return self.goaway and not any(not r.answered for r in self._requests.values())

    def in_flight_ids(self) -> list[int]:
        """Requests whose first frame arrived and that are not answered yet."""
        return sorted(rid for rid, r in self._requests.items() if not r.answered)

    def incomplete_ids(self) -> list[int]:
        """Requests whose frames are still arriving."""
        return sorted(rid for rid, r in self._requests.items() if r.state is not ReqState.DONE)

    def incomplete_progress(self) -> dict[int, int]:
        """For each request whose frames are still arriving, how many have arrived: a count
        that stops moving is a request that makes no progress."""
        return {rid: r.frames for rid, r in self._requests.items() if r.state is not ReqState.DONE}

    def start_goaway(self) -> list[int]:
        """Refuse new requests from now on (``shutting-down``); returns the ids still to
        be answered."""
        self.goaway = True
        return self.in_flight_ids()

    def response_sent(self, request_id: int) -> None:
        """The request's last frame (eos or error) was sent."""
        self.requests.response_sent(request_id)

    @property
    def inflight(self) -> int:
        return self.requests.inflight

    @property
    def goaway(self) -> bool:
        return self.requests.goaway

    @goaway.setter
    def goaway(self, value: bool) -> None:
        self.requests.goaway = value

    def permit_writes(self, allowed: bool) -> list[ServerEvent]:
        """The front's verdict on write permission (from the client's settings): from now
        on a write command without it is refused as soon as its map is complete, before its
        data is held. Returns the refusals of such requests already arriving."""
        return self.requests.permit_writes(allowed)

    # -- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the client since the last call."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def send_frames(
        self, stream_id: int, request_id: int, data: bytes, *, done: bool, stream_open: bool
    ) -> None:
        """Queue wire-ready frames of server stream ``stream_id + 1`` made elsewhere (by a
        worker). ``done``: they hold request ``request_id``'s last frame (0: no request);
        ``stream_open``: the server stream is open (begun, not ended) after them."""
        self._out.append(data)
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.server_open = stream_open
        if request_id:
            if done:
                self.response_sent(request_id)
            else:
                request = self._requests.get(request_id)
                if request is not None:
                    request.partial = True

    def send_error(
        self,
        stream_id: int,
        request_id: int,
        code: ErrorCode,
        message: str,
        retryable: bool = False,
        *,
        end_stream: bool = False,
    ) -> None:
        """Answer a request with an error-response made here, on server stream
        ``stream_id + 1`` (``begin`` if it is not open, ``end`` with ``end_stream``)."""
        stream = self._streams.get(stream_id)
        server_open = stream is not None and stream.server_open
        flags = (0 if server_open else STREAM_BEGIN) | (STREAM_END if end_stream else 0)
        self._out.append(
            error_frame(request_id, stream_id + 1, code, message, retryable, stream_flags=flags)
        )
        if stream is not None:
            stream.server_open = not end_stream
        self.response_sent(request_id)

    def end_server_stream(self, stream_id: int) -> None:
        """End server stream ``stream_id + 1`` with an empty stream-settings frame if it is
        open (when no response is left to carry ``end``)."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.server_open:
            return
        self._out.append(
            encode_frame(0, stream_id + 1, STREAM_END, FrameType.STREAM_SETTINGS, SettingsFlags.EOS)
        )
        stream.server_open = False

    def fail_stream(self, stream_id: int, code: ErrorCode, message: str) -> list[int]:
        """Answer every complete request of the stream still in flight with ``code``
        (retryable if none of its response was sent), in order; the last one ends the
        server stream. Returns their ids."""
        ids = [
            (rid, r.partial)
            for rid, r in self._requests.items()
            if r.stream_id == stream_id and r.state is ReqState.DONE and not r.answered
        ]
        for n, (rid, partial) in enumerate(ids):
            self.send_error(
                stream_id, rid, code, message, not partial, end_stream=n == len(ids) - 1
            )
        return [rid for rid, _ in ids]

    def send_goaway(self, message: str, *, listing: bool = True) -> list[int]:
        """Refuse new requests and tell the client so: a connection-level ``goaway``
        listing the requests still to be answered (``listing=False``: none will be, the
        connection is closing now). Returns the listed ids."""
        ids = self.start_goaway() if listing else []
        self.goaway = True
        self._out.append(connection_error_frame(ErrorCode.GOAWAY, message, True, in_flight=ids))
        return ids

    def fail(self, code: ErrorCode, message: str) -> None:
        """A connection-level error found outside the frames (a timeout, input that ended
        inside a frame): queue its error-response; the connection accepts nothing more."""
        if self.state is ConnState.FAILED:
            return
        self.state = ConnState.FAILED
        self._out.append(connection_error_frame(code, message))

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ServerEvent]:
        if self.state is ConnState.FAILED:
            return []
        events: list[ServerEvent] = []
        frames = self._decoder.feed(data)
        try:
            for frame in frames:
                self._frame(frame, events)
            if self._decoder.error is not None:
                raise self._decoder.error
        except RemoteError as exc:
            self.state = ConnState.FAILED
            code = exc.code if exc.code is ErrorCode.TOO_LARGE else ErrorCode.PROTOCOL
            error = connection_error_frame(code, exc.message)
            self._out.append(error)
            events.append(ConnectionFailed(code, exc.message, error))
        return events

    def receive_frame(self, frame: Frame) -> list[ServerEvent]:
        """Process one already-parsed frame (used by tests and the HTTP transport)."""
        return self.receive_data(frame.encode())

    def _frame(self, frame: Frame, events: list[ServerEvent]) -> None:
        validate_frame(frame, from_client=True)
        ftype = frame.type
        if frame.stream_id == CONTROL_STREAM or frame.stream_id % 2 == 0:
            raise ProtocolError(f"a client may not send on stream {frame.stream_id}")
        # Connection level: settings come first.
        if ftype == TYPE_SETTINGS:
            conn_input = (
                ConnInput.SETTINGS_EOS if frame.flags & SETTINGS_EOS else ConnInput.SETTINGS_MORE
            )
        else:
            conn_input = ConnInput.OTHER
        key = (self.state, conn_input)
        if key not in CONN_TABLE:
            raise ProtocolError(CONN_ERRORS.get(key, "frame out of place"))
        previous = self.state
        self.state = CONN_TABLE[key]
        if previous is ConnState.AWAIT_SETTINGS and conn_input is ConnInput.OTHER:
            events.append(SettingsReceived(self.client_settings, explicit=False))

        stream = self._enter_stream(frame, events)
        before = len(events)
        if ftype == TYPE_SETTINGS:
            self._settings_frame(frame, events)
        elif ftype == TYPE_STREAM_SETTINGS:
            self._stream_settings_frame(frame, stream, events)
        elif ftype == TYPE_REQUEST:
            self.requests.request_frame(frame, stream, events)
        else:
            self.requests.data_frame(frame, stream, events)
        if frame.stream_flags & STREAM_END:
            last = events[-1] if len(events) > before else None
            if isinstance(last, RequestReady | RequestRejected):
                # The frame completed a request: its answer carries the end.
                events[-1] = last._replace(end_stream=True)
            else:
                events.append(StreamEnded(frame.stream_id))
            if stream.incomplete:
                # Frames of that request would have to follow the stream's last frame.
                raise ProtocolError(
                    f"stream {frame.stream_id} ended while request "
                    f"{min(stream.incomplete)} on it is incomplete"
                )
            stream.state = STREAM_TABLE[(stream.state, StreamInput.END)]
            stream.encoded_data = False
            stream.settings_parts.clear()

    def _enter_stream(self, frame: Frame, events: list[ServerEvent]) -> StreamEntry:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            stream = self._streams[frame.stream_id] = StreamEntry()
        if frame.stream_flags & STREAM_BEGIN:
            over = (
                stream.state is not StreamState.OPEN
                and self.open_streams >= self.limits.max_streams
            )
            stream_input = StreamInput.BEGIN_OVER_LIMIT if over else StreamInput.BEGIN
        else:
            stream_input = StreamInput.FRAME
        key = (stream.state, stream_input)
        if key not in STREAM_TABLE:
            raise ProtocolError(STREAM_ERRORS.get(key, "stream rule broken"))
        if stream_input is not StreamInput.FRAME and stream.incomplete:
            # A new stream cannot carry the rest of a request of the old one.
            raise ProtocolError(
                f"begin on stream {frame.stream_id} while request "
                f"{min(stream.incomplete)} on it is incomplete"
            )
        if stream.state is StreamState.OPEN and stream_input is not StreamInput.FRAME:
            events.append(StreamReset(frame.stream_id))
            stream.encoded_data = False
            stream.settings_parts.clear()
            stream.server_open = False  # the server stream starts again with ``begin``
        stream.state = STREAM_TABLE[key]
        return stream

    def _settings_frame(self, frame: Frame, events: list[ServerEvent]) -> None:
        self._settings_parts.append(frame.payload)
        if sum(map(len, self._settings_parts)) > self.limits.max_request_map_bytes:
            raise ProtocolError("sender-protocol-settings too large")
        if not frame.flags & SETTINGS_EOS:
            return
        payload = b"".join(self._settings_parts)
        self._settings_parts.clear()
        try:
            self.client_settings = ClientSettings.from_wire(unpack_map(payload, "settings"))
        except PayloadError as exc:
            raise ProtocolError(exc.message) from None
        events.append(SettingsReceived(self.client_settings))

    def _stream_settings_frame(
        self, frame: Frame, stream: StreamEntry, events: list[ServerEvent]
    ) -> None:
        stream.settings_parts.append(frame.payload)
        if sum(map(len, stream.settings_parts)) > self.limits.max_request_map_bytes:
            raise ProtocolError("stream-settings too large")
        if not frame.flags & SETTINGS_EOS:
            return
        payload = b"".join(stream.settings_parts)
        stream.settings_parts.clear()
        if not payload:
            settings = StreamSettings()  # the empty stream-settings: identity
        else:
            try:
                settings = StreamSettings.from_wire(unpack_map(payload, "stream-settings"))
            except PayloadError as exc:
                raise ProtocolError(exc.message) from None
            if settings.window_log is not None and settings.window_log > MAX_WINDOW_LOG:
                raise RemoteError(
                    "stream-settings ask for a window over 8 MiB", code=ErrorCode.TOO_LARGE
                )
        stream.encoded_data = settings.encoding != "identity"
        events.append(StreamSettingsReceived(frame.stream_id, settings))
