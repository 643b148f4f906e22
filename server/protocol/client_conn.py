"""The client side of a connection, sans I/O: requests out as bytes, server bytes in as
typed events (response header, body chunks, completion, errors)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from .encoding import Decoder, Encoder
from .errors import PayloadError, ProtocolError
from .events import (
    ClientEvent,
    ConnectionErrorReceived,
    ProgressReceived,
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ResponseHeader,
    ServerSettingsReceived,
    ServerStreamEnded,
    TextOutputReceived,
)
from .frames import (
    DATA_CONTINUATION,
    DATA_EOS,
    HEADER_SIZE,
    REQUEST_CONTINUATION,
    REQUEST_HAVE_DATA,
    REQUEST_MORE,
    REQUEST_NEW,
    RESPONSE_EOS,
    STREAM_BEGIN,
    STREAM_ENCODED,
    STREAM_END,
    TYPE_DATA,
    TYPE_REQUEST,
    Frame,
    FrameDecoder,
    FrameType,
    SettingsFlags,
    StreamFlags,
    encode_frame,
    validate_frame,
)
from .limits import DEFAULT_MAX_FRAME_SIZE
from .payloads import (
    ClientSettings,
    ErrorResponse,
    Progress,
    ServerSettings,
    StreamSettings,
    TextOutput,
    pack,
    unpack_map,
)

#: A client trusts its server more than a server trusts its clients, but still bounds what
#: one frame may decode to (a run of zeros compresses by more than 1000x).
DEFAULT_CLIENT_DECODE_CAP = 256 << 20


_TYPES = {int(t): t for t in FrameType}


def _split_header(buffer: bytearray) -> tuple[dict[str, Any], bytes] | None:
    """The response header (a MessagePack map) and the body bytes after it, or None while
    the header is incomplete."""
    try:
        header = msgpack.unpackb(buffer, raw=False, strict_map_key=True)
        body = b""
    except msgpack.ExtraData as extra:  # the usual case: body bytes follow the header
        header, rest = extra.args  # (unpacked, extra)
        body = bytes(rest)
    except ValueError as exc:
        if "incomplete" in str(exc):
            return None
        raise ProtocolError("response header is not valid MessagePack") from exc
    except Exception as exc:
        raise ProtocolError("response header is not valid MessagePack") from exc
    if not isinstance(header, dict):
        raise ProtocolError("response header is not a map")
    return header, body


@dataclasses.dataclass(slots=True)
class _Pending:
    request_id: int
    stream_id: int
    buffer: bytearray = dataclasses.field(default_factory=bytearray)
    header: dict[str, Any] | None = None
    raw_bytes: int = 0
    wire_bytes: int = 0
    started: bool = False


@dataclasses.dataclass(slots=True)
class _ServerStream:
    decoder: Decoder | None = None
    overhead: int = 0  # stream-settings bytes not yet charged to a response


class ClientConnection:
    """One connection as a client sees it."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        decode_cap: int = DEFAULT_CLIENT_DECODE_CAP,
    ) -> None:
        self.settings = settings
        own_max = settings.max_frame_size if settings is not None else DEFAULT_MAX_FRAME_SIZE
        self._decoder = FrameDecoder(own_max)
        self.decode_cap = decode_cap
        self.peer_max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.server_settings: ServerSettings | None = None
        self._open_streams: set[int] = set()
        self._data_encoders: dict[int, Encoder] = {}
        self._pending: dict[int, _Pending] = {}
        self._server_streams: dict[int, _ServerStream] = {}
        self._next_id = 1

    # -- output ------------------------------------------------------------------------

    def initiate(self) -> bytes:
        """The client's settings frame (on stream 1 with ``begin``), if it has settings."""
        if self.settings is None:
            return b""
        self._open_streams.add(1)
        return encode_frame(
            0,
            1,
            StreamFlags.BEGIN,
            FrameType.SENDER_PROTOCOL_SETTINGS,
            SettingsFlags.EOS,
            pack(self.settings.to_wire()),
        )

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _allocate_id(self) -> int:
        for _ in range(1 << 15):
            rid = self._next_id
            self._next_id = rid + 2 if rid + 2 <= 0xFFFF else 1
            if rid not in self._pending:
                return rid
        raise ProtocolError("no free request id: 32768 requests in flight")

    def _stream_flags(self, stream_id: int) -> int:
        if stream_id % 2 == 0 or not 0 < stream_id < 256:
            raise ValueError(f"client streams have odd ids in [1, 255], not {stream_id}")
        if stream_id in self._open_streams:
            return 0
        self._open_streams.add(stream_id)
        return STREAM_BEGIN

    def set_data_encoding(self, stream_id: int, settings: StreamSettings) -> bytes:
        """Announce (and use) an encoding for this stream's command data."""
        sflags = self._stream_flags(stream_id)
        if settings.encoding == "identity":
            self._data_encoders.pop(stream_id, None)
        else:
            self._data_encoders[stream_id] = Encoder(settings, self.peer_max_frame_size)
        return encode_frame(
            0,
            stream_id,
            sflags,
            FrameType.STREAM_SETTINGS,
            SettingsFlags.EOS,
            pack(settings.to_wire()),
        )

    def send_request(
        self,
        stream_id: int,
        name: str,
        args: dict[str, Any] | None = None,
        data: bytes | None = None,
        *,
        end_stream: bool = False,
        request_id: int | None = None,
    ) -> tuple[int, bytes]:
        """Frames of one request; returns (request id, bytes to send)."""
        rid = self._allocate_id() if request_id is None else request_id
        if rid in self._pending:
            raise ValueError(f"request id {rid} is in flight")
        payload = pack({"name": name, "args": args or {}})
        size = self.peer_max_frame_size
        sflags = self._stream_flags(stream_id)
        end = STREAM_END if end_stream else 0
        if data is None and len(payload) <= size:  # the usual request: one frame
            out = encode_frame(rid, stream_id, sflags | end, TYPE_REQUEST, REQUEST_NEW, payload)
        else:
            out = self._request_frames(rid, stream_id, sflags, end, payload, data)
        if end_stream:
            self._close_stream(stream_id)
        self._pending[rid] = _Pending(rid, stream_id)
        return rid, out

    def _request_frames(
        self, rid: int, stream_id: int, sflags: int, end: int, payload: bytes, data: bytes | None
    ) -> bytes:
        """The frames of a request whose map spans frames or that carries data."""
        size = self.peer_max_frame_size
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        have_data = REQUEST_HAVE_DATA if data is not None else 0
        out = bytearray()
        data_payloads: list[bytes] = []
        encoded = 0
        if data is not None:
            encoder = self._data_encoders.get(stream_id)
            if encoder is not None:
                data_payloads = encoder.encode_response(data)
                encoded = STREAM_ENCODED
            else:
                data_payloads = [data[i : i + size] for i in range(0, len(data), size)]
            if not data_payloads:
                # Nothing to send (empty data under the ``frame`` context): one empty raw
                # frame carries the eos; an empty ``encoded`` payload is not a complete unit.
                data_payloads = [b""]
                encoded = 0
        last_piece = len(pieces) - 1
        for i, piece in enumerate(pieces):
            flags = REQUEST_NEW if i == 0 else REQUEST_CONTINUATION
            if i < last_piece:
                flags |= REQUEST_MORE
            last_frame = i == last_piece and not data_payloads
            frame_sflags = (sflags if i == 0 else 0) | (end if last_frame else 0)
            out += encode_frame(
                rid, stream_id, frame_sflags, TYPE_REQUEST, flags | have_data, piece
            )
        last_data = len(data_payloads) - 1
        for i, piece in enumerate(data_payloads):
            dflags = DATA_EOS if i == last_data else DATA_CONTINUATION
            dsflags = encoded | (end if i == last_data else 0)
            out += encode_frame(rid, stream_id, dsflags, TYPE_DATA, dflags, piece)
        return bytes(out)

    def _close_stream(self, stream_id: int) -> None:
        self._open_streams.discard(stream_id)
        self._data_encoders.pop(stream_id, None)

    def end_stream(self, stream_id: int) -> bytes:
        """End an open client stream with an empty stream-settings frame (eos + end)."""
        if stream_id not in self._open_streams:
            return b""
        self._close_stream(stream_id)
        return encode_frame(
            0, stream_id, StreamFlags.END, FrameType.STREAM_SETTINGS, SettingsFlags.EOS
        )

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientEvent]:
        """Events for the bytes received. Raises :class:`ProtocolError` (or
        :class:`DecodeError`) when the server breaks the protocol."""
        events: list[ClientEvent] = []
        for frame in self._decoder.feed(data):
            self._frame(frame, events)
        if self._decoder.error is not None:
            raise self._decoder.error
        return events

    def _frame(self, frame: Frame, events: list[ClientEvent]) -> None:
        validate_frame(frame, from_client=False)
        ftype = _TYPES[frame.type]
        try:
            if frame.stream_id == 0:
                self._control_frame(frame, ftype, events)
                return
            if frame.stream_id % 2:
                raise ProtocolError(f"a server may not send on odd stream {frame.stream_id}")
            self._stream_frame(frame, ftype, events)
        except PayloadError as exc:
            raise ProtocolError(exc.message) from None

    def _control_frame(self, frame: Frame, ftype: FrameType, events: list[ClientEvent]) -> None:
        if ftype is FrameType.SENDER_PROTOCOL_SETTINGS:
            if not frame.flags & SettingsFlags.EOS:
                raise ProtocolError("split server settings are not supported")
            settings = ServerSettings.from_wire(unpack_map(frame.payload, "server settings"))
            self.server_settings = settings
            self.peer_max_frame_size = settings.max_frame_size
            events.append(ServerSettingsReceived(settings))
        elif ftype is FrameType.ERROR_RESPONSE:
            error = ErrorResponse.from_wire(unpack_map(frame.payload, "error-response"))
            events.append(ConnectionErrorReceived(error))
        elif ftype is FrameType.TEXT_OUTPUT:
            text = TextOutput.from_wire(unpack_map(frame.payload, "text-output"))
            events.append(TextOutputReceived(text.level, text.message))
        else:
            raise ProtocolError(f"{ftype.wire_name} on the control stream")

    def _stream_frame(self, frame: Frame, ftype: FrameType, events: list[ClientEvent]) -> None:
        sid = frame.stream_id
        stream = self._server_streams.get(sid)
        if frame.stream_flags & STREAM_BEGIN:
            stream = self._server_streams[sid] = _ServerStream()
        elif stream is None:
            raise ProtocolError(f"frame on server stream {sid} without begin")
        wire = HEADER_SIZE + len(frame.payload)
        if ftype is FrameType.STREAM_SETTINGS:
            if frame.payload:
                settings = StreamSettings.from_wire(unpack_map(frame.payload, "stream-settings"))
                stream.decoder = Decoder(settings) if settings.encoding != "identity" else None
            stream.overhead += wire
        elif ftype in (FrameType.COMMAND_RESPONSE, FrameType.ERROR_RESPONSE, FrameType.PROGRESS):
            pending = self._pending.get(frame.request_id)
            if pending is None:
                raise ProtocolError(f"frame for request {frame.request_id}, not in flight")
            if pending.stream_id + 1 != sid:
                raise ProtocolError(f"request {frame.request_id} answered on stream {sid}")
            pending.wire_bytes += wire + stream.overhead
            stream.overhead = 0
            if ftype is FrameType.COMMAND_RESPONSE:
                self._response_frame(frame, stream, pending, events)
            elif ftype is FrameType.ERROR_RESPONSE:
                error = ErrorResponse.from_wire(unpack_map(frame.payload, "error-response"))
                del self._pending[frame.request_id]
                events.append(
                    ResponseError(frame.request_id, error, pending.started, pending.wire_bytes)
                )
            else:
                progress = Progress.from_wire(unpack_map(frame.payload, "progress"))
                events.append(ProgressReceived(frame.request_id, progress))
        else:
            raise ProtocolError(f"{ftype.wire_name} on a server stream")
        if frame.stream_flags & STREAM_END:
            del self._server_streams[sid]
            events.append(ServerStreamEnded(sid))

    def _response_frame(
        self, frame: Frame, stream: _ServerStream, pending: _Pending, events: list[ClientEvent]
    ) -> None:
        pending.started = True
        if frame.stream_flags & STREAM_ENCODED:
            if stream.decoder is None:
                raise ProtocolError("encoded frame before an encoding stream-settings")
            data = stream.decoder.decode(frame.payload, self.decode_cap)
        else:
            data = frame.payload
        pending.raw_bytes += len(data)
        if pending.header is None:
            pending.buffer += data
            parsed = _split_header(pending.buffer)
            if parsed is not None:
                header, body = parsed
                pending.header = header
                pending.buffer = bytearray()
                events.append(ResponseHeader(pending.request_id, header))
                if body:
                    events.append(ResponseBody(pending.request_id, body))
        elif data:
            events.append(ResponseBody(pending.request_id, data))
        if frame.flags & RESPONSE_EOS:
            if pending.header is None:
                raise ProtocolError(f"response {pending.request_id} ended without a header")
            del self._pending[pending.request_id]
            events.append(
                ResponseComplete(pending.request_id, pending.raw_bytes, pending.wire_bytes)
            )
