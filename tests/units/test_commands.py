"""The commands of docs/protocol.md section 4, called directly (no worker loop, no sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.protocol.errors import ErrorCode, RequestError
from server.protocol.limits import Limits
from workers.bodies import BODY_CHUNK_BYTES, CHUNKED_ABOVE_BYTES, ChunkedBody
from workers.commands import Call, Commands, ServerInfo
from workers.generate import generate
from workers.store import ObjectStore, digest

BODY = bytes(range(256)) * 40


@pytest.fixture
def commands(tmp_path: Path) -> Commands:
    store = ObjectStore(tmp_path / "store")
    store.put("obj", BODY)
    return Commands(store, ServerInfo("zplex/test", Limits(), 4 << 20))


def run(commands: Commands, name: str, **args: Any) -> tuple[dict[str, Any], Any]:
    return commands.run(name, Call(args, None, False))


@pytest.mark.parametrize("digest_arg", [{}, {"digest": True}, {"digest": None}])
def test_get_sends_the_digest_by_default(commands: Commands, digest_arg: dict[str, Any]) -> None:
    header, body = run(commands, "get", key="obj", **digest_arg)
    assert body == BODY
    assert header == {"status": "ok", "size": len(BODY), "digest": digest(BODY)}


def test_get_without_digest(commands: Commands, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hashing(*args: object) -> None:
        raise AssertionError("the body was hashed although the client asked for no digest")

    monkeypatch.setattr(commands.store, "get_with_digest", no_hashing)
    monkeypatch.setattr("workers.commands.digest", no_hashing)
    header, body = run(commands, "get", key="obj", digest=False)
    assert body == BODY
    assert header == {"status": "ok", "size": len(BODY)}
    header, body = run(commands, "get", key="obj", offset=10, length=5, digest=False)
    assert body == BODY[10:15]
    assert header == {"status": "ok", "size": 5, "object_size": len(BODY)}


def test_ranged_get_with_digest(commands: Commands) -> None:
    header, body = run(commands, "get", key="obj", offset=10, length=5)
    assert header == {"status": "ok", "size": 5, "digest": digest(body), "object_size": len(BODY)}


def test_generate_with_and_without_digest(commands: Commands) -> None:
    expected = generate(5000, "json", 7)
    header, body = run(commands, "generate", size=5000, kind="json", seed=7)
    assert body == expected
    assert header == {"status": "ok", "size": 5000, "digest": digest(expected)}
    header, body = run(commands, "generate", size=5000, kind="json", seed=7, digest=False)
    assert body == expected
    assert header == {"status": "ok", "size": 5000}


@pytest.mark.parametrize("bad", [0, 1, "false", "no", b"", [], {}, 0.0])
@pytest.mark.parametrize(("name", "args"), [("get", {"key": "obj"}), ("generate", {"size": 10})])
def test_digest_must_be_a_boolean(
    commands: Commands, name: str, args: dict[str, Any], bad: object
) -> None:
    with pytest.raises(RequestError) as info:
        run(commands, name, **args, digest=bad)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert not info.value.retryable
    assert "digest" in str(info.value)


def test_capabilities_list_the_digest_argument(commands: Commands) -> None:
    header, body = run(commands, "capabilities")
    assert body == b""
    assert header["commands"]["get"]["args"] == ["key", "offset", "length", "digest"]
    assert header["commands"]["generate"]["args"] == ["size", "kind", "seed", "digest"]
    assert header["commands"]["put"] == {"args": ["key"], "permission": "write"}


def deleting(commands: Commands) -> Commands:
    """The same store behind a server started with --allow-delete."""
    return Commands(commands.store, ServerInfo("zplex/test", Limits(), 4 << 20, True))


def test_delete_is_offered_only_with_allow_delete(commands: Commands) -> None:
    """A default server has exactly the protocol's commands: ``delete`` is unknown there,
    as any other unknown name, even with write permission, and capabilities omit it."""
    with pytest.raises(RequestError) as info:
        commands.run("delete", Call({"key": "obj"}, None, True))
    assert info.value.code == ErrorCode.UNKNOWN_COMMAND
    assert "unknown command 'delete'" in str(info.value)
    header, _ = run(commands, "capabilities")
    assert set(header["commands"]) == {
        "capabilities",
        "get",
        "list",
        "generate",
        "echo",
        "put",
        "stats",
    }
    header, _ = run(deleting(commands), "capabilities")
    assert header["commands"]["delete"] == {"args": ["key"], "permission": "write"}
    assert commands.store.get("obj") == (BODY, len(BODY))


def test_delete_removes_the_object_and_answers_its_size(commands: Commands) -> None:
    server = deleting(commands)
    with pytest.raises(RequestError) as info:
        server.run("delete", Call({"key": "obj"}, None, False))
    assert info.value.code == ErrorCode.FORBIDDEN and "write permission" in str(info.value)
    # Data is ignored, as by every command that takes none.
    header, body = server.run("delete", Call({"key": "obj"}, b"ignored", True))
    assert (header, body) == ({"status": "ok", "size": len(BODY)}, b"")
    for name, args in (("get", {"key": "obj"}), ("delete", {"key": "obj"})):
        with pytest.raises(RequestError) as info:
            server.run(name, Call(args, None, True))
        assert info.value.code == ErrorCode.NOT_FOUND
    assert run(server, "list")[0]["keys"] == []


@pytest.mark.parametrize("args", [{}, {"key": 5}, {"key": "../obj"}, {"key": "/obj"}, {"key": ""}])
def test_delete_with_a_bad_key_is_bad_request(commands: Commands, args: dict[str, Any]) -> None:
    with pytest.raises(RequestError) as info:
        deleting(commands).run("delete", Call(args, None, True))
    assert info.value.code == ErrorCode.BAD_REQUEST and "key" in str(info.value)
    assert commands.store.get("obj") == (BODY, len(BODY))


def test_large_bodies_come_in_chunks_hashed_first_only_when_a_digest_is_wanted(
    commands: Commands,
) -> None:
    """Over CHUNKED_ABOVE_BYTES, get and generate answer a ChunkedBody: with a digest that
    is not cached, it is ready only after a first pass over the bytes; with digest false,
    at once, and the header never gets one."""
    size = CHUNKED_ABOVE_BYTES + 5
    expected = generate(size, "log", 2)
    commands.store.put("big", expected)
    commands.store._digests.clear()
    for name, args in (
        ("generate", {"size": size, "kind": "log", "seed": 2}),
        ("get", {"key": "big"}),
    ):
        header, body = run(commands, name, **args)
        assert isinstance(body, ChunkedBody) and not body.ready
        steps = 0
        while not body.ready:
            body.digest_step()
            steps += 1
        assert steps >= size // BODY_CHUNK_BYTES
        assert header == {"status": "ok", "size": size, "digest": digest(expected)}
        assert b"".join(body.chunks()) == expected
        body.close()
        header, body = run(commands, name, **args, digest=False)
        assert isinstance(body, ChunkedBody) and body.ready
        assert b"".join(body.chunks()) == expected and header == {"status": "ok", "size": size}
        body.close()
    header, body = run(commands, "get", key="big")  # the first pass cached the digest
    assert isinstance(body, ChunkedBody) and body.ready and header["digest"] == digest(expected)
    body.close()


def test_the_front_knows_the_write_commands_the_workers_enforce() -> None:
    """The front refuses a write command before its data with the protocol's list; the
    workers check their own table: the two must name the same commands."""
    from server.protocol.payloads import WRITE_COMMANDS
    from workers.commands import TABLE

    assert {name for name, command in TABLE.items() if command.permission == "write"} == (
        WRITE_COMMANDS
    )
