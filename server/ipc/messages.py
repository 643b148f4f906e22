"""One codec per control payload and per part of the front <-> worker messages.

Each payload is a frozen dataclass with ``encode() -> bytes`` and ``decode(bytes)``; on the
wire it is a MessagePack array of its fields in order (cheaper than a map, and checked
field by field on decode). ``decode`` raises ValueError for anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import msgpack

from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS
from server.protocol.errors import ErrorCode, PayloadError
from server.protocol.events import DataChunk
from server.protocol.limits import Limits
from server.protocol.payloads import CommandRequest, StreamSettings, pack, unpack_map

_OPT_INT = (int, type(None))


def _fields(
    data: bytes,
    what: str,
    types: Sequence[type | tuple[type, ...]],
    required: int | None = None,
) -> list[Any]:
    """The fields of an array payload, each checked against its type (bool is no int). With
    ``required``, the fields after the first ``required`` may be left out (given as None)."""
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"{what}: not MessagePack") from exc
    least = len(types) if required is None else required
    if not isinstance(value, list) or not least <= len(value) <= len(types):
        raise ValueError(f"{what}: expected {len(types)} fields")
    for n, (field, kind) in enumerate(zip(value, types, strict=False)):
        if not isinstance(field, kind) or (isinstance(field, bool) and kind is not bool):
            raise ValueError(f"{what}: field {n} has the wrong type")
    return value + [None] * (len(types) - len(value))


@dataclasses.dataclass(frozen=True, slots=True)
class StreamParams:
    """STREAM_OPEN: what a worker needs to serve one client stream of a connection."""

    encoding: str
    level: int | None
    context: str
    max_frame_size: int
    write: bool

    def encode(self) -> bytes:
        return pack([self.encoding, self.level, self.context, self.max_frame_size, self.write])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(*_fields(data, "stream parameters", (str, _OPT_INT, str, int, bool)))


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """REJECT: the front refused the request; the stream's worker answers it in order."""

    code: str
    message: str
    retryable: bool

    def encode(self) -> bytes:
        return pack([self.code, self.message, self.retryable])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(*_fields(data, "rejection", (str, str, bool)))


