"""Typed, validated control payloads (MessagePack maps with text keys).

Unknown keys are ignored (forward compatibility); a known key with a wrong type raises
:class:`PayloadError` naming the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgpack

from .errors import ErrorCode, PayloadError
from .limits import DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT, MIN_CLIENT_FRAME_SIZE

PROTOCOL_VERSION = 1
ENCODINGS = ("zstd-8mb", "zlib", "identity")
CONTEXTS = ("stream", "request", "frame")
#: Commands that need write permission: ``put`` (docs/protocol.md section 4) and ``delete``,
#: zplex's opt-in extension (docs/protocol-decisions.md, "Extensions").
WRITE_COMMANDS = frozenset({"put", "delete"})

T = TypeVar("T")


def withheld_commands(allow_delete: bool) -> frozenset[str]:
    """The extension commands a server does not offer, and answers as any unknown name:
    ``delete`` unless it was started with ``--allow-delete``. A default server offers exactly
    the commands of docs/protocol.md section 4."""
    return frozenset() if allow_delete else frozenset({"delete"})


def pack(value: Any) -> bytes:
    """MessagePack with the binary type for bytes and str for text."""
    return msgpack.packb(value, use_bin_type=True)


def unpack_map(payload: bytes | bytearray | memoryview, what: str) -> dict[str, Any]:
    """Decode one MessagePack map with text keys, or raise :class:`PayloadError`."""
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise PayloadError(f"{what} is not valid MessagePack") from exc
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a map")
    for key in value:
        if not isinstance(key, str):
            raise PayloadError(f"{what} keys must be text")
    return value


def _get(
    m: dict[str, Any], key: str, kind: type[T] | tuple[type, ...], what: str, default: Any = None
) -> Any:
    if key not in m:
        return default
    value = m[key]
    # bool is an int subclass in Python; it is not an int on the wire.
    if isinstance(value, bool) and kind is not bool and kind is not (bool,):
        raise PayloadError(f"{what} field {key!r} has the wrong type", field=key)
    if not isinstance(value, kind):
        raise PayloadError(f"{what} field {key!r} has the wrong type", field=key)
    return value


def _optional(m: dict[str, Any], key: str, kind: type[T], what: str) -> T | None:
    """An optional field: absent or nil (MessagePack's null) both mean ``None``."""
    if m.get(key) is None:
        return None
    value: T = _get(m, key, kind, what)
    return value


def _require(m: dict[str, Any], key: str, kind: type[T], what: str) -> T:
    if key not in m:
        raise PayloadError(f"{what} lacks the field {key!r}", field=key)
    value: T = _get(m, key, kind, what)
    return value


def _str_list(m: dict[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    value = _get(m, key, list, what)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise PayloadError(f"{what} field {key!r} must be a list of text", field=key)
    return tuple(value)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSettings:
    """A client's sender-protocol-settings (docs/protocol.md section 3)."""

    version: int = PROTOCOL_VERSION
    encodings: tuple[str, ...] = ("identity",)
    level: int | None = None
    context: str = "stream"
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    token: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "encodings": list(self.encodings),
            "context": self.context,
            "max_frame_size": self.max_frame_size,
        }
        if self.level is not None:
            out["level"] = self.level
        if self.token is not None:
            out["token"] = self.token
        return out

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> ClientSettings:
        what = "settings"
        version = _get(m, "version", int, what, PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise PayloadError(f"unsupported protocol version {version}", field="version")
        encodings = _str_list(m, "encodings", what)
        level = _optional(m, "level", int, what)
        context = _get(m, "context", str, what, "stream")
        if context not in CONTEXTS:
            raise PayloadError(f"unknown context {context!r}", field="context")
        max_frame_size = _get(m, "max_frame_size", int, what, DEFAULT_MAX_FRAME_SIZE)
        if not MIN_CLIENT_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise PayloadError(
                f"max_frame_size must be in [{MIN_CLIENT_FRAME_SIZE}, {MAX_FRAME_SIZE_LIMIT}]",
                field="max_frame_size",
            )
        token = _optional(m, "token", str, what)
        return cls(
            version=version,
            encodings=encodings if encodings is not None else ("identity",),
            level=level,
            context=context,
            max_frame_size=max_frame_size,
            token=token,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSettings:
    """The server's sender-protocol-settings, its first frame on every connection."""

    server: str
    encodings: tuple[str, ...]
    max_frame_size: int
    workers: int
    limits: dict[str, Any]
    version: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "server": self.server,
            "encodings": list(self.encodings),
            "max_frame_size": self.max_frame_size,
            "workers": self.workers,
            "limits": dict(self.limits),
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> ServerSettings:
        what = "server settings"
        limits = _get(m, "limits", dict, what, {})
        return cls(
            version=_get(m, "version", int, what, PROTOCOL_VERSION),
            server=_get(m, "server", str, what, ""),
            encodings=_str_list(m, "encodings", what) or ("identity",),
            max_frame_size=_get(m, "max_frame_size", int, what, DEFAULT_MAX_FRAME_SIZE),
            workers=_get(m, "workers", int, what, 0),
            limits=limits,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StreamSettings:
    """A stream-settings payload: the encoding context of the frames after it."""

    encoding: str = "identity"
    level: int | None = None
    window_log: int | None = None
    context: str = "stream"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"encoding": self.encoding, "context": self.context}
        if self.level is not None:
            out["level"] = self.level
        if self.window_log is not None:
            out["window_log"] = self.window_log
        return out

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> StreamSettings:
        what = "stream-settings"
        encoding = _require(m, "encoding", str, what)
        if encoding not in ENCODINGS:
            raise PayloadError(f"unknown encoding {encoding!r}", field="encoding")
        context = _get(m, "context", str, what, "stream")
        if context not in CONTEXTS:
            raise PayloadError(f"unknown context {context!r}", field="context")
        return cls(
            encoding=encoding,
            level=_optional(m, "level", int, what),
            window_log=_optional(m, "window_log", int, what),
            context=context,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command-request map ``{"name": str, "args": map}``."""

    name: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> CommandRequest:
        name = m.get("name")
        args = m.get("args", {})
        if type(name) is str and type(args) is dict:  # every request: the checks inline
            for key in args:
                if type(key) is not str:
                    break
            else:
                return cls(name, args)
        what = "command request"  # something is wrong: find what, as the error says
        name = _require(m, "name", str, what)
        args = _get(m, "args", dict, what, {})
        for key in args:
            if not isinstance(key, str):
                raise PayloadError("command request args keys must be text", field="args")
        return cls(name=name, args=args)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error-response map; ``details`` holds any other keys (e.g. ``in_flight``)."""

    code: str
    message: str
    retryable: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.details)
        out.update(code=str(self.code), message=self.message, retryable=self.retryable)
        return out

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> ErrorResponse:
        what = "error-response"
        code = _require(m, "code", str, what)
        message = _get(m, "message", str, what, "")
        retryable = _get(m, "retryable", bool, what, False)
        details = {k: v for k, v in m.items() if k not in ("code", "message", "retryable")}
        return cls(code=code, message=message, retryable=retryable, details=details)

    @property
    def known_code(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True, slots=True)
class TextOutput:
    level: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> TextOutput:
        return cls(
            level=_get(m, "level", str, "text-output", "info"),
            message=_get(m, "message", str, "text-output", ""),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Progress:
        return cls(
            done=_get(m, "done", int, "progress", 0),
            total=_optional(m, "total", int, "progress"),
        )
