"""The server's side of one server stream (``c + 1``): wire-ready frames for responses and
errors, with ``begin`` on the stream's first frame, stream-settings before its first
``encoded`` frame, and ``end`` when the client's stream ended."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .encoding import Encoder
from .error_frames import error_frame
from .errors import ErrorCode
from .frames import CommandResponseFlags, FrameType, SettingsFlags, StreamFlags, encode_frame
from .payloads import StreamSettings, pack

#: Wire bytes gathered before a chunk is handed to the transport.
CHUNK_BYTES = 256 * 1024


class ServerStreamWriter:
    """Frames of one server stream. Owns the stream's encoder (its compression context)."""

    def __init__(self, stream_id: int, settings: StreamSettings, max_frame_size: int) -> None:
        self.stream_id = stream_id
        self.settings = settings
        self.max_frame_size = max_frame_size
        self.begun = False
        self.encoder: Encoder | None = None
        self.raw_bytes = 0
        self.wire_bytes = 0

    def _stream_flags(self, last: bool, end_stream: bool) -> int:
        flags = 0
        if not self.begun:
            flags |= StreamFlags.BEGIN
            self.begun = True
        if last and end_stream:
            flags |= StreamFlags.END
        return flags

    def _finish_stream(self) -> None:
        self.begun = False
        self.encoder = None

    def _prologue(self) -> bytes:
        """Stream-settings and a new encoder when the stream (re)starts."""
        if self.encoder is not None:
            return b""
        self.encoder = Encoder(self.settings, self.max_frame_size)
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
        out = bytearray(self._prologue())
        encoder = self.encoder
        assert encoder is not None
        stream_flags_encoded = StreamFlags.ENCODED if encoder.encoded else 0
        held: bytes | None = None  # one payload is held back so the last can carry eos
        sent_any = False

        def emit(payload: bytes, last: bool) -> None:
            nonlocal sent_any
            flags = CommandResponseFlags.EOS if last else CommandResponseFlags.CONTINUATION
            sflags = self._stream_flags(last, end_stream) | stream_flags_encoded
            out.extend(
                encode_frame(
                    request_id, self.stream_id, sflags, FrameType.COMMAND_RESPONSE, flags, payload
                )
            )
            self.wire_bytes += 8 + len(payload)
            sent_any = True

        chunks: Iterable[bytes] = [body] if isinstance(body, bytes | bytearray) else body
        try:
            head = pack(header)
            self.raw_bytes += len(head)
            payloads = encoder.feed(head)
            for chunk in chunks:
                self.raw_bytes += len(chunk)
                payloads += encoder.feed(chunk)
                for payload in payloads:
                    if held is not None:
                        emit(held, False)
                    held = payload
                payloads = []
                if len(out) >= CHUNK_BYTES:
                    yield bytes(out)
                    out.clear()
        except Exception:
            rest = encoder.end_response()
            if held is not None:
                rest.insert(0, held)
            if sent_any or rest:
                for payload in rest:
                    emit(payload, False)
            out.extend(
                self.error(
                    request_id, ErrorCode.INTERNAL, "the response failed", end_stream=end_stream
                )
            )
            yield bytes(out)
            return
        payloads = encoder.end_response()
        if held is not None:
            payloads.insert(0, held)
        if not payloads:  # an identity response is never empty (its header), but be safe
            payloads = [b""]
        for i, payload in enumerate(payloads):
            emit(payload, i == len(payloads) - 1)
        if end_stream:
            self._finish_stream()
        yield bytes(out)

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