@dataclasses.dataclass(frozen=True, slots=True)
class Fatal:
    """CONN_FATAL: a stream's decoding context is out of step; the connection must end."""

    code: ErrorCode
    message: str

    def encode(self) -> bytes:
        return pack([str(self.code), self.message])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        code, message = _fields(data, "fatal", (str, str))
        try:
            return cls(ErrorCode(code), message)
        except ValueError:
            raise ValueError(f"fatal: unknown error code {code!r}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """READY: a worker is up (and, remote, from which host)."""

    pid: int
    index: int
    host: str = ""

    def encode(self) -> bytes:
        return pack([self.pid, self.index, self.host])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(*_fields(data, "ready", (int, int, str)))


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome:
    """WELCOME: a remote worker learns its index, the server's name and the limits, the
    endpoints of further fronts it is to serve too (empty: only this one), the contexts held
    from which a new one gets small zstd match tables (``--small-tables-from``) and whether
    the server offers ``delete`` (``--allow-delete``): the front is the one source of the
    server's settings."""

    index: int
    server: str
    limits: Limits
    fronts: tuple[str, ...] = ()
    small_tables_from: int = SMALL_TABLES_FROM_CONTEXTS
    allow_delete: bool = False

    def encode(self) -> bytes:
        limits = self.limits.to_wire()
        fields = [self.index, self.server, limits, list(self.fronts), self.small_tables_from]
        fields.append(self.allow_delete)
        # Defaults are left out at the end, so that a remote worker of an earlier version,
        # which knows fewer fields, takes a default front's WELCOME as before.
        defaults: list[Any] = [[], SMALL_TABLES_FROM_CONTEXTS, False]
        while len(fields) > 3 and fields[-1] == defaults[len(fields) - 4]:
            fields.pop()
        return pack(fields)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        # A front of an earlier version leaves out the fields after the limits.
        types = (int, str, dict, list, int, bool)
        index, server, limits, fronts, small_tables_from, allow_delete = _fields(
            data, "welcome", types, 3
        )
        fronts = fronts or []
        if not all(isinstance(endpoint, str) for endpoint in fronts):
            raise ValueError("welcome: fronts must be endpoints")
        if small_tables_from is None:
            small_tables_from = SMALL_TABLES_FROM_CONTEXTS
        if small_tables_from < 0:
            raise ValueError(f"welcome: small_tables_from must be >= 0, got {small_tables_from}")
        try:
            parsed = Limits.from_mapping(limits)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"welcome: bad limits: {exc}") from None
        return cls(index, server, parsed, tuple(fronts), small_tables_from, bool(allow_delete))


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStats:
    """STATS_REPLY: one worker's figures (a map: these are the keys ``stats`` reports)."""

    pid: int
    index: int
    remote: bool
    cpu_user: float
    cpu_system: float
    rss: int
    max_rss: int
    streams: int
    context_bytes: int
    requests: int
    bytes_raw: int
    bytes_wire: int
    evictions: int
    #: [encoding, context, raw bytes, wire bytes] per pair the worker has answered with.
    traffic: list[list[Any]] = dataclasses.field(default_factory=list)
    #: Of the zstd contexts made, those with small match tables (made while the worker held
    #: many contexts: see workers/core.py).
    small_table_contexts: int = 0

    def to_map(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        return pack(self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        try:
            m = unpack_map(data, "worker stats")
            fields = dataclasses.fields(cls)
            optional = {f.name for f in fields if f.default is not dataclasses.MISSING} | {
                "traffic"
            }
            return cls(
                **{f.name: m[f.name] for f in fields if f.name in m or f.name not in optional}
            )
        except (PayloadError, KeyError) as exc:
            raise ValueError(f"worker stats: {exc}") from None


# -- REQUEST --------------------------------------------------------------------------------


def encode_chunk_flags(chunks: Sequence[DataChunk]) -> bytes:
    """One byte per command-data payload: 1 if it was sent ``encoded``."""
    return bytes(chunk.encoded for chunk in chunks)


def decode_chunks(flags: bytes, payloads: Sequence[bytes]) -> tuple[DataChunk, ...]:
    if len(flags) != len(payloads):
        raise ValueError("request: chunk flags and payloads differ in number")
    return tuple(DataChunk(bool(f), p) for f, p in zip(flags, payloads, strict=True))


class RequestBody(NamedTuple):
    """A REQUEST message's parts after the envelope, decoded."""

    command: CommandRequest
    data: tuple[DataChunk, ...] | None  # None: the request carried no command data
    snapshot: dict[str, Any] | None  # ``stats``: every process's figures, from the front


def encode_request(
    command_map: bytes, data: Sequence[DataChunk] | None, snapshot: dict[str, Any] | None = None
) -> list[bytes]:
    """The parts after the envelope. ``command_map`` is the client's own MessagePack map,
    validated by the front's core and forwarded as it came (decoded once, on the worker)."""
    parts = [command_map, pack(snapshot) if snapshot is not None else b""]
    if data is not None:
        parts.append(encode_chunk_flags(data))
        parts.extend(chunk.payload for chunk in data)
    return parts


def decode_request(parts: Sequence[bytes], has_data: bool) -> RequestBody:
    if len(parts) < (3 if has_data else 2):
        raise ValueError("request: missing parts")
    try:
        command = CommandRequest.from_wire(unpack_map(parts[0], "command request"))
        snapshot = unpack_map(parts[1], "stats snapshot") if parts[1] else None
    except PayloadError as exc:
        raise ValueError(f"request: {exc.message}") from None
    data = decode_chunks(parts[2], parts[3:]) if has_data else None
    return RequestBody(command, data, snapshot)


# -- CLIENT_STREAM_SETTINGS ---------------------------------------------------------------------


def encode_stream_settings(settings: StreamSettings) -> bytes:
    return pack(settings.to_wire())


def decode_stream_settings(data: bytes) -> StreamSettings:
    try:
        return StreamSettings.from_wire(unpack_map(data, "stream-settings"))
    except PayloadError as exc:
        raise ValueError(exc.message) from None
