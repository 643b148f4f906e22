"""The server's side of one server stream (``c + 1``): wire-ready frames for responses and
errors, with ``begin`` on the stream's first frame, stream-settings before its first
``encoded`` frame, and ``end`` when the client's stream ended."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .encoding import Encoder
from .error_frames import error_frame
from .errors import ErrorCode
from .frames import (
    RESPONSE_CONTINUATION,
    RESPONSE_EOS,
    STREAM_BEGIN,
    STREAM_ENCODED,
    STREAM_END,
    TYPE_RESPONSE,
    FrameType,
    SettingsFlags,
    StreamFlags,
    encode_frame,
)
from .payloads import StreamSettings, pack

#: Wire bytes gathered before a chunk is handed to the transport.
CHUNK_BYTES = 256 * 1024

#: Body bytes a step of a response feeds its encoder, at most (a ``bytes`` body is fed in
#: pieces of this size, so that no one step compresses a whole large body).
BODY_STEP_BYTES = 256 * 1024


class ServerStreamWriter:
    """Frames of one server stream. Owns the stream's encoder (its compression context)."""

    def __init__(self, stream_id: int, settings: StreamSettings, max_frame_size: int) -> None:
        self.stream_id = stream_id
        self.settings = settings
        self.max_frame_size = max_frame_size
        self.begun = False
        self.encoder: Encoder | None = None
        #: Whether the next encoder made (the stream's next context) has small zstd match
        #: tables (:data:`server.protocol.encoding.SMALL_TABLES_LOG`).
        self.small_tables = False
        self.raw_bytes = 0
        self.wire_bytes = 0

    def _stream_flags(self, last: bool, end_stream: bool) -> int:
        flags = 0
        if not self.begun:
            flags = STREAM_BEGIN
            self.begun = True
        if last and end_stream:
            flags |= STREAM_END
        return flags

    def _finish_stream(self) -> None:
        self.begun = False
        self.encoder = None

    def _prologue(self) -> bytes:
        """Stream-settings and a new encoder when the stream (re)starts."""
        if self.encoder is not None:
            return b""
        self.encoder = Encoder(self.settings, self.max_frame_size, small_tables=self.small_tables)
        if not self.encoder.encoded:
            return b""
        frame = encode_frame(
            0,
            self.stream_id,
            self._stream_flags(False, False),
            FrameType.STREAM_SETTINGS,
            SettingsFlags.EOS,
            pack(self.settings.to_wire()),
        )
        self.wire_bytes += len(frame)  # every byte the stream writes counts
        return frame

    def begin_response(
        self,
        request_id: int,
        header: dict[str, Any],
        body: bytes | Iterable[bytes] = b"",
        *,
        end_stream: bool = False,
    ) -> ResponseInProgress:
        """One response, produced a step at a time (:class:`ResponseInProgress`)."""
        return ResponseInProgress(self, request_id, header, body, end_stream)

    def iter_response(
        self,
        request_id: int,
        header: dict[str, Any],
        body: bytes | Iterable[bytes] = b"",
        *,
        end_stream: bool = False,
    ) -> Iterator[bytes]:
        """Wire bytes of one response, in chunks of about :data:`CHUNK_BYTES`.

        If ``body`` raises after frames went out, the compressed unit is completed in a
        continuation frame, an ``internal`` error-response ends the request, and the
        exception is not propagated (the stream stays decodable)."""
        response = self.begin_response(request_id, header, body, end_stream=end_stream)
        out = bytearray()
        while not response.done:
            out += response.step()
            if len(out) >= CHUNK_BYTES or response.done:
                yield bytes(out)
                out.clear()

    def response(
        self,
        request_id: int,
        header: dict[str, Any],
        body: bytes | Iterable[bytes] = b"",
        *,
        end_stream: bool = False,
    ) -> bytes:
        return b"".join(self.iter_response(request_id, header, body, end_stream=end_stream))

    def error(
        self,
        request_id: int,
        code: ErrorCode | str,
        message: str,
        retryable: bool = False,
        *,
        end_stream: bool = False,
        details: dict[str, Any] | None = None,
    ) -> bytes:
        """A request-level error-response; under ``request`` context an unfinished unit
        cannot exist here (responses complete their unit), so nothing precedes it."""
        frame = error_frame(
            request_id,
            self.stream_id,
            code,
            message,
            retryable,
            stream_flags=self._stream_flags(True, end_stream),
            details=details,
        )
        self.wire_bytes += len(frame)
        if end_stream:
            self._finish_stream()
        return frame

    def end(self) -> bytes:
        """End the stream with an empty stream-settings frame (``eos`` + ``end``) when no
        other frame is left to carry ``end``; nothing if the stream never began."""
        if not self.begun:
            self._finish_stream()
            return b""
        frame = encode_frame(
            0, self.stream_id, StreamFlags.END, FrameType.STREAM_SETTINGS, SettingsFlags.EOS
        )
        self._finish_stream()
        return frame

    def reset(self) -> None:
        """Forget the stream (its context was lost): the next frame begins it again."""
        self._finish_stream()

    def memory(self) -> int:
        return self.encoder.memory() if self.encoder is not None else 0


