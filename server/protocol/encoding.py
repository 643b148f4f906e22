"""Content encodings of a stream: ``identity``, ``zlib``, ``zstd-8mb``, each with the contexts
``stream``, ``request`` and ``frame`` (docs/protocol.md section 3).

An encoder belongs to one stream and owns its compressor object. It turns the response bytes it
is fed into frame payloads of at most ``max_payload`` bytes; ``end_response`` completes the
compressed unit (flush for ``stream``, finish for ``request``). A decoder is bounded: a zstd
frame asking for a window over 8 MiB is refused before allocation, and the bytes decoded from
one frame are capped.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import zstandard

from .errors import DecodeError
from .limits import MAX_WINDOW_LOG, MAX_WINDOW_SIZE
from .payloads import CONTEXTS, ENCODINGS, StreamSettings

DEFAULT_LEVEL = 3
ZLIB_LEVELS = (0, 9)
ZSTD_MIN_LEVEL = 1
#: Largest block of decoded bytes zstd produces at once (``ZSTD_BLOCKSIZE_MAX``).
_ZSTD_BLOCK_MAX = 128 << 10
#: Output buffer of the zstd decoder, per call. It holds two blocks: what a call may leave
#: pending plus the one block the payload's last byte can complete (see ``Decoder._zstd``).
#: The per-frame cap is checked per chunk: memory overshoots it by at most this.
_DECODE_CHUNK = 2 * _ZSTD_BLOCK_MAX + 1


def clamp_level(encoding: str, wish: int | None, max_level: int) -> int | None:
    """The level a server uses for a client's wish: inside the encoding's range and never
    above the server's ``max_level``."""
    if encoding == "identity":
        return None
    level = DEFAULT_LEVEL if wish is None else wish
    if encoding == "zlib":
        low, high = ZLIB_LEVELS[0], min(ZLIB_LEVELS[1], max_level)
    else:
        low, high = ZSTD_MIN_LEVEL, min(zstandard.MAX_COMPRESSION_LEVEL, max_level)
    return max(low, min(high, level))


def negotiate_encoding(wishes: tuple[str, ...], supported: tuple[str, ...] = ENCODINGS) -> str:
    """The client's most preferred encoding the server supports; ``identity`` if none."""
    for name in wishes:
        if name in supported:
            return name
    return "identity"


def stream_settings_for(encoding: str, level: int | None, context: str) -> StreamSettings:
    """The stream-settings a server announces for a new server stream."""
    if encoding == "identity":
        return StreamSettings("identity", None, None, context)
    window_log = MAX_WINDOW_LOG if encoding == "zstd-8mb" else None
    return StreamSettings(encoding, level, window_log, context)


#: ``hash_log`` and ``chain_log`` of a zstd context made with small match tables: 64 KiB
#: each instead of level 3's 512 KiB and 256 KiB, so that many hot contexts share a CPU's
#: caches (in one process, 64 interleaved contexts compress 1.7x faster for about 2.5% of
#: ratio; see docs/performance.md). The decoder does not see the difference.
SMALL_TABLES_LOG = 14
#: A stream that makes a new compression context while its worker holds this many or more
#: gets small match tables: past about this many hot contexts their default tables no longer
#: share a CPU's caches, and each costs more to compress with than the 2.5% of ratio small
#: tables cost (docs/performance.md). The server's default ``--small-tables-from``; 0 gives
#: small tables to every ``stream`` and ``request`` zstd context.
SMALL_TABLES_FROM_CONTEXTS = 16


def zstd_parameters(
    level: int, window_log: int, small_tables: bool = False
) -> zstandard.ZstdCompressionParameters:
    """The parameters of a zstd context at ``level`` with ``window_log``; ``small_tables``:
    ``hash_log`` and ``chain_log`` at most :data:`SMALL_TABLES_LOG`."""
    params = zstandard.ZstdCompressionParameters.from_level(level, window_log=window_log)
    if not small_tables:
        return params
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=window_log,
        hash_log=min(params.hash_log, SMALL_TABLES_LOG),
        chain_log=min(params.chain_log, SMALL_TABLES_LOG),
    )


class _Unit(Protocol):
    """A streaming compressor: bytes in, bytes out, and the end of a response."""

    def compress(self, data: bytes) -> bytes: ...
    def end_response(self) -> bytes: ...
    def memory(self) -> int: ...


