"""The output side of the server core: what ``ServerConnection`` sends, read as traces of
frames (notation, with MessagePack payloads decoded) after frames in."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from server.protocol.errors import ErrorCode
from server.protocol.events import ConnectionFailed, RequestReady
from server.protocol.frames import decode_frames
from server.protocol.limits import Limits
from server.protocol.notation import format_frame, parse_lines
from server.protocol.payloads import ENCODINGS, ServerSettings
from server.protocol.server_conn import ServerConnection

SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 1, Limits().to_wire())


def sent(conn: ServerConnection) -> list[str]:
    """The frames queued since the last call, one line each; MessagePack payloads of
    error-responses shown decoded, the server's settings frame as ``settings``."""
    lines = []
    for frame in decode_frames(conn.data_to_send(), 1 << 20):
        text = format_frame(frame)
        if "sender-protocol-settings" in text:
            lines.append("settings")
        elif "error-response" in text:
            head = text.rsplit(" ", 1)[0]
            lines.append(f"{head} {msgpack.unpackb(frame.payload)}")
        else:
            lines.append(text)
    return lines


def feed(conn: ServerConnection, text: str) -> list[Any]:
    return conn.receive_data(b"".join(f.encode() for f in parse_lines(text)))


def ready(**limits: Any) -> ServerConnection:
    conn = ServerConnection(Limits(**limits), SETTINGS)
    assert sent(conn) == ["settings"]  # a new connection's first frame, queued already
    return conn


def request(conn: ServerConnection, rid: int, sid: int = 1, sflags: str = "begin") -> None:
    events = feed(conn, f"{rid} {sid} {sflags} command-request new msgpack:{{'name': 'echo'}}")
    assert [type(e) for e in events][-1] is RequestReady


def err(code: str, message: str, retryable: bool, **details: Any) -> str:
    return str(
        {"code": code, "message": message, "retryable": retryable, **details}
        if not details
        else {"in_flight": details["in_flight"], "code": code, "message": message,
              "retryable": retryable}
    )  # fmt: skip


def test_send_error_begins_and_ends_the_server_stream() -> None:
    conn = ready()
    request(conn, 1)
    request(conn, 3, sflags="0")
    conn.send_error(1, 1, ErrorCode.OVERLOADED, "busy", True)
    conn.send_error(1, 3, ErrorCode.OVERLOADED, "busy", True, end_stream=True)
    assert sent(conn) == [
        f"1 2 begin error-response 0 {err('overloaded', 'busy', True)}",
        f"3 2 end error-response 0 {err('overloaded', 'busy', True)}",
    ]
    assert conn.in_flight_ids() == [] and conn.inflight == 0


def test_send_frames_tracks_the_server_stream_and_completion() -> None:
    conn = ready()
    request(conn, 1)
    request(conn, 3, sflags="0")
    conn.send_frames(1, 1, b"AAAA", done=True, stream_open=True)
    conn.send_frames(1, 3, b"BB", done=False, stream_open=True)
    assert conn.data_to_send() == b"AAAABB"  # worker frames pass through untouched
    assert conn.in_flight_ids() == [3]
    # The server stream is open (the worker said so): a local error does not begin it.
    conn.send_error(1, 3, ErrorCode.INTERNAL, "x")
    assert sent(conn) == [f"3 2 0 error-response 0 {err('internal', 'x', False)}"]


def test_fail_stream_retryable_only_when_nothing_was_sent() -> None:
    conn = ready()
    request(conn, 1)
    request(conn, 3, sflags="0")
    request(conn, 5, sid=3)  # another stream: untouched
    conn.send_frames(1, 1, b"partial", done=False, stream_open=True)
    conn.data_to_send()
    assert conn.fail_stream(1, ErrorCode.WORKER_LOST, "lost") == [1, 3]
    assert sent(conn) == [
        f"1 2 0 error-response 0 {err('worker-lost', 'lost', False)}",
        f"3 2 end error-response 0 {err('worker-lost', 'lost', True)}",
    ]
    assert conn.in_flight_ids() == [5]


def test_fail_stream_leaves_requests_still_arriving() -> None:
    conn = ready()
    feed(conn, "1 1 begin command-request new|more 0x81")
    assert conn.fail_stream(1, ErrorCode.WORKER_LOST, "lost") == []
    assert sent(conn) == [] and conn.incomplete_ids() == [1]


def test_end_server_stream_only_when_open() -> None:
    conn = ready()
    conn.end_server_stream(1)
    assert sent(conn) == []
    request(conn, 1)
    conn.send_error(1, 1, ErrorCode.OVERLOADED, "busy", True)
    sent(conn)
    conn.end_server_stream(1)
    assert sent(conn) == ["0 2 end stream-settings eos"]
    conn.end_server_stream(1)
    assert sent(conn) == []


def test_a_reset_stream_begins_its_server_stream_again() -> None:
    conn = ready()
    request(conn, 1)
    conn.send_frames(1, 1, b"", done=True, stream_open=True)
    feed(conn, "0 1 begin stream-settings eos")  # begin on an open stream: a reset
    request(conn, 3, sflags="0")
    conn.send_error(1, 3, ErrorCode.OVERLOADED, "busy", True)
    assert sent(conn)[-1].startswith("3 2 begin error-response")


def test_goaway_lists_what_will_still_be_answered() -> None:
    conn = ready()
    request(conn, 1)
    request(conn, 3, sid=3)
    assert conn.send_goaway("bye") == [1, 3]
    assert sent(conn) == [f"0 0 0 error-response 0 {err('goaway', 'bye', True, in_flight=[1, 3])}"]
    assert not conn.drained
    events = feed(conn, "5 1 0 command-request new msgpack:{'name': 'echo'}")
    assert events[0].code is ErrorCode.SHUTTING_DOWN  # new requests are refused
    conn.send_frames(1, 1, b"", done=True, stream_open=True)
    conn.send_frames(3, 3, b"", done=True, stream_open=True)
    conn.send_error(1, 5, events[0].code, events[0].message, True)
    assert conn.drained


def test_goaway_without_listing() -> None:
    conn = ready()
    request(conn, 1)
    assert conn.send_goaway("full", listing=False) == []
    assert sent(conn) == [f"0 0 0 error-response 0 {err('goaway', 'full', True, in_flight=[])}"]


def test_fail_queues_the_error_once_and_stops_input() -> None:
    conn = ready()
    conn.fail(ErrorCode.PROTOCOL, "timeout")
    conn.fail(ErrorCode.PROTOCOL, "again")
    assert sent(conn) == [f"0 0 0 error-response 0 {err('protocol', 'timeout', False)}"]
    assert conn.failed
    assert feed(conn, "1 1 begin command-request new msgpack:{'name': 'echo'}") == []


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ("1 2 begin command-request new msgpack:{'name': 'echo'}", "protocol"),
        ("0 1 begin stream-settings eos msgpack:{'encoding': 'zstd-8mb', 'window_log': 24}",
         "too-large"),
    ],
)  # fmt: skip
def test_a_connection_failure_is_queued_by_the_core(frames: str, code: str) -> None:
    conn = ready()
    event = feed(conn, frames)[-1]
    assert isinstance(event, ConnectionFailed) and event.code == code
    (line,) = sent(conn)
    assert line.startswith("0 0 0 error-response 0 ") and f"'code': '{code}'" in line
