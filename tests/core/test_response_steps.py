"""A response produced a step at a time (server/protocol/responses.py, ResponseInProgress):
how much each step feeds the encoder, when the response is done, and that the steps' bytes
are the bytes of the whole response."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import stream_settings_for
from server.protocol.events import (
    ClientEvent,
    ResponseBody,
    ResponseComplete,
    ResponseError,
)
from server.protocol.payloads import CONTEXTS, ENCODINGS
from server.protocol.responses import BODY_STEP_BYTES, ServerStreamWriter

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))


def writer_for(encoding: str, context: str) -> ServerStreamWriter:
    return ServerStreamWriter(2, stream_settings_for(encoding, 3, context), 32768)


def read(data: bytes, rid: int) -> list[ClientEvent]:
    client = ClientConnection()
    client.send_request(1, "x", request_id=rid)
    return client.receive_data(data)


def body_of(events: list[ClientEvent], rid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ResponseBody) and e.request_id == rid)


def steps_of(writer: ServerStreamWriter, body: bytes | Iterator[bytes]) -> list[bytes]:
    response = writer.begin_response(1, {"status": "ok"}, body)
    out = []
    while not response.done:
        out.append(response.step())
    assert response.step() == b""  # nothing after done
    return out


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
def test_a_small_body_is_one_step_and_the_same_bytes(encoding: str, context: str) -> None:
    body = b"small body " * 100
    steps = steps_of(writer_for(encoding, context), body)
    assert len(steps) == 1
    assert steps[0] == writer_for(encoding, context).response(1, {"status": "ok"}, body)


@pytest.mark.parametrize(("encoding", "context"), PROFILES)
def test_a_large_body_is_fed_a_piece_per_step(encoding: str, context: str) -> None:
    body = random.Random(1).randbytes(3 * BODY_STEP_BYTES + 5)
    writer = writer_for(encoding, context)
    response = writer.begin_response(1, {"status": "ok"}, body)
    fed = []
    out = bytearray()
    while not response.done:
        before = writer.raw_bytes
        out += response.step()
        fed.append(writer.raw_bytes - before)
    assert len(fed) == 4 and max(fed[1:]) <= BODY_STEP_BYTES  # the first has the header too
    events = read(bytes(out), 1)
    assert body_of(events, 1) == body and isinstance(events[-1], ResponseComplete)


def test_an_iterable_body_is_done_at_the_step_that_finds_it_exhausted() -> None:
    chunks = [bytes([n]) * 1000 for n in range(5)]
    steps = steps_of(writer_for("zstd-8mb", "stream"), iter(chunks))
    assert len(steps) == len(chunks) + 1
    events = read(b"".join(steps), 1)
    assert body_of(events, 1) == b"".join(chunks)


def test_a_failing_body_ends_with_internal_and_close_lets_go_of_the_body() -> None:
    closed = []

    def body() -> Iterator[bytes]:
        try:
            yield b"a" * 100_000
            raise OSError("disk gone")
        finally:
            closed.append(True)

    writer = writer_for("zstd-8mb", "stream")
    response = writer.begin_response(1, {"status": "ok"}, body())
    out = response.step() + response.step()
    assert response.done and response.failed
    events = read(out, 1)
    assert [e.error.code for e in events if isinstance(e, ResponseError)] == ["internal"]
    unfinished = writer.begin_response(3, {"status": "ok"}, body())
    unfinished.step()
    closed.clear()
    unfinished.close()
    assert closed == [True]
