"""The ``delete`` extension against real servers: offered only by ``zplex serve
--allow-delete`` (over TCP, HTTP and stdio; remote workers: tests/system/test_remote.py), a
default server answering it as any unknown name; and ``zplex delete``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import TOKEN, ServerProcess, running_server
from test_cli_errors import zplex
from test_http import frames_for, outcomes, post
from test_stdio import answers, server_group

from bench.client import Client, ServerError
from server.protocol.client_conn import ClientConnection
from server.protocol.payloads import ClientSettings
from workers.store_temp import LOCK_NAME

pytestmark = pytest.mark.timeout(120)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def deleting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("deleting")
    with running_server(tmp, "--allow-delete", "--http-port", "0", workers=2) as srv:
        srv.wait_for(lambda: "http" in srv.info)
        yield srv


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("default"), "--http-port", "0", workers=1) as srv:
        srv.wait_for(lambda: "http" in srv.info)
        yield srv


def code_of(call: object) -> str:
    with pytest.raises(ServerError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_put_delete_then_get_and_list_no_longer_have_it(deleting: ServerProcess) -> None:
    """Put on one stream, delete on another (each new stream goes to the least loaded of
    the two workers), then no stream gets it and the listing lacks it; its emptied directory
    went from the store."""
    with Client.connect("127.0.0.1", deleting.port, token=TOKEN, timeout=20) as client:
        capabilities = client.capabilities().header["commands"]
        assert capabilities["delete"] == {"args": ["key"], "permission": "write"}
        client.put("del/sub/a", b"a" * 1000, stream=1)
        client.put("del/b", b"b", stream=1)
        assert client.delete("del/sub/a", stream=3).header == {"status": "ok", "size": 1000}
        workers = client.stats(stream=3).header["workers"]
        assert [w["streams"] for w in workers] == [1, 1]  # streams 1 and 3, one on each
        for stream in (1, 3, 5):
            assert code_of(lambda s=stream: client.get("del/sub/a", stream=s)) == "not-found"
        assert client.list("del/").header["keys"] == [["del/b", 1]]
        assert not (deleting.store / "del" / "sub").exists()
        assert code_of(lambda: client.delete("del/sub/a")) == "not-found"
        assert code_of(lambda: client.delete("del")) == "not-found"  # a directory
        assert code_of(lambda: client.delete("../del/b")) == "bad-request"
    with Client.connect("127.0.0.1", deleting.port, timeout=20) as reader:
        assert code_of(lambda: reader.delete("del/b")) == "forbidden"
        # With data, the front refuses it before the data, as it does a put.
        assert code_of(lambda: reader.request("delete", {"key": "del/b"}, b"x")) == "forbidden"
        assert reader.get("del/b").body == b"b"


def test_a_default_server_answers_delete_as_any_unknown_name(default: ServerProcess) -> None:
    """Without --allow-delete the server is exactly the contract: capabilities do not list
    delete, and a delete (with the write token or without, with data or without) gets the
    same answer as a name that never was a command."""
    with Client.connect("127.0.0.1", default.port, token=TOKEN, timeout=20) as client:
        assert "delete" not in client.capabilities().header["commands"]
        client.put("kept", b"kept")
        with pytest.raises(ServerError) as unknown:
            client.request("frobnicate", {"key": "kept"})
        with pytest.raises(ServerError) as delete:
            client.delete("kept")
        assert (delete.value.code, unknown.value.code) == ("unknown-command", "unknown-command")
        assert delete.value.message == unknown.value.message.replace("frobnicate", "delete")
    with Client.connect("127.0.0.1", default.port, timeout=20) as reader:
        assert code_of(lambda: reader.request("delete", {"key": "kept"}, b"x")) == (
            "unknown-command"
        )
        assert reader.get("kept").body == b"kept"


def test_over_http_delete_follows_the_server(
    default: ServerProcess, deleting: ServerProcess
) -> None:
    """The delete URL is unknown (404) on a default server, as is delete inside a
    multirequest; with --allow-delete it is a write command."""
    conn, data = frames_for(("delete", {"key": "http/x"}, None))
    assert post(default, "/api/zplex-v1/rw/delete", data, headers=AUTH)[0] == 404
    conn, data = frames_for(("delete", {"key": "http/x"}, None))
    status, _, body = post(default, "/api/zplex-v1/rw/multirequest", data, headers=AUTH)
    assert status == 200 and outcomes(conn, body) == {1: "unknown-command"}

    conn, data = frames_for(("put", {"key": "http/x"}, b"payload"))
    assert post(deleting, "/api/zplex-v1/rw/put", data, headers=AUTH)[0] == 200
    conn, data = frames_for(("delete", {"key": "http/x"}, None))
    assert post(deleting, "/api/zplex-v1/ro/delete", data)[0] == 403
    status, _, body = post(deleting, "/api/zplex-v1/ro/multirequest", data)
    assert status == 200 and outcomes(conn, body) == {1: "forbidden"}
    conn, data = frames_for(("delete", {"key": "http/x"}, None), ("get", {"key": "http/x"}, None))
    status, _, body = post(deleting, "/api/zplex-v1/rw/multirequest", data, headers=AUTH)
    assert status == 200 and outcomes(conn, body) == {1: b"", 3: "not-found"}
    assert not (deleting.store / "http" / "x").exists()


def test_over_stdio(tmp_path: Path) -> None:
    conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",), token=TOKEN))
    data = conn.initiate()
    ids = []
    for name, args, body in (
        ("put", {"key": "stdio/obj"}, b"bytes"),
        ("delete", {"key": "stdio/obj"}, None),
        ("get", {"key": "stdio/obj"}, None),
    ):
        rid, frames = conn.send_request(1, name, args, body)
        ids.append(rid)
        data += frames
    cmd = [sys.executable, "-m", "server.cli", "serve", "--stdio", "--allow-delete"]
    cmd += ["--workers", "1", "--store", str(tmp_path / "store"), "--write-token", TOKEN]
    with server_group() as groups:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        groups.append(proc.pid)
        out, _ = proc.communicate(data, timeout=60)
    assert answers(conn, out) == {ids[0]: b"", ids[1]: b"", ids[2]: "not-found"}
    assert [p.name for p in (tmp_path / "store").iterdir()] == [LOCK_NAME]  # stdio/ went too


def test_zplex_delete(deleting: ServerProcess, default: ServerProcess, tmp_path: Path) -> None:
    """``zplex delete KEY``: done, or an error that names what is at fault."""
    source = tmp_path / "f"
    source.write_bytes(b"12345")
    env = {"ZPLEX_WRITE_TOKEN": TOKEN}
    at, at_default = f"127.0.0.1:{deleting.port}", f"127.0.0.1:{default.port}"
    assert zplex("put", "cli/obj", str(source), "--connect", at, env=env).returncode == 0
    done = zplex("delete", "cli/obj", "--connect", at)  # no token
    assert done.returncode == 1
    assert "forbidden" in done.stderr and "--token" in done.stderr
    assert "ZPLEX_WRITE_TOKEN" in done.stderr
    done = zplex("delete", "cli/obj", "--connect", at, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cli/obj: removed (5 bytes)\n"
    done = zplex("delete", "cli/obj", "--connect", at, env=env)
    assert done.returncode == 1
    assert "not-found" in done.stderr and "'cli/obj'" in done.stderr
    done = zplex("delete", "cli/obj", "--connect", at_default, env=env)
    assert done.returncode == 1
    assert "unknown-command" in done.stderr and "--allow-delete" in done.stderr
    assert "Traceback" not in done.stderr