class ResponseInProgress:
    """One response of a stream, produced a step at a time: each :meth:`step` feeds the
    stream's encoder one piece of the body (the header and the stream's prologue first) and
    returns the wire bytes ready so far (maybe none: a compressor may hold them), until
    :attr:`done` (the response's last frame returned). A ``bytes`` body is fed in pieces of
    :data:`BODY_STEP_BYTES` (a small one in a single step, which completes the response);
    an iterable one a chunk per step, the response completing at the step that finds it
    exhausted.

    If the body raises, the compressed unit is completed in continuation frames, an
    ``internal`` error-response ends the request (:attr:`failed`), and the exception is not
    propagated: the stream stays decodable."""

    def __init__(
        self,
        writer: ServerStreamWriter,
        request_id: int,
        header: dict[str, Any],
        body: bytes | Iterable[bytes],
        end_stream: bool,
    ) -> None:
        self.writer = writer
        self.request_id = request_id
        self.end_stream = end_stream
        self.done = False
        self.failed = False
        self._header: dict[str, Any] | None = header
        self._body: bytes | bytearray | None = None
        self._chunks: Iterator[bytes] | None = None
        if isinstance(body, bytes | bytearray):
            self._body = body
        else:
            self._chunks = iter(body)
        self._offset = 0
        self._held: bytes | None = None  # one payload is held back so the last can carry eos
        self._sent_any = False
        self._flags_encoded = 0

    def _emit(self, out: bytearray, payload: bytes, last: bool) -> None:
        writer = self.writer
        flags = RESPONSE_EOS if last else RESPONSE_CONTINUATION
        sflags = writer._stream_flags(last, self.end_stream) | self._flags_encoded
        out += encode_frame(
            self.request_id, writer.stream_id, sflags, TYPE_RESPONSE, flags, payload
        )
        writer.wire_bytes += 8 + len(payload)
        self._sent_any = True

    def _next_piece(self) -> bytes | bytearray | memoryview | None:
        """The body's next piece; None once it is exhausted."""
        body = self._body
        if body is not None:
            start = self._offset
            if start == 0 and len(body) <= BODY_STEP_BYTES:
                self._offset = len(body)
                return body
            self._offset = start + BODY_STEP_BYTES
            return memoryview(body)[start : start + BODY_STEP_BYTES]
        if self._chunks is None:
            return None
        return next(self._chunks, None)

    def _body_is_fed(self) -> bool:
        return self._body is not None and self._offset >= len(self._body)

    def step(self) -> bytes:
        if self.done:
            return b""
        writer = self.writer
        out = bytearray()
        payloads: list[bytes] = []
        try:
            if self._header is not None:
                out += writer._prologue()
                encoder = writer.encoder
                assert encoder is not None
                self._flags_encoded = STREAM_ENCODED if encoder.encoded else 0
                head = pack(self._header)
                self._header = None
                writer.raw_bytes += len(head)
                payloads = encoder.feed(head)
            encoder = writer.encoder
            assert encoder is not None
            piece = self._next_piece()
            if piece is not None:
                writer.raw_bytes += len(piece)
                payloads += encoder.feed(piece)  # type: ignore[arg-type]  # bytes-like
            for payload in payloads:
                if self._held is not None:
                    self._emit(out, self._held, False)
                self._held = payload
            if piece is None or self._body_is_fed():
                self._finish(out)
        except Exception:
            self._fail(out)
        return bytes(out)

    def _finish(self, out: bytearray) -> None:
        encoder = self.writer.encoder
        assert encoder is not None
        payloads = encoder.end_response()
        if self._held is not None:
            payloads.insert(0, self._held)
            self._held = None
        if not payloads:  # an identity response is never empty (its header), but be safe
            payloads = [b""]
        for i, payload in enumerate(payloads):
            self._emit(out, payload, i == len(payloads) - 1)
        self.done = True
        if self.end_stream:
            self.writer._finish_stream()

    def _fail(self, out: bytearray) -> None:
        writer = self.writer
        rest = writer.encoder.end_response() if writer.encoder is not None else []
        if self._held is not None:
            rest.insert(0, self._held)
            self._held = None
        if self._sent_any or rest:
            for payload in rest:
                self._emit(out, payload, False)
        out += writer.error(
            self.request_id, ErrorCode.INTERNAL, "the response failed", end_stream=self.end_stream
        )
        self.done = self.failed = True

    def close(self) -> None:
        """Let go of the body (an iterable one is closed if it can be)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._chunks = None
        self._body = None