class _ZstdUnit:
    """One zstd compressed stream (``stream``: flushed per response, one zstd frame for the
    whole stream) or one zstd frame per response (``request``), reusing the context."""

    def __init__(
        self, level: int, window_log: int, finish_each: bool, small_tables: bool = False
    ) -> None:
        params = zstd_parameters(level, window_log, small_tables)
        self._cctx = zstandard.ZstdCompressor(compression_params=params)
        self._obj = self._cctx.compressobj()
        self._finish_each = finish_each

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def end_response(self) -> bytes:
        if self._finish_each:
            out = self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
            self._obj = self._cctx.compressobj()
            return out
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def memory(self) -> int:
        return int(self._cctx.memory_size())


class _ZlibUnit:
    def __init__(self, level: int, finish_each: bool) -> None:
        self._level = level
        self._obj = zlib.compressobj(level)
        self._finish_each = finish_each

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def end_response(self) -> bytes:
        if self._finish_each:
            out = self._obj.flush(zlib.Z_FINISH)
            self._obj = zlib.compressobj(self._level)
            return out
        return self._obj.flush(zlib.Z_SYNC_FLUSH)

    def memory(self) -> int:
        return 268_000  # deflate state with the default windowBits 15 and memLevel 8


class Encoder:
    """Turns response bytes into frame payloads for one stream.

    ``feed`` returns only full payloads (``max_payload`` bytes) so frames stay full;
    ``end_response`` returns the rest, completing the compressed unit. ``encoded`` says
    whether the payloads carry the ``encoded`` stream flag. ``small_tables``: a ``stream``
    or ``request`` zstd context with match tables of :data:`SMALL_TABLES_LOG`.
    """

    def __init__(
        self, settings: StreamSettings, max_payload: int, *, small_tables: bool = False
    ) -> None:
        if settings.encoding not in ENCODINGS or settings.context not in CONTEXTS:
            raise ValueError(f"unknown encoding or context in {settings}")
        self.settings = settings
        self.max_payload = max_payload
        self.encoded = settings.encoding != "identity"
        self._pending = bytearray()
        self._unit: _Unit | None = None
        self._oneshot_zstd: zstandard.ZstdCompressor | None = None
        level = settings.level if settings.level is not None else DEFAULT_LEVEL
        window_log = settings.window_log or MAX_WINDOW_LOG
        self._level = level
        if not self.encoded:
            return
        if settings.context == "frame":
            if settings.encoding == "zstd-8mb":
                params = zstandard.ZstdCompressionParameters.from_level(
                    level, window_log=min(window_log, MAX_WINDOW_LOG)
                )
                self._oneshot_zstd = zstandard.ZstdCompressor(compression_params=params)
            # Raw bytes per frame such that the compressed unit fits one payload even for
            # incompressible input (both bounds are below n/128 + 256 at these sizes).
            self._frame_raw = max(256, max_payload - (max_payload >> 7) - 256)
            return
        finish_each = settings.context == "request"
        if settings.encoding == "zstd-8mb":
            window_log = min(window_log, MAX_WINDOW_LOG)
            self._unit = _ZstdUnit(level, window_log, finish_each, small_tables)
        else:
            self._unit = _ZlibUnit(level, finish_each)

    def memory(self) -> int:
        """Approximate bytes this stream's compression context holds."""
        if self._unit is not None:
            return self._unit.memory()
        if self._oneshot_zstd is not None:
            return int(self._oneshot_zstd.memory_size())
        return len(self._pending)

    def _cut(self, final: bool) -> list[bytes]:
        pending = self._pending
        size = self.max_payload
        if len(pending) < size or (final and len(pending) == size):  # at most one payload
            if not final or not pending:
                return []
            last = bytes(pending)
            pending.clear()
            return [last]
        count = len(pending) // size if not final else -(-len(pending) // size)
        out = [bytes(pending[i * size : (i + 1) * size]) for i in range(count)]
        del pending[: count * size]
        return out

    def _compress_frame_unit(self, raw: bytes) -> list[bytes]:
        if self._oneshot_zstd is not None:
            unit = self._oneshot_zstd.compress(raw)
        else:
            unit = zlib.compress(raw, self._level)
        if len(unit) <= self.max_payload:
            return [unit]
        half = len(raw) // 2  # never reached with the bound above; kept as a guard
        return self._compress_frame_unit(raw[:half]) + self._compress_frame_unit(raw[half:])

    def feed(self, data: bytes) -> list[bytes]:
        if self._unit is not None:
            self._pending += self._unit.compress(data)
            return self._cut(final=False)
        self._pending += data
        if not self.encoded:
            return self._cut(final=False)
        out: list[bytes] = []
        step = self._frame_raw
        while len(self._pending) >= step:
            out += self._compress_frame_unit(bytes(self._pending[:step]))
            del self._pending[:step]
        return out

    def end_response(self) -> list[bytes]:
        if self._unit is not None:
            self._pending += self._unit.end_response()
            return self._cut(final=True)
        if not self.encoded:
            return self._cut(final=True)
        if not self._pending:
            return []
        out = self._compress_frame_unit(bytes(self._pending))
        self._pending.clear()
        return out

    def encode_response(self, data: bytes) -> list[bytes]:
        """Every payload of one whole response."""
        return self.feed(data) + self.end_response()


