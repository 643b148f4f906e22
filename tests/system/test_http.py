"""The HTTP transport (docs/protocol.md section 7) against a real server."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import TOKEN, ServerProcess, running_server

from server.protocol.client_conn import ClientConnection
from server.protocol.events import (
    ConnectionErrorReceived,
    ResponseBody,
    ResponseComplete,
    ResponseError,
    ServerSettingsReceived,
)
from server.protocol.payloads import ClientSettings
from workers.generate import generate

pytestmark = pytest.mark.timeout(120)
MEDIA = "application/x-zplex-frames-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("http")
    with running_server(tmp, "--http-port", "0", "--http-debugreflect", workers=1) as srv:
        srv.wait_for(lambda: "http" in srv.info)
        yield srv


def post(
    server: ServerProcess,
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.info["http"]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        base = {"Content-Type": MEDIA, "Accept": MEDIA}
        conn.request(method, path, body=body, headers={**base, **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def frames_for(*requests: tuple[str, dict[str, object], bytes | None], token: str | None = None):  # type: ignore[no-untyped-def]
    conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",), token=token))
    data = conn.initiate()
    for name, args, body in requests:
        data += conn.send_request(3, name, args, body)[1]
    return conn, data


def outcomes(conn: ClientConnection, body: bytes) -> dict[int, object]:
    events = conn.receive_data(body)
    assert isinstance(events[0], ServerSettingsReceived)
    result: dict[int, object] = {}
    for event in events:
        if isinstance(event, ResponseBody):
            result[event.request_id] = result.get(event.request_id, b"") + event.data  # type: ignore[operator]
        elif isinstance(event, ResponseComplete):
            result.setdefault(event.request_id, b"")
        elif isinstance(event, ResponseError):
            result[event.request_id] = event.error.code
    return result


def test_api_listing(server: ServerProcess) -> None:
    status, headers, body = post(server, "/api/", method="GET")
    assert status == 200 and body == b"zplex-v1\n"
    assert headers["Content-Type"].startswith("text/plain")


def test_generate_over_http(server: ServerProcess) -> None:
    conn, data = frames_for(("generate", {"size": 30_000, "seed": 1}, None))
    status, headers, body = post(server, "/api/zplex-v1/ro/generate", data)
    assert status == 200 and headers["Content-Type"] == MEDIA
    assert outcomes(conn, body) == {1: generate(30_000, "text", 1)}


def test_checks_in_order(server: ServerProcess) -> None:
    _conn, data = frames_for(("put", {"key": "k"}, b"v"))
    assert post(server, "/api/other/ro/get", data)[0] == 404
    assert post(server, "/api/zplex-v1/xx/get", data)[0] == 404
    assert post(server, "/api/zplex-v1/ro/nope", data)[0] == 404
    status, headers, _ = post(server, "/api/zplex-v1/ro/get", method="PUT")
    assert status == 405 and headers["Allow"] == "POST"
    assert post(server, "/api/zplex-v1/ro/put", data)[0] == 403
    assert post(server, "/api/zplex-v1/rw/put", data)[0] == 403  # no bearer token
    bad = {"Authorization": "Bearer wrong"}
    assert post(server, "/api/zplex-v1/rw/put", data, headers=bad)[0] == 403
    assert post(server, "/api/zplex-v1/ro/get", data, headers={"Accept": "text/html"})[0] == 406
    wrong_type = {"Content-Type": "text/plain"}
    assert post(server, "/api/zplex-v1/ro/get", data, headers=wrong_type)[0] == 415


def test_put_with_bearer_token(server: ServerProcess) -> None:
    conn, data = frames_for(("put", {"key": "http/a"}, b"payload"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = post(server, "/api/zplex-v1/rw/put", data, headers=auth)
    assert status == 200 and outcomes(conn, body) == {1: b""}
    assert (server.store / "http" / "a").read_bytes() == b"payload"


def test_token_in_settings_is_ignored_and_command_must_match(server: ServerProcess) -> None:
    conn, data = frames_for(("put", {"key": "http/b"}, b"x"), ("echo", {}, b"hi"), token=TOKEN)
    status, _, body = post(server, "/api/zplex-v1/ro/multirequest", data)
    assert status == 200
    assert outcomes(conn, body) == {1: "forbidden", 3: b"hi"}
    conn, data = frames_for(("echo", {}, b"hi"))
    status, _, body = post(server, "/api/zplex-v1/ro/generate", data)
    assert outcomes(conn, body) == {1: "bad-request"}


def test_debugreflect(server: ServerProcess) -> None:
    _conn, data = frames_for(("echo", {}, b"hi"))
    status, _, body = post(server, "/api/zplex-v1/ro/debugreflect", data)
    assert status == 200
    text = body.decode()
    assert "sender-protocol-settings" in text and "RequestReady" in text


def test_truncated_body_is_a_protocol_error(server: ServerProcess) -> None:
    conn, data = frames_for(("echo", {}, b"x" * 5000))
    status, _, body = post(server, "/api/zplex-v1/ro/echo", data[:-10])
    assert status == 200
    events = conn.receive_data(body)
    errors = [e.error.code for e in events if isinstance(e, ConnectionErrorReceived)]
    assert errors == ["protocol"]


def raw_request(address: tuple[str, int], head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` as they are; return everything the server answers."""
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def request_head(*fields: bytes, path: bytes = b"/api/zplex-v1/ro/echo") -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: " + MEDIA.encode()]
    lines += [b"Accept: " + MEDIA.encode(), *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize(
    "fields",
    [
        [b"Content-Length: \xb2"],  # superscript two (latin-1): isdigit() true, int() fails
        ["Content-Length: \u0661\u0662".encode()],  # Arabic-Indic digits, as UTF-8
        [b"Content-Length: +12"],
        [b"Content-Length: -1"],
        [b"Content-Length: 1 2"],
        [b"Content-Length: 12", b"Content-Length: 13"],
        [b"Content-Length: 12, 13"],
        [b"Content-Length : 12"],
        [b"Content-Length: " + b"9" * 5000],  # too many digits for int(): still an answer
    ],
)
def test_malformed_content_length(server: ServerProcess, fields: list[bytes]) -> None:
    address = tuple(server.info["http"])
    answer = raw_request(address, request_head(*fields), b"x" * 12)
    status_line = answer.split(b"\r\n", 1)[0]
    expected = b"413" if len(fields[0]) > 1000 else b"400"
    assert status_line.startswith(b"HTTP/1.1 " + expected), answer[:200]
    # the server is still there and answers a well-formed request
    conn, data = frames_for(("echo", {}, b"still here"))
    status, _, body = post(server, "/api/zplex-v1/ro/echo", data)
    assert status == 200 and outcomes(conn, body) == {1: b"still here"}


def test_the_same_content_length_twice_is_accepted(server: ServerProcess) -> None:
    conn, data = frames_for(("echo", {}, b"twice"))
    n = str(len(data)).encode()
    answer = raw_request(
        tuple(server.info["http"]),
        request_head(b"Content-Length: " + n, b"Content-Length: " + n),
        data,
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert outcomes(conn, body) == {1: b"twice"}


def test_http_connections_are_capped_before_the_body(tmp_path: Path) -> None:
    args = ("--http-port", "0", "--limit", "max_connections=2")
    with running_server(tmp_path, *args, workers=1) as srv:
        srv.wait_for(lambda: "http" in srv.info)
        http_address = tuple(srv.info["http"])
        # Two HTTP connections that have not sent their request yet count against the cap
        held = [socket.create_connection(http_address, timeout=20) for _ in range(2)]
        try:
            # A third one announces a large body it never sends: it is refused at once,
            # without waiting for the body (the server would wait 30 s for it).
            head = request_head(b"Content-Length: 1000000")
            answer = raw_request(http_address, head)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"\r\nRetry-After: 1\r\n" in answer
        finally:
            for sock in held:
                sock.close()
        # TCP connections count too
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=20) for _ in range(2)]
        try:
            srv.wait_for(lambda: _served_http(http_address).startswith(b"HTTP/1.1 503"))
        finally:
            for sock in held:
                sock.close()
        srv.wait_for(lambda: _served_http(http_address).startswith(b"HTTP/1.1 200"))


