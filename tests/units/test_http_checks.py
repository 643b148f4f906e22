"""The HTTP transport's refusals (server/http.py), without sockets or processes: a request is
fed to ``HttpServer.handle`` through a StreamReader and its answer read from a recording
writer. A body without Content-Length is 411, one over the limits 413 (from the header alone,
before any body byte is read), and ``debugreflect`` is 404 unless switched on, as ``delete``
is unless the server allows it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from server.http import MEDIA_TYPE, HttpServer
from server.protocol.client_conn import ClientConnection
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS, ClientSettings, ServerSettings

LIMITS = Limits(max_request_map_bytes=1024, max_request_data_bytes=4096)


class RecordingWriter:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


def _front(write_token: str | None = None, allow_delete: bool = False) -> SimpleNamespace:
    settings = ServerSettings("zplex/test", ENCODINGS, LIMITS.max_frame_size, 1, LIMITS.to_wire())
    config = SimpleNamespace(limits=LIMITS, write_token=write_token, allow_delete=allow_delete)

    def new_connection(http: object = None) -> object:
        raise AssertionError("no zplex connection may start for a refused request")

    return SimpleNamespace(
        config=config,
        server_settings=settings,
        new_connection=new_connection,
        connection_count=lambda: 0,
    )


def _exchange(
    request: bytes,
    *,
    debugreflect: bool = False,
    write_token: str | None = None,
    allow_delete: bool = False,
) -> tuple[int, bytes]:
    async def main() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(request)
        reader.feed_eof()
        writer = RecordingWriter()
        front = _front(write_token, allow_delete)
        server = HttpServer(front, debugreflect=debugreflect)  # type: ignore[arg-type]
        await server.handle(reader, writer)  # type: ignore[arg-type]
        assert writer.closed
        head, _, body = bytes(writer.data).partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    return asyncio.run(main())


def _post(
    command: str, headers: dict[str, str], body: bytes = b"", permission: str = "ro"
) -> bytes:
    lines = [f"POST /api/zplex-v1/{permission}/{command} HTTP/1.1", "Host: test"]
    base = {"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}
    lines += [f"{k}: {v}" for k, v in {**base, **headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _frames() -> bytes:
    client = ClientConnection(ClientSettings())
    return client.initiate() + client.send_request(1, "echo", {}, b"hi")[1]


def test_a_chunked_body_is_411() -> None:
    body = _frames()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    status, text = _exchange(_post("echo", {"Transfer-Encoding": "chunked"}, chunked))
    assert status == 411 and b"Content-Length" in text


def test_a_body_over_the_limits_is_413_from_its_length_alone() -> None:
    over = LIMITS.max_request_data_bytes + LIMITS.max_request_map_bytes + 1
    # Not one byte of the announced body follows: the answer cannot have waited for it.
    status, text = _exchange(_post("echo", {"Content-Length": str(over)}))
    assert status == 413 and b"too large" in text
    at_limit = LIMITS.max_request_data_bytes + LIMITS.max_request_map_bytes
    status, _ = _exchange(
        _post("debugreflect", {"Content-Length": str(at_limit)}, b"\0" * at_limit),
        debugreflect=True,
    )
    assert status == 200


@pytest.mark.parametrize("content_length", ["-1", "12x", "1e3"])
def test_a_bad_content_length_is_400(content_length: str) -> None:
    status, _ = _exchange(_post("echo", {"Content-Length": content_length}))
    assert status == 400


def test_debugreflect_is_404_unless_switched_on() -> None:
    body = _frames()
    request = _post("debugreflect", {"Content-Length": str(len(body))}, body)
    status, _ = _exchange(request)
    assert status == 404
    status, text = _exchange(request, debugreflect=True)
    assert status == 200
    assert b"sender-protocol-settings" in text and b"RequestReady" in text


@pytest.mark.parametrize(
    ("permission", "authorization", "server_token", "message"),
    [
        ("ro", "Bearer s3cret", "s3cret", "write permission needed: an rw URL and a bearer token"),
        ("rw", None, "s3cret", "write token missing: send Authorization: Bearer <write token>"),
        ("rw", "Basic dXNlcg==", "s3cret", "write token missing"),
        ("rw", "Bearer ", "s3cret", "write token missing"),
        (
            "rw",
            "Bearer not-the-token",
            "s3cret",
            "write token wrong: the bearer token is not the server's write token",
        ),
        ("rw", "Bearer s3cret", None, "this server has no write token, it takes no writes"),
    ],
)
def test_a_refused_write_says_whether_the_token_is_missing_or_wrong(
    permission: str, authorization: str | None, server_token: str | None, message: str
) -> None:
    headers = {"Content-Length": "0"}
    if authorization is not None:
        headers["Authorization"] = authorization
    status, text = _exchange(_post("put", headers, permission=permission), write_token=server_token)
    assert status == 403
    assert message in text.decode()
    assert b"s3cret" not in text and b"not-the-token" not in text  # never echoed


def test_delete_is_404_unless_the_server_allows_it() -> None:
    """A default server has no delete URL, as for any unknown command; with --allow-delete
    it is a write command: 403 on an ``ro`` URL, before the body is read."""
    body = _frames()
    request = _post("delete", {"Content-Length": str(len(body))}, body)
    status, text = _exchange(request)
    assert status == 404 and b"unknown permission or command" in text
    status, text = _exchange(request, allow_delete=True)
    assert status == 403 and b"write permission needed" in text
