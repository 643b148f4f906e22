"""Requests that never complete cannot make the front hold memory or an in-flight place: a
map that never ends is answered once it passes its cap, the data of a connection's
unfinished requests is capped, a write without permission is refused before its data, and a
request that stops making progress ends the connection. Real processes on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import pytest
from serverproc import TOKEN, ServerProcess, running_server

from server.protocol.client_conn import ClientConnection
from server.protocol.frames import (
    CommandDataFlags,
    CommandRequestFlags,
    CommandResponseFlags,
    Frame,
    FrameDecoder,
    FrameType,
    StreamFlags,
    encode_frame,
)
from server.protocol.payloads import ClientSettings, pack, unpack_map

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
NEW, MORE = int(CommandRequestFlags.NEW), int(CommandRequestFlags.MORE)
CONT, HAVE_DATA = int(CommandRequestFlags.CONTINUATION), int(CommandRequestFlags.HAVE_DATA)
REQUEST, DATA = int(FrameType.COMMAND_REQUEST), int(FrameType.COMMAND_DATA)
DATA_CONT, BEGIN = int(CommandDataFlags.CONTINUATION), int(StreamFlags.BEGIN)
ERROR, RESPONSE = int(FrameType.ERROR_RESPONSE), int(FrameType.COMMAND_RESPONSE)
RESP_EOS = int(CommandResponseFlags.EOS)


class Raw:
    """A connection whose frames the test writes and reads by hand."""

    def __init__(self, srv: ServerProcess, token: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        self.decoder = FrameDecoder(1 << 24)
        self.frames: list[Frame] = []
        settings = ClientSettings(encodings=("identity",), token=token)
        self.sock.sendall(ClientConnection(settings).initiate())

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def find(self, match: Callable[[Frame], bool], limit: float = 20) -> Frame:
        deadline = time.monotonic() + limit
        while True:
            for frame in self.frames:
                if match(frame):
                    return frame
            assert time.monotonic() < deadline, f"not seen in time: {self.frames[-3:]}"
            data = self.sock.recv(1 << 20)
            assert data, "the server closed the connection"
            self.frames += self.decoder.feed(data)

    def error_code(self, rid: int, stream: int | None = None) -> str:
        """The code of the error-response for request ``rid`` (0: the connection's)."""
        frame = self.find(lambda f: f.type == ERROR and f.request_id == rid)
        return str(unpack_map(frame.payload, "error")["code"])

    def error_message(self, rid: int) -> str:
        frame = self.find(lambda f: f.type == ERROR and f.request_id == rid)
        return str(unpack_map(frame.payload, "error")["message"])

    def completed(self, rid: int) -> None:
        self.find(lambda f: f.type == RESPONSE and f.request_id == rid and f.flags & RESP_EOS)


def echo(rid: int, sid: int) -> bytes:
    return encode_frame(rid, sid, 0, REQUEST, NEW, pack({"name": "echo", "args": {}}))


def put_start(rid: int, sid: int, key: str, *, begin: bool) -> bytes:
    """The map of a put whose data is still to come."""
    request = pack({"name": "put", "args": {"key": key}})
    return encode_frame(rid, sid, BEGIN if begin else 0, REQUEST, NEW | HAVE_DATA, request)


def data(rid: int, sid: int, size: int) -> bytes:
    chunk = 32768
    return b"".join(
        encode_frame(rid, sid, 0, DATA, DATA_CONT, b"x" * min(chunk, size - at))
        for at in range(0, size, chunk)
    )


@contextmanager
def server(tmp_path: Path, *limits: str) -> Iterator[ServerProcess]:
    args = [arg for limit in limits for arg in ("--limit", limit)]
    with running_server(tmp_path, *args, workers=1) as srv:
        yield srv


def test_an_endless_request_map_is_answered_and_the_connection_goes_on(tmp_path: Path) -> None:
    with server(tmp_path) as srv, ExitStack() as stack:
        raw = stack.enter_context(Raw(srv))
        raw.send(encode_frame(1, 1, 0, REQUEST, NEW | MORE, b"\x81"))
        piece = encode_frame(1, 1, 0, REQUEST, CONT | MORE, b"\xff" * 4096)
        raw.send(piece * 20)  # 80 KiB: past max_request_map_bytes (64 KiB)
        assert raw.error_code(1) == "too-large"
        raw.send(piece * 20)  # more of it is discarded ...
        raw.send(echo(3, 1))  # ... and the connection serves on
        raw.completed(3)


def test_unfinished_puts_are_capped_per_connection(tmp_path: Path) -> None:
    # max_request_data_bytes 4 MiB: a connection holds at most 8 MiB of unfinished data.
    with server(tmp_path, f"max_request_data_bytes={4 * MiB}") as srv, ExitStack() as stack:
        front = psutil.Process(srv.info["fronts"][0])
        before = front.memory_info().rss
        raw = stack.enter_context(Raw(srv, token=TOKEN))
        for n, sid in enumerate((1, 3, 5, 7)):
            raw.send(
                put_start(2 * n + 1, sid, f"k{n}", begin=sid != 1), data(2 * n + 1, sid, 3 * MiB)
            )
        # The third put crosses 8 MiB: it and the fourth are answered now, unfinished.
        assert raw.error_code(5) == "too-large" and "unfinished" in raw.error_message(5)
        assert raw.error_code(7) == "too-large"
        assert front.memory_info().rss - before < 32 * MiB
        # A held one completes normally.
        raw.send(encode_frame(1, 1, 0, DATA, int(CommandDataFlags.EOS), b""))
        raw.completed(1)


def test_a_put_without_permission_is_refused_before_its_data(tmp_path: Path) -> None:
    with server(tmp_path) as srv, ExitStack() as stack:
        raw = stack.enter_context(Raw(srv))  # no token
        raw.send(put_start(1, 1, "k", begin=False))
        assert raw.error_code(1) == "forbidden"  # answered before any data was sent
        raw.send(data(1, 1, 2 * MiB))  # discarded as it comes
        raw.send(echo(3, 1))
        raw.completed(3)


def test_a_request_that_makes_no_progress_ends_the_connection(tmp_path: Path) -> None:
    with server(tmp_path, "frame_timeout_s=1") as srv, ExitStack() as stack:
        raw = stack.enter_context(Raw(srv))
        raw.send(encode_frame(1, 1, 0, REQUEST, NEW | MORE, b"\x81"))  # whole frames, then nothing
        assert raw.error_code(0) == "protocol" and "no progress" in raw.error_message(0)