def _served_http(address: tuple[str, int]) -> bytes:
    _conn, data = frames_for(("echo", {}, b"x"))
    head = request_head(b"Content-Length: " + str(len(data)).encode())
    return raw_request(address, head, data)


def test_a_large_answer_streams_and_a_slow_client_holds_it_back(server: ServerProcess) -> None:
    """An answer over 1 MiB streams as a chunked body while it is produced; a client that
    reads slowly pauses it (the front holds about a stream's credit, not the whole answer)
    and then gets every byte."""
    import psutil

    size = 24_000_000
    requests = [("generate", {"size": size, "kind": "random", "seed": n}, None) for n in (1, 2)]
    conn = ClientConnection(ClientSettings(encodings=("identity",)))
    data = conn.initiate() + b"".join(conn.send_request(3, *r)[1] for r in requests)
    front = psutil.Process(server.info["fronts"][0])
    before = front.memory_info().rss
    host, port = server.info["http"]
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    head = (
        "POST /api/zplex-v1/ro/multirequest HTTP/1.1\r\n"
        f"Host: x\r\nContent-Type: {MEDIA}\r\nAccept: {MEDIA}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with sock:
        sock.sendall(head + data)
        first = sock.recv(65536)
        assert b"Transfer-Encoding: chunked" in first.split(b"\r\n\r\n")[0]
        # The client now reads nothing for a while: the front must not gather the answer.
        growth = 0
        for _ in range(20):
            growth = max(growth, front.memory_info().rss - before)
            sock.settimeout(0.1)
            with contextlib.suppress(TimeoutError):
                sock.recv(1, socket.MSG_PEEK)
        assert growth < 40_000_000, f"the front grew by {growth} bytes"
        sock.settimeout(30)
        raw = first
        while not raw.endswith(b"0\r\n\r\n"):
            piece = sock.recv(1 << 20)
            assert piece, "the answer ended early"
            raw += piece
    body = dechunk(raw.split(b"\r\n\r\n", 1)[1])
    result = outcomes(conn, body)
    assert [len(result[rid]) for rid in sorted(result)] == [size, size]  # type: ignore[arg-type]


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        line, _, body = body.partition(b"\r\n")
        length = int(line, 16)
        if length == 0:
            return bytes(out)
        out += body[:length]
        body = body[length + 2 :]
