"""The commands of docs/protocol.md section 4, as run by a worker, and the ``delete``
extension of a server started with ``--allow-delete`` (docs/protocol-decisions.md).

A command takes its arguments, the request's decoded data and what the connection may do,
and returns the response header and body, or raises :class:`RequestError`. A body over
:data:`workers.bodies.CHUNKED_ABOVE_BYTES` (``get``, ``generate``) is a
:class:`workers.bodies.ChunkedBody`, made a chunk at a time as the worker sends it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from server.protocol.errors import ErrorCode, RequestError
from server.protocol.limits import Limits
from server.protocol.payloads import CONTEXTS, ENCODINGS, withheld_commands
from workers.bodies import BODY_CHUNK_BYTES, CHUNKED_ABOVE_BYTES, ChunkedBody
from workers.generate import GenerateError, generate, iter_generate
from workers.store import BadKey, BadRange, NotFound, ObjectStore, StoreError, digest


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One request as a command sees it."""

    args: dict[str, Any]
    data: bytes | None  # None: the request carried no command data
    write: bool  # the connection holds the write token
    snapshot: dict[str, Any] | None = None  # stats gathered by the front


@dataclasses.dataclass(frozen=True, slots=True)
class ServerInfo:
    server: str
    limits: Limits
    max_generate_bytes: int
    #: --allow-delete: ``delete`` is offered (else it is an unknown command).
    allow_delete: bool = False


#: The header and the body: bytes, or a body too large to hold (the header is the body's
#: until the body is ready: see :mod:`workers.bodies`).
Result = tuple[dict[str, Any], bytes | ChunkedBody]
Handler = Callable[["Commands", Call], Result]


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    args: tuple[str, ...]
    permission: str
    handler: Handler


def _bad(message: str) -> RequestError:
    return RequestError(ErrorCode.BAD_REQUEST, message)


def _opt_int(args: dict[str, Any], name: str) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"argument {name!r} must be an integer >= 0")
    return value


def _opt_str(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"argument {name!r} must be text")
    return value


def _opt_bool(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"argument {name!r} must be true or false")
    return value


def _key(args: dict[str, Any]) -> str:
    key = args.get("key")
    if not isinstance(key, str):
        raise _bad("argument 'key' is required and must be text")
    return key


class Commands:
    """The command table bound to a worker's store and the server's description."""

    def __init__(self, store: ObjectStore, info: ServerInfo) -> None:
        self.store = store
        self.info = info

    @property
    def info(self) -> ServerInfo:
        return self._info

    @info.setter
    def info(self, info: ServerInfo) -> None:
        self._info = info
        #: Commands of TABLE this server does not offer (answered as unknown).
        self.withheld = withheld_commands(info.allow_delete)

    def run(self, name: str, call: Call) -> Result:
        command = TABLE.get(name)
        if command is None or name in self.withheld:
            raise RequestError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {name!r}")
        if command.permission == "write" and not call.write:
            raise RequestError(ErrorCode.FORBIDDEN, f"{name!r} needs write permission")
        try:
            return command.handler(self, call)
        except (BadKey, BadRange) as exc:
            raise _bad(str(exc)) from None
        except NotFound:
            raise RequestError(ErrorCode.NOT_FOUND, "no object under that key") from None
        except StoreError:
            raise RequestError(ErrorCode.INTERNAL, "the store failed") from None

    def capabilities(self, call: Call) -> Result:
        return {
            "status": "ok",
            "server": self.info.server,
            "commands": {
                name: {"args": list(c.args), "permission": c.permission}
                for name, c in TABLE.items()
                if name not in self.withheld
            },
            "encodings": list(ENCODINGS),
            "contexts": list(CONTEXTS),
            "limits": self.info.limits.to_wire(),
        }, b""

    def get(self, call: Call) -> Result:
        key = _key(call.args)
        offset = _opt_int(call.args, "offset")
        length = _opt_int(call.args, "length")
        with_digest = _opt_bool(call.args, "digest", True)
        reader = self.store.reader(key, offset or 0, length)
        header: dict[str, Any] = {"status": "ok", "size": reader.size}
        if offset is not None or length is not None:
            header["object_size"] = reader.object_size
        if reader.size > CHUNKED_ABOVE_BYTES:
            return header, ChunkedBody(
                header,
                reader.size,
                functools.partial(reader.chunks, BODY_CHUNK_BYTES),
                digest=reader.digest,
                want_digest=with_digest,
                on_digest=reader.remember,
                close=reader.close,
            )
        try:
            body = b"".join(reader.chunks())
            whole = len(body) == reader.size
            if not whole:  # truncated while it was read: what was read
                header["size"] = len(body)
            if with_digest:  # (else the client checks the body its own way: no hashing)
                header["digest"] = (whole and reader.digest) or digest(body)
                if whole:
                    reader.remember(header["digest"])
        finally:
            reader.close()
        return header, body

    def list(self, call: Call) -> Result:
        prefix = _opt_str(call.args, "prefix") or ""
        limit = _opt_int(call.args, "limit")
        keys = self.store.list(prefix, limit)
        return {"status": "ok", "keys": [[k, size] for k, size in keys]}, b""

    def generate(self, call: Call) -> Result:
        size = call.args.get("size")
        kind = call.args.get("kind", "text")
        seed = call.args.get("seed", 0)
        with_digest = _opt_bool(call.args, "digest", True)
        max_size = self.info.max_generate_bytes
        try:
            if not isinstance(size, int) or size <= CHUNKED_ABOVE_BYTES:
                body = generate(size, kind, seed, max_size=max_size)  # type: ignore[arg-type]
                header: dict[str, Any] = {"status": "ok", "size": len(body)}
                if with_digest:
                    header["digest"] = digest(body)
                return header, body
            source = functools.partial(
                iter_generate, size, kind, seed, max_size=max_size, chunk_bytes=BODY_CHUNK_BYTES
            )
            source()  # the arguments are checked here, before any byte is made
        except GenerateError as exc:
            raise _bad(str(exc)) from None
        # The digest goes in the header, before the body: a first pass makes the bytes to
        # hash them, a chunk at a time, and the second sends them (the output is the same).
        header = {"status": "ok", "size": size}
        return header, ChunkedBody(header, size, source, want_digest=with_digest)

    def echo(self, call: Call) -> Result:
        body = call.data or b""
        return {"status": "ok", "size": len(body)}, body

    def put(self, call: Call) -> Result:
        key = _key(call.args)
        if call.data is None:
            raise _bad("put needs the object as command data")
        size, object_digest = self.store.put(key, call.data)
        return {"status": "ok", "size": size, "digest": object_digest}, b""

    def delete(self, call: Call) -> Result:
        """The object under ``key`` removed (workers/store_delete.py); its data, if any, is
        ignored as every command without data does."""
        size = self.store.delete(_key(call.args))
        return {"status": "ok", "size": size}, b""

    def stats(self, call: Call) -> Result:
        snapshot = call.snapshot or {}
        return {"status": "ok", **snapshot}, b""


TABLE: dict[str, Command] = {
    "capabilities": Command((), "read", Commands.capabilities),
    "get": Command(("key", "offset", "length", "digest"), "read", Commands.get),
    "list": Command(("prefix", "limit"), "read", Commands.list),
    "generate": Command(("size", "kind", "seed", "digest"), "read", Commands.generate),
    "echo": Command((), "read", Commands.echo),
    "put": Command(("key",), "write", Commands.put),
    "delete": Command(("key",), "write", Commands.delete),  # with --allow-delete only
    "stats": Command((), "read", Commands.stats),
}
