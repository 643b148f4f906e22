"""Responses far larger than the per-stream credit, on real processes: a client that reads
nothing makes neither the front nor the worker hold the body (their RSS is measured), and
one worker serves its other streams while a long response is produced."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from serverproc import running_server

from bench.client import Client
from server.protocol.client_conn import ClientConnection
from server.protocol.events import ResponseBody, ResponseComplete, ResponseHeader
from server.protocol.payloads import ClientSettings

pytestmark = pytest.mark.timeout(150)

MIB = 1 << 20
BIG = 150_000_000  # bytes asked for, never read until the end
#: RSS growth allowed to the front and to the worker while the client reads nothing: the
#: body (150 MB) is never held whole, only the stream's credit and a few chunks.
GROWTH_BOUND = 100 * MIB


def rss_of(pids: list[int]) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


def sample_while(
    pids: list[int], seconds: float, peak: dict[int, int], check: Callable[[], None]
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid, rss in rss_of(pids).items():
            peak[pid] = max(peak[pid], rss)
        check()
        time.sleep(0.1)


def test_a_client_that_reads_nothing_holds_neither_front_nor_worker(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-generate-bytes", str(BIG), workers=1) as srv:
        pids = [*srv.info["fronts"], *srv.worker_pids()]
        with Client.connect("127.0.0.1", srv.port, timeout=30) as other:
            other.echo(b"warm up")  # every process has served once
            base = rss_of(pids)
            peak = dict(base)
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            try:
                conn = ClientConnection(ClientSettings(encodings=("identity",)))
                data = conn.initiate()
                args = {"size": BIG, "kind": "random", "seed": 5}
                rid, request = conn.send_request(1, "generate", args)
                data += request
                sock.sendall(data)
                served: list[bytes] = []

                def others_are_served() -> None:
                    # The same (only) worker serves another client's streams meanwhile.
                    served.append(other.generate(300_000, kind="json", seed=len(served)).body)

                sample_while(pids, 6.0, peak, others_are_served)
                stats = other.stats().header["workers"][0]
                # The stalled stream stopped at its credit (plus what the kernel and the
                # front's transport hold), far short of the 150 MB asked for.
                assert stats["bytes_wire"] < 40 * MIB, stats
                assert len(served) >= 3 and all(len(body) == 300_000 for body in served)
                growth = {pid: peak[pid] - base[pid] for pid in pids}
                assert max(growth.values()) < GROWTH_BOUND, growth
                # Then the client reads: the whole body arrives, as its header says.
                header, size, digest = read_response(sock, conn, rid)
                assert size == header["size"] == BIG
                assert header["digest"] == digest
            finally:
                sock.close()
            with pytest.raises(Exception, match="size must be <="):
                other.generate(BIG + 1)


def read_response(
    sock: socket.socket, conn: ClientConnection, rid: int
) -> tuple[dict[str, object], int, str]:
    """Read the response to ``rid`` whole, hashing its body as it comes (never holding it)."""
    hasher = hashlib.blake2b(digest_size=32)
    size = 0
    header: dict[str, object] = {}
    while True:
        data = sock.recv(1 << 20)
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, ResponseHeader) and event.request_id == rid:
                header = dict(event.header)
            elif isinstance(event, ResponseBody) and event.request_id == rid:
                hasher.update(event.data)
                size += len(event.data)
            elif isinstance(event, ResponseComplete) and event.request_id == rid:
                return header, size, "blake2b-256:" + hasher.hexdigest()


def test_one_worker_answers_a_short_request_while_a_slow_response_is_compressed(
    tmp_path: Path,
) -> None:
    """Level 19 on 32 MiB of text is many seconds of one worker's CPU. Its first frames
    arrive long before its end, and a request on another stream of that worker (the only
    one) is answered before it completes: the worker interleaves its streams a chunk at a
    time."""
    with running_server(tmp_path, workers=1) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        reader = None
        try:
            conn = ClientConnection(ClientSettings(encodings=("zstd-8mb",), level=19))
            args = {"size": 32 * MIB, "kind": "text", "digest": False}
            settings = conn.initiate()
            rid, request = conn.send_request(1, "generate", args)
            sock.sendall(settings + request)
            first_frames = threading.Event()
            complete = threading.Event()

            def read() -> None:
                with contextlib.suppress(OSError):
                    while data := sock.recv(1 << 20):
                        for event in conn.receive_data(data):
                            if isinstance(event, ResponseBody) and event.request_id == rid:
                                first_frames.set()
                            elif isinstance(event, ResponseComplete):
                                complete.set()
                                return

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert first_frames.wait(60), "no frame of the slow response arrived"
            assert not complete.is_set()
            with Client.connect("127.0.0.1", srv.port, timeout=30) as quick:
                assert quick.generate(200_000, kind="log", stream=3).header["size"] == 200_000
            assert not complete.is_set(), "the level-19 response completed before the short one"
        finally:
            sock.close()  # the server drops the slow stream; its worker stops compressing
            if reader is not None:
                reader.join(10)