class _CappedSink:
    """The zstd decoder's output: collects chunks, refuses to grow past ``remaining``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.remaining = 0

    def write(self, data: bytes) -> int:
        self.remaining -= len(data)
        if self.remaining < 0:
            raise _CapExceeded
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class _CapExceeded(Exception):
    pass


class Decoder:
    """Decodes the ``encoded`` payloads of one stream, frame by frame, bounded.

    ``decode(payload, cap)`` returns the bytes decoded from one frame's payload, at most
    ``cap`` of them; any failure (corrupt data, a window over 8 MiB, the cap) raises
    :class:`DecodeError` and the decoder must be dropped.
    """

    def __init__(self, settings: StreamSettings) -> None:
        if settings.encoding not in ENCODINGS or settings.context not in CONTEXTS:
            raise DecodeError("unknown encoding or context")
        if settings.window_log is not None and settings.window_log > MAX_WINDOW_LOG:
            raise DecodeError("stream-settings ask for a window over 8 MiB")
        self.settings = settings
        self.encoding = settings.encoding
        self.per_frame = settings.context == "frame"
        self._sink = _CappedSink()
        self._dctx: zstandard.ZstdDecompressor | None = None
        self._writer: zstandard.ZstdDecompressionWriter | None = None
        self._zlib: zlib._Decompress | None = None
        if self.encoding == "zstd-8mb":
            self._dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)

    def _zstd(self, payload: bytes, cap: int) -> bytes:
        assert self._dctx is not None
        if self._writer is None or self.per_frame:
            self._writer = self._dctx.stream_writer(
                self._sink,  # type: ignore[arg-type]  # any object with .write() will do
                write_size=_DECODE_CHUNK,
                write_return_read=True,
                closefd=False,
            )
        self._sink.remaining = cap
        try:
            # The writer returns once its input is consumed, even when its last call filled
            # the output buffer and decoded bytes (at most one block) are still pending in the
            # context; they would only come out with the next payload, so a response would
            # not be decodable at its eos. Feeding the last byte on its own drains them: that
            # call first flushes the pending block, then the byte completes at most one more
            # block, and two blocks fit the buffer, so nothing is left pending.
            view = memoryview(payload)
            if len(view) > 1:
                self._writer.write(view[:-1])
            if view:
                self._writer.write(view[-1:])
        except _CapExceeded:
            raise DecodeError("encoded data decodes past the limit") from None
        except zstandard.ZstdError:
            raise DecodeError("encoded data is corrupt or asks for a window over 8 MiB") from None
        finally:
            out = self._sink.take()
        return out

    def _zlib_decode(self, payload: bytes, cap: int) -> bytes:
        if self._zlib is None or self.per_frame:
            self._zlib = zlib.decompressobj()
        out: list[bytes] = []
        produced = 0
        data = payload
        unit_done = False
        try:
            while data:
                if unit_done:
                    if self.per_frame:
                        raise DecodeError("trailing bytes after a frame's compressed unit")
                    self._zlib = zlib.decompressobj()  # request context: the next unit
                    unit_done = False
                chunk = self._zlib.decompress(data, cap - produced + 1)
                produced += len(chunk)
                if produced > cap:
                    raise DecodeError("encoded data decodes past the limit")
                out.append(chunk)
                unit_done = self._zlib.eof
                data = self._zlib.unused_data if unit_done else self._zlib.unconsumed_tail
        except zlib.error:
            raise DecodeError("encoded data is corrupt") from None
        if unit_done:
            self._zlib = None
        elif self.per_frame:
            raise DecodeError("a frame's compressed unit is incomplete")
        return b"".join(out)

    def decode(self, payload: bytes, cap: int) -> bytes:
        if self.encoding == "identity":
            raise DecodeError("encoded frame on an identity stream")
        if self.encoding == "zstd-8mb":
            return self._zstd(payload, cap)
        return self._zlib_decode(payload, cap)
