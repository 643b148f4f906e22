"""The server side of a connection (server/protocol/server_conn.py): every (state, input) pair
of its three state machines, every error of docs/protocol.md the front decides, and the request and
stream rules. Frames are written in the human notation (server/protocol/notation.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from server.protocol.error_frames import connection_error_frame, error_frame
from server.protocol.errors import ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    DataChunk,
    RequestReady,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.frames import Frame, FrameType, decode_frames, pack_header
from server.protocol.limits import Limits
from server.protocol.notation import parse_line, parse_lines
from server.protocol.payloads import (
    ENCODINGS,
    ClientSettings,
    ServerSettings,
    StreamSettings,
    pack,
    unpack_map,
)
from server.protocol.server_conn import ServerConnection
from server.protocol.server_states import (
    CONN_ERRORS,
    CONN_TABLE,
    REQUEST_ERRORS,
    REQUEST_TABLE,
    STREAM_ERRORS,
    STREAM_TABLE,
    ConnInput,
    ConnState,
    ReqInput,
    ReqState,
    StreamInput,
    StreamState,
)

SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, Limits().to_wire())
CLIENT_SETTINGS = pack(ClientSettings(encodings=("zlib", "identity"), level=5).to_wire())
ECHO_MAP = pack({"name": "echo", "args": {}})


def make(**limits: Any) -> ServerConnection:
    return ServerConnection(Limits(**limits), SERVER_SETTINGS)


def feed(conn: ServerConnection, text: str) -> list[ServerEvent]:
    return conn.receive_data(b"".join(f.encode() for f in parse_lines(text)))


def ready(settings: bytes = CLIENT_SETTINGS, **limits: Any) -> ServerConnection:
    """A connection after the client's settings (stream 1 open)."""
    conn = make(**limits)
    events = feed(conn, f"0 1 begin sender-protocol-settings eos 0x{settings.hex()}")
    assert events == [SettingsReceived(ClientSettings.from_wire(unpack_map(settings, "s")))]
    return conn


EMPTY_MAP = pack({})


def req(
    rid: int,
    sid: int = 1,
    sflags: str = "0",
    flags: str = "new",
    name: str = "echo",
    args: dict[str, Any] | None = None,
) -> str:
    """A one-frame command-request in notation."""
    value = {"name": name, "args": args or {}}
    return f"{rid} {sid} {sflags} command-request {flags} msgpack:{value!r}"


def failure(events: list[ServerEvent]) -> ConnectionFailed:
    assert events, "expected a ConnectionFailed event"
    last = events[-1]
    assert isinstance(last, ConnectionFailed), events
    return last


def protocol_error(events: list[ServerEvent], match: str = "") -> str:
    failed = failure(events)
    assert failed.code is ErrorCode.PROTOCOL
    assert match in failed.message
    return failed.message


def only(events: list[ServerEvent], kind: type) -> Any:
    assert len(events) == 1 and isinstance(events[0], kind), events
    return events[0]


def stream_state(conn: ServerConnection, sid: int) -> StreamState:
    # White-box: the table-driven tests check the machine's state, not only its events.
    stream = conn._streams.get(sid)
    return StreamState.CLOSED if stream is None else stream.state


def request_state(conn: ServerConnection, rid: int) -> ReqState | None:
    request = conn._requests.get(rid)
    return None if request is None else request.state


# ---- the connection state machine -----------------------------------------------------------


def _tables_partition(
    table: dict[Any, Any], errors: dict[Any, Any], states: Any, inputs: Any, extra: set[Any]
) -> None:
    pairs = set(itertools.product(states, inputs))
    assert not set(table) & set(errors)
    assert not (set(table) | set(errors)) & extra
    assert set(table) | set(errors) | extra == pairs


def test_conn_tables_cover_every_pair() -> None:
    failed = {(ConnState.FAILED, i) for i in ConnInput}
    _tables_partition(CONN_TABLE, CONN_ERRORS, ConnState, ConnInput, failed)


def _conn_in(state: ConnState) -> ServerConnection:
    conn = make()
    half = len(CLIENT_SETTINGS) // 2
    if state is ConnState.SETTINGS_PARTIAL:
        feed(
            conn,
            f"0 1 begin sender-protocol-settings continuation 0x{CLIENT_SETTINGS[:half].hex()}",
        )
    elif state is ConnState.READY:
        conn = ready()
    elif state is ConnState.FAILED:
        failure(feed(conn, "1 2 begin command-request new"))
    assert conn.state is state
    return conn


def _conn_input(state: ConnState, conn_input: ConnInput) -> str:
    begin = "begin" if state is ConnState.AWAIT_SETTINGS else "0"
    half = len(CLIENT_SETTINGS) // 2
    if conn_input is ConnInput.SETTINGS_MORE:
        part = CLIENT_SETTINGS[:half] if state is not ConnState.SETTINGS_PARTIAL else b""
        return f"0 1 {begin} sender-protocol-settings continuation 0x{part.hex()}"
    if conn_input is ConnInput.SETTINGS_EOS:
        part = CLIENT_SETTINGS[half:] if state is ConnState.SETTINGS_PARTIAL else CLIENT_SETTINGS
        return f"0 1 {begin} sender-protocol-settings eos 0x{part.hex()}"
    return req(1, sflags=begin)


@pytest.mark.parametrize(
    ("state", "conn_input"),
    list(itertools.product(ConnState, ConnInput)),
    ids=lambda v: v.value,
)
def test_conn_state_machine(state: ConnState, conn_input: ConnInput) -> None:
    conn = _conn_in(state)
    events = feed(conn, _conn_input(state, conn_input))
    key = (state, conn_input)
    if key in CONN_TABLE:
        assert not any(isinstance(e, ConnectionFailed) for e in events), events
        assert conn.state is CONN_TABLE[key]
        if key == (ConnState.AWAIT_SETTINGS, ConnInput.OTHER):
            assert events[0] == SettingsReceived(ClientSettings(), explicit=False)
            assert isinstance(events[1], RequestReady)
        if conn_input is ConnInput.SETTINGS_EOS:
            (event,) = events
            assert isinstance(event, SettingsReceived) and event.explicit
            assert event.settings.encodings == ("zlib", "identity")
            assert event.settings.level == 5
            assert conn.client_settings == event.settings
    elif key in CONN_ERRORS:
        assert protocol_error(events) == CONN_ERRORS[key]
        assert conn.state is ConnState.FAILED
    else:
        assert state is ConnState.FAILED
        assert events == []


# ---- the client stream state machine --------------------------------------------------------


def test_stream_tables_cover_every_pair() -> None:
    _tables_partition(STREAM_TABLE, STREAM_ERRORS, StreamState, StreamInput, set())
    # ``end`` on a closed stream is the same error as any frame on it without ``begin``.
    assert (
        STREAM_ERRORS[(StreamState.CLOSED, StreamInput.END)]
        == STREAM_ERRORS[(StreamState.CLOSED, StreamInput.FRAME)]
    )


def _stream_in(state: StreamState) -> ServerConnection:
    """max_streams 2; stream 1 is open (settings); the stream under test is 3; 5 is a blocker."""
    conn = ready(max_streams=2)
    if state is StreamState.OPEN:
        only(feed(conn, "0 3 begin stream-settings eos"), StreamSettingsReceived)
    elif state is StreamState.REJECTED:
        feed(conn, "0 5 begin stream-settings eos")
        only(feed(conn, "0 3 begin stream-settings eos"), StreamSettingsReceived)
    assert stream_state(conn, 3) is state
    return conn


@pytest.mark.parametrize(
    ("state", "stream_input"),
    list(itertools.product(StreamState, StreamInput)),
    ids=lambda v: v.value,
)
def test_stream_state_machine(state: StreamState, stream_input: StreamInput) -> None:
    conn = _stream_in(state)
    blocker_open = stream_state(conn, 5) is StreamState.OPEN
    if stream_input is StreamInput.BEGIN and blocker_open:
        feed(conn, "0 5 end stream-settings eos")
    over = stream_input is StreamInput.BEGIN_OVER_LIMIT
    if over and not blocker_open and state is not StreamState.OPEN:
        feed(conn, "0 5 begin stream-settings eos")
    sflags = {StreamInput.FRAME: "0", StreamInput.END: "end"}.get(stream_input, "begin")
    events = feed(conn, f"0 3 {sflags} stream-settings eos")
    key = (state, stream_input)
    if key in STREAM_TABLE:
        assert not any(isinstance(e, ConnectionFailed) for e in events), events
        assert stream_state(conn, 3) is STREAM_TABLE[key]
        # begin on an open stream resets it (a begin on an open stream is never over the limit:
        # the stream is already counted, so (OPEN, BEGIN_OVER_LIMIT) behaves as (OPEN, BEGIN)).
        reset = state is StreamState.OPEN and stream_input in (
            StreamInput.BEGIN,
            StreamInput.BEGIN_OVER_LIMIT,
        )
        assert any(type(e) is StreamReset for e in events) == reset
        ended = any(type(e) is StreamEnded for e in events)
        assert ended == (stream_input is StreamInput.END)
    else:
        assert protocol_error(events) == STREAM_ERRORS[key]


def test_open_stream_begin_is_never_over_the_limit() -> None:
    assert STREAM_TABLE[(StreamState.OPEN, StreamInput.BEGIN_OVER_LIMIT)] is StreamState.OPEN
    conn = ready(max_streams=1)
    assert conn.open_streams == 1
    events = feed(conn, "0 1 begin stream-settings eos")
    assert events[0] == StreamReset(1)
    assert stream_state(conn, 1) is StreamState.OPEN


# ---- the request state machine --------------------------------------------------------------


def test_request_tables_cover_every_pair() -> None:
    # A request is rejected only while it arrives (map or data): other pairs cannot occur.
    impossible = {
        (state, ReqInput.REJECT)
        for state in (ReqState.MAP_DISCARD, ReqState.DATA_DISCARD, ReqState.DONE)
    }
    _tables_partition(REQUEST_TABLE, REQUEST_ERRORS, ReqState, ReqInput, impossible)


def _request_in(state: ReqState, have_data: bool) -> ServerConnection:
    conn = ready()
    hd = "|have-data" if have_data else ""
    if state in (ReqState.MAP_DISCARD, ReqState.DATA_DISCARD):
        assert conn.start_goaway() == []
    if state in (ReqState.MAP, ReqState.MAP_DISCARD):
        assert feed(conn, f"1 1 0 command-request new|more{hd} 0x{ECHO_MAP[:3].hex()}") == []
    else:
        events = feed(conn, req(1, flags="new" + hd))
        if state is ReqState.DONE and have_data:
            events = feed(conn, "1 1 0 command-data eos b'x'")
        if state is ReqState.DONE:
            only(events, RequestReady)
        else:
            assert events == []
    assert request_state(conn, 1) is state
    return conn


def _request_input(req_input: ReqInput, have_data: bool) -> str:
    hd = "|have-data" if have_data else ""
    return {
        ReqInput.MAP_MORE: f"1 1 0 command-request continuation|more{hd} 0x{ECHO_MAP[3:5].hex()}",
        ReqInput.MAP_LAST: f"1 1 0 command-request continuation{hd} 0x{ECHO_MAP[3:].hex()}",
        ReqInput.MAP_LAST_DATA: (f"1 1 0 command-request continuation{hd} 0x{ECHO_MAP[3:].hex()}"),
        ReqInput.DATA_MORE: "1 1 0 command-data continuation b'abc'",
        ReqInput.DATA_EOS: "1 1 0 command-data eos b'abc'",
    }[req_input]


REQUEST_CASES = [
    (state, req_input, have_data)
    for state, req_input in itertools.product(ReqState, ReqInput)
    for have_data in (True, False)
    # command-data for a request without have-data is its own protocol error (tested below),
    # and only a request with have-data reaches the data states; the last map frame is
    # MAP_LAST_DATA exactly when have-data is set; REJECT comes from limits (tested below).
    if req_input is not ReqInput.REJECT
    and (req_input is not ReqInput.MAP_LAST or not have_data)
    and (req_input is not ReqInput.MAP_LAST_DATA or have_data)
    and (
        have_data
        or (
            req_input in (ReqInput.MAP_MORE, ReqInput.MAP_LAST)
            and state not in (ReqState.DATA, ReqState.DATA_DISCARD)
        )
    )
]


@pytest.mark.parametrize(
    ("state", "req_input", "have_data"),
    REQUEST_CASES,
    ids=lambda v: str(v.value if hasattr(v, "value") else v),
)
def test_request_state_machine(state: ReqState, req_input: ReqInput, have_data: bool) -> None:
    conn = _request_in(state, have_data)
    events = feed(conn, _request_input(req_input, have_data))
    key = (state, req_input)
    if key not in REQUEST_TABLE:
        assert protocol_error(events) == REQUEST_ERRORS[key]
        return
    assert not any(isinstance(e, ConnectionFailed) for e in events), events
    expected = REQUEST_TABLE[key]
    assert request_state(conn, 1) is expected
    if expected is ReqState.DONE:
        event = only(
            events, RequestReady if state in (ReqState.MAP, ReqState.DATA) else RequestRejected
        )
        if isinstance(event, RequestRejected):
            assert event.code is ErrorCode.SHUTTING_DOWN
        else:
            assert event.name == "echo"
            assert event.has_data == have_data
    else:
        assert events == []


# ---- protocol errors: every malformed-frame and stream rule of sections 1 and 2 -------------

PROTOCOL_CASES = [
    # (setup, bad frame, message fragment)
    ("", "1 1 0 0x0 0", "reserved frame type 0x0"),
    ("", "1 1 0 0x4 0", "reserved frame type 0x4"),
    ("", "1 1 0 0xa 0", "reserved frame type 0xa"),
    ("", "1 1 0 0xf 0xf", "reserved frame type 0xf"),
    ("", "1 2 0 command-response eos", "client may not send command-response"),
    ("", "1 2 0 error-response 0", "client may not send error-response"),
    ("", "0 0 0 text-output 0", "client may not send text-output"),
    ("", "1 2 0 progress 0", "client may not send progress"),
    ("", "1 1 0x8 command-request new", "undefined stream flag"),
    ("", "1 1 begin|0x80 command-request new", "undefined stream flag"),
    (req(1, flags="new|have-data"), "1 1 0 command-data eos|0x4", "undefined flag bits"),
    ("", "0 1 0 stream-settings eos|0x8", "undefined flag bits"),
    ("", "1 1 0 command-request new|continuation", "exactly one of new/continuation"),
    ("", "1 1 0 command-request more", "exactly one of new/continuation"),
    (req(1, flags="new|have-data"), "1 1 0 command-data continuation|eos", "continuation/eos"),
    (req(1, flags="new|have-data"), "1 1 0 command-data 0", "continuation/eos"),
    ("", "0 1 0 stream-settings 0", "continuation/eos"),
    ("", "0 1 0 stream-settings continuation|eos", "continuation/eos"),
    ("", "1 1 encoded command-request new", "encoded stream flag"),
    ("", "0 1 encoded stream-settings eos", "encoded stream flag"),
    ("", "1 1 0 sender-protocol-settings eos", "request id 0"),
    ("", "1 0 begin command-request new", "may not send on stream 0"),
    ("", "1 2 begin command-request new", "may not send on stream 2"),
    ("", "0 254 begin stream-settings eos", "may not send on stream 254"),
    ("", req(1, sid=3), "not open, without begin"),
    ("0 3 begin|end stream-settings eos", "0 3 0 stream-settings eos", "not open, without begin"),
    ("", req(2), "request id 2 is not odd"),
    ("", req(0), "request id 0 is not odd"),
    (req(1, flags="new|more"), req(1), "request id 1 is already in flight"),
    (req(1), req(1), "request id 1 is already in flight"),
    ("", "7 1 0 command-request continuation", "unknown request id 7"),
    ("", "7 1 0 command-data eos", "unknown request id 7"),
    (
        req(1, flags="new|more") + "\n0 3 begin stream-settings eos",
        "1 3 0 command-request continuation",
        "on two streams",
    ),
    (req(1, flags="new|more|have-data"), "1 1 0 command-request continuation", "have-data changed"),
    (req(1, flags="new|more"), "1 1 0 command-request continuation|have-data", "have-data changed"),
    (req(1, flags="new|more"), "1 1 0 command-data eos", "without have-data"),
    (req(1), "1 1 0 command-data eos", "without have-data"),
    (req(1, flags="new|have-data"), "1 1 encoded command-data eos", "before an encoding stream"),
    (
        "0 1 0 stream-settings eos msgpack:{'encoding': 'identity'}\n"
        + req(1, flags="new|have-data"),
        "1 1 encoded command-data eos 0x00",
        "before an encoding stream",
    ),
    ("", "0 1 0 stream-settings eos msgpack:{'encoding': 'brotli'}", "unknown encoding"),
    ("", "0 1 0 stream-settings eos msgpack:{'context': 'stream'}", "lacks the field"),
    ("", "0 1 0 stream-settings eos msgpack:[1]", "must be a map"),
    ("", "0 1 0 stream-settings eos b'\\xc1'", "not valid MessagePack"),
    ("", "0 1 begin sender-protocol-settings eos", "sender-protocol-settings after"),
    (req(1, flags="new|more"), "1 1 end command-request continuation|more", "incomplete"),
    (req(1, flags="new|have-data"), "0 1 end stream-settings eos", "request 1 on it is incomplete"),
    (req(1, flags="new|more"), req(3, sflags="begin"), "request 1 on it is incomplete"),
]


@pytest.mark.parametrize(
    ("setup", "bad", "match"), PROTOCOL_CASES, ids=[c[1] for c in PROTOCOL_CASES]
)
def test_protocol_errors(setup: str, bad: str, match: str) -> None:
    conn = ready()
    assert not any(isinstance(e, ConnectionFailed) for e in feed(conn, setup))
    events = feed(conn, bad)
    protocol_error(events, match)
    failed = failure(events)
    # The error-response frame to send: request id 0, stream 0, never encoded.
    (frame,) = decode_frames(failed.data)
    assert (frame.request_id, frame.stream_id, frame.stream_flags) == (0, 0, 0)
    assert frame.type == FrameType.ERROR_RESPONSE
    assert unpack_map(frame.payload, "e") == {
        "code": "protocol",
        "message": failed.message,
        "retryable": False,
    }
    # Nothing more is accepted.
    assert conn.state is ConnState.FAILED
    assert conn.receive_data(parse_line(req(9)).encode()) == []


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ("msgpack:{'max_frame_size': 512}", "max_frame_size"),
        ("msgpack:{'max_frame_size': 2097152}", "max_frame_size"),
        ("msgpack:{'version': 2}", "version"),
        ("msgpack:{'context': 'connection'}", "context"),
        ("msgpack:{'level': '3'}", "level"),
        ("msgpack:['version', 1]", "must be a map"),
        ("b'\\xc1'", "not valid MessagePack"),
    ],
)
def test_bad_client_settings_are_protocol_errors(settings: str, match: str) -> None:
    conn = make()
    protocol_error(feed(conn, f"0 1 begin sender-protocol-settings eos {settings}"), match)


def test_settings_interrupted_and_settings_too_large() -> None:
    conn = make()
    feed(conn, "0 1 begin sender-protocol-settings continuation 0x81")
    protocol_error(feed(conn, req(1)), "settings interrupted")
    conn = make(max_request_map_bytes=10)
    feed(conn, "0 1 begin sender-protocol-settings continuation 0x0001020304")
    protocol_error(
        feed(conn, "0 1 0 sender-protocol-settings continuation 0x000102030405"), "too large"
    )
    conn = ready(EMPTY_MAP, max_request_map_bytes=10)
    feed(conn, "0 1 0 stream-settings continuation 0x0001020304")
    protocol_error(feed(conn, "0 1 0 stream-settings eos 0x000102030405"), "too large")


def test_oversize_header_is_rejected_before_its_payload() -> None:
    conn = ready()
    header = pack_header(32769, 1, 1, 0, FrameType.COMMAND_REQUEST, 1)
    protocol_error(conn.receive_data(header), "exceeds max_frame_size 32768")
    conn = ready(max_frame_size=1 << 20)
    events = conn.receive_data(pack_header(32769, 1, 1, 0, FrameType.COMMAND_REQUEST, 1))
    assert events == [] and conn.partial_frame


def test_frames_before_a_bad_one_are_processed() -> None:
    conn = ready()
    data = parse_line(req(1)).encode() + parse_line("1 2 0 progress 0").encode()
    events = conn.receive_data(data)
    assert isinstance(events[0], RequestReady)
    protocol_error(events[1:], "client may not send progress")


# ---- too-large ------------------------------------------------------------------------------


def test_window_over_8_mib_is_connection_level_too_large() -> None:
    conn = ready()
    events = feed(
        conn, "0 1 0 stream-settings eos msgpack:{'encoding': 'zstd-8mb', 'window_log': 24}"
    )
    failed = failure(events)
    assert failed.code is ErrorCode.TOO_LARGE
    assert "8 MiB" in failed.message
    assert unpack_map(decode_frames(failed.data)[0].payload, "e")["code"] == "too-large"
    ok = ready()
    event = only(
        feed(ok, "0 1 0 stream-settings eos msgpack:{'encoding': 'zstd-8mb', 'window_log': 23}"),
        StreamSettingsReceived,
    )
    assert event == StreamSettingsReceived(1, StreamSettings("zstd-8mb", None, 23, "stream"))


def test_request_map_over_the_limit_is_too_large_and_its_frames_discarded() -> None:
    conn = ready(EMPTY_MAP, max_request_map_bytes=len(ECHO_MAP) - 1)
    assert feed(conn, f"1 1 0 command-request new|more 0x{ECHO_MAP[:4].hex()}") == []
    # Answered as soon as the map passes the limit: a map that never ends is answered too.
    event = only(
        feed(conn, f"1 1 0 command-request continuation|more 0x{ECHO_MAP[4:].hex()}"),
        RequestRejected,
    )
    assert event.code is ErrorCode.TOO_LARGE and event.request_id == 1
    assert not event.retryable
    for _ in range(100):  # the rest of its frames are discarded, however many
        assert feed(conn, "1 1 0 command-request continuation|more 0xffffffff") == []
    assert feed(conn, "1 1 0 command-request continuation 0xff") == []
    conn.send_error(1, 1, event.code, event.message)  # its id is free again
    assert 1 not in conn.in_flight_ids() and conn.incomplete_ids() == []
    # A single frame over the limit too; a small request still passes.
    big = pack({"name": "echo", "args": {"pad": "x" * 40}})
    assert only(feed(conn, f"3 1 0 command-request new 0x{big.hex()}"), RequestRejected).code is (
        ErrorCode.TOO_LARGE
    )
    conn = ready(EMPTY_MAP, max_request_map_bytes=len(ECHO_MAP))
    only(feed(conn, req(5)), RequestReady)


def test_request_data_over_the_limit_is_too_large() -> None:
    conn = ready(max_request_data_bytes=10)
    feed(conn, req(1, flags="new|have-data"))
    assert feed(conn, "1 1 0 command-data continuation b'0123456789'") == []
    # Answered now; the rest of its data is discarded.
    event = only(feed(conn, "1 1 0 command-data continuation b'x'"), RequestRejected)
    assert event.code is ErrorCode.TOO_LARGE and "max_request_data_bytes" in event.message
    assert feed(conn, "1 1 0 command-data continuation b'more'") == []
    assert feed(conn, "1 1 0 command-data eos b'end'") == []
    assert conn.requests.buffered == 0
    # Exactly at the limit passes.
    feed(conn, req(3, flags="new|have-data"))
    ready_event = only(feed(conn, "3 1 0 command-data eos b'0123456789'"), RequestReady)
    assert ready_event.data == (DataChunk(False, b"0123456789"),)


def test_unfinished_requests_hold_at_most_twice_max_request_data_bytes() -> None:
    conn = ready(max_request_data_bytes=10)  # a connection holds at most 20 bytes of them
    for rid, sid in ((1, 1), (3, 3), (5, 5)):
        feed(conn, req(rid, sid, "begin" if sid > 1 else "0", "new|have-data"))
    assert feed(conn, "1 1 0 command-data continuation b'12345678'") == []
    assert feed(conn, "3 3 0 command-data continuation b'12345678'") == []
    event = only(feed(conn, "5 5 0 command-data continuation b'12345'"), RequestRejected)
    assert event.request_id == 5 and event.code is ErrorCode.TOO_LARGE
    assert "unfinished" in event.message and conn.requests.buffered == 16
    # A request that completes gives its bytes back.
    only(feed(conn, "1 1 0 command-data eos b''"), RequestReady)
    assert conn.requests.buffered == 8
    assert feed(conn, "3 3 0 command-data continuation b'12'") == []
    assert feed(conn, "5 5 0 command-data eos b'more'") == []  # discarded: already answered


def test_a_write_command_without_permission_is_refused_before_its_data() -> None:
    conn = ready()
    assert conn.permit_writes(False) == []
    put = req(1, flags="new|have-data", name="put", args={"key": "k"})
    event = only(feed(conn, put), RequestRejected)
    assert event.code is ErrorCode.FORBIDDEN and "write permission" in event.message
    assert feed(conn, f"1 1 0 command-data continuation 0x{'78' * 1000}") == []
    assert feed(conn, "1 1 0 command-data eos b'x'") == [] and conn.requests.buffered == 0
    # With permission a put goes through.
    assert conn.permit_writes(True) == []
    feed(conn, req(5, flags="new|have-data", name="put", args={"key": "k"}))
    assert only(feed(conn, "5 1 0 command-data eos b'x'"), RequestReady).name == "put"


@pytest.mark.parametrize("allow_delete", [False, True])
def test_delete_is_a_write_command_only_where_the_server_offers_it(allow_delete: bool) -> None:
    """The front refuses a write command that carries data before its data (a request
    without data is checked by its worker). Without --allow-delete, ``delete`` is a name like
    any unknown one: it goes to the worker (which answers unknown-command), never refused
    as forbidden here; with it, it is refused as ``put`` is."""
    conn = ServerConnection(Limits(), SERVER_SETTINGS, allow_delete=allow_delete)
    feed(conn, f"0 1 begin sender-protocol-settings eos 0x{CLIENT_SETTINGS.hex()}")
    assert conn.permit_writes(False) == []
    events = feed(conn, req(1, flags="new|have-data", name="delete", args={"key": "k"}))
    if allow_delete:
        event = only(events, RequestRejected)
        assert event.code is ErrorCode.FORBIDDEN
        assert "'delete' needs write permission" in event.message
        assert feed(conn, "1 1 0 command-data eos b'x'") == []
    else:
        assert events == []
        assert only(feed(conn, "1 1 0 command-data eos b'x'"), RequestReady).name == "delete"


def test_permission_learnt_after_the_map_refuses_the_rest_of_the_data() -> None:
    conn = ready()  # write_allowed unknown while the map arrives
    feed(conn, req(1, flags="new|have-data", name="put", args={"key": "k"}))
    assert feed(conn, "1 1 0 command-data continuation b'abc'") == []
    event = only(conn.permit_writes(False), RequestRejected)
    assert event.code is ErrorCode.FORBIDDEN and conn.requests.buffered == 0
    assert feed(conn, "1 1 0 command-data continuation b'def'") == []


def test_incomplete_requests_report_their_progress() -> None:
    conn = ready()
    feed(conn, req(1, flags="new|have-data"))
    assert conn.incomplete_progress() == {1: 1}
    feed(conn, "1 1 0 command-data continuation b'a'")
    feed(conn, req(3, flags="new|more"))
    assert conn.incomplete_progress() == {1: 2, 3: 1}
    feed(conn, "1 1 0 command-data eos b''")
    assert conn.incomplete_progress() == {3: 1}


def test_encoded_data_is_capped_at_twice_the_limit_on_the_wire() -> None:
    conn = ready(max_request_data_bytes=10)
    only(
        feed(conn, "0 1 0 stream-settings eos msgpack:{'encoding': 'zlib'}"), StreamSettingsReceived
    )
    feed(conn, req(1, flags="new|have-data"))
    only(feed(conn, "1 1 encoded command-data eos 0x" + "00" * 20), RequestReady)
    feed(conn, req(3, flags="new|have-data"))
    event = only(feed(conn, "3 1 encoded command-data eos 0x" + "00" * 21), RequestRejected)
    assert event.code is ErrorCode.TOO_LARGE


# ---- too-many-streams, overloaded, shutting-down, bad-request -------------------------------


def test_too_many_streams() -> None:
    conn = ready(max_streams=1)
    event = only(feed(conn, req(1, sid=3, sflags="begin")), RequestRejected)
    assert event.code is ErrorCode.TOO_MANY_STREAMS and event.stream_id == 3
    # Every request on that stream gets it, including split ones, until the stream ends.
    assert feed(conn, req(3, sid=3, flags="new|more")) == []
    event = only(feed(conn, "3 3 end command-request continuation"), RequestRejected)
    assert event.code is ErrorCode.TOO_MANY_STREAMS and event.end_stream
    assert conn.open_streams == 1
    # Once stream 1 ends, stream 3 can open.
    assert feed(conn, "0 1 end stream-settings eos")[-1] == StreamEnded(1)
    assert conn.open_streams == 0
    ready_event = only(feed(conn, req(5, sid=3, sflags="begin")), RequestReady)
    assert ready_event.stream_id == 3
    assert conn.open_streams == 1


def test_overloaded_max_inflight() -> None:
    conn = ready(max_inflight=2, max_inflight_per_stream=2)
    only(feed(conn, req(1)), RequestReady)
    feed(conn, "0 3 begin stream-settings eos")
    only(feed(conn, req(3, sid=3)), RequestReady)
    event = only(feed(conn, req(5, sid=3)), RequestRejected)
    assert event.code is ErrorCode.OVERLOADED and event.retryable
    assert "max_inflight (2)" in event.message
    assert conn.inflight == 2
    conn.response_sent(5)  # the rejection went out: not counted, id free
    conn.response_sent(1)
    assert conn.inflight == 1
    only(feed(conn, req(5, sid=3)), RequestReady)


def test_overloaded_max_inflight_per_stream() -> None:
    conn = ready(max_inflight_per_stream=1)
    only(feed(conn, req(1)), RequestReady)
    event = only(feed(conn, req(3)), RequestRejected)
    assert event.code is ErrorCode.OVERLOADED and "max_inflight_per_stream (1)" in event.message
    # Another stream is not affected.
    only(feed(conn, req(5, sid=3, sflags="begin")), RequestReady)
    conn.response_sent(1)
    conn.response_sent(3)
    only(feed(conn, req(3)), RequestReady)


def test_shutting_down_after_start_goaway() -> None:
    conn = ready()
    only(feed(conn, req(1)), RequestReady)
    assert feed(conn, req(3, flags="new|more")) == []  # first frame before the goaway
    assert conn.start_goaway() == [1, 3]
    assert conn.goaway
    event = only(feed(conn, req(5)), RequestRejected)
    assert event.code is ErrorCode.SHUTTING_DOWN and event.retryable
    # A request whose first frame arrived before the goaway is still served.
    ready_event = only(feed(conn, "3 1 0 command-request continuation"), RequestReady)
    assert ready_event.request_id == 3
    assert conn.in_flight_ids() == [1, 3, 5]
    for rid in (1, 3, 5):
        conn.response_sent(rid)
    assert conn.in_flight_ids() == []


@pytest.mark.parametrize(
    "payload",
    [
        "b'not msgpack'",
        "msgpack:['echo', {}]",
        "msgpack:{'args': {}}",
        "msgpack:{'name': 1}",
        "msgpack:{'name': 'echo', 'args': [1]}",
        "",
    ],
)
def test_bad_request_for_an_undecodable_map(payload: str) -> None:
    conn = ready()
    event = only(feed(conn, f"1 1 0 command-request new {payload}"), RequestRejected)
    assert event.code is ErrorCode.BAD_REQUEST
    assert conn.inflight == 1  # counted until answered
    assert conn.in_flight_ids() == [1]
    conn.response_sent(1)
    assert conn.inflight == 0 and conn.in_flight_ids() == []


# ---- requests: ids, data, interleaving ------------------------------------------------------


def test_request_ready_fields() -> None:
    conn = ready()
    feed(conn, req(1, flags="new|have-data", name="put", args={"key": "a/b"}))
    feed(conn, "0 1 0 stream-settings eos msgpack:{'encoding': 'zlib', 'level': 6}")
    assert feed(conn, "1 1 0 command-data continuation b'raw'") == []
    event = only(feed(conn, "1 1 encoded command-data eos 0x78"), RequestReady)
    assert event == RequestReady(
        1,
        1,
        "put",
        {"key": "a/b"},
        (DataChunk(False, b"raw"), DataChunk(True, b"\x78")),
        True,
        end_stream=False,
        command_map=pack({"name": "put", "args": {"key": "a/b"}}),
    )


def test_empty_data_and_split_map() -> None:
    conn = ready()
    feed(conn, f"1 1 0 command-request new|more|have-data 0x{ECHO_MAP[:1].hex()}")
    feed(conn, f"1 1 0 command-request continuation|more|have-data 0x{ECHO_MAP[1:6].hex()}")
    feed(conn, f"1 1 0 command-request continuation|have-data 0x{ECHO_MAP[6:].hex()}")
    event = only(feed(conn, "1 1 0 command-data eos"), RequestReady)
    assert event.data == (DataChunk(False, b""),) and event.has_data
    assert event.name == "echo"


def test_request_id_reuse_only_after_response_sent() -> None:
    conn = ready()
    only(feed(conn, req(1)), RequestReady)
    assert conn.in_flight_ids() == [1]
    conn.response_sent(1)
    conn.response_sent(1)  # twice: harmless
    conn.response_sent(99)  # unknown: harmless
    only(feed(conn, req(1)), RequestReady)
    protocol_error(feed(conn, req(1)), "already in flight")


def test_request_id_answered_before_all_its_frames_arrived() -> None:
    def answered_early() -> ServerConnection:
        conn = ready()
        conn.start_goaway()
        assert feed(conn, req(1, flags="new|have-data")) == []
        assert conn.in_flight_ids() == [1]
        conn.response_sent(1)  # answered before its last frame arrived
        assert conn.in_flight_ids() == []
        return conn

    # The id stays busy until the request's last frame arrived...
    protocol_error(feed(answered_early(), req(1)), "already in flight")
    # ...then it is free, and the request is not answered a second time.
    conn = answered_early()
    assert feed(conn, "1 1 0 command-data eos") == []
    event = only(feed(conn, req(1)), RequestRejected)
    assert event.code is ErrorCode.SHUTTING_DOWN


def test_interleaved_requests_on_one_stream() -> None:
    conn = ready()
    assert feed(conn, f"1 1 0 command-request new|more 0x{ECHO_MAP[:4].hex()}") == []
    assert feed(conn, req(3, flags="new|have-data", name="put")) == []
    only_5 = only(feed(conn, req(5, name="get")), RequestReady)
    assert only_5.request_id == 5
    assert feed(conn, "3 1 0 command-data continuation b'a'") == []
    first = only(
        feed(conn, f"1 1 0 command-request continuation 0x{ECHO_MAP[4:].hex()}"), RequestReady
    )
    assert first.request_id == 1
    third = only(feed(conn, "3 1 0 command-data eos b'b'"), RequestReady)
    assert third.data == (DataChunk(False, b"a"), DataChunk(False, b"b"))
    assert conn.in_flight_ids() == [1, 3, 5]


def test_interleaved_requests_on_several_streams() -> None:
    conn = ready()
    text = "\n".join(
        [
            req(1, sid=1, flags="new|have-data"),
            req(3, sid=3, sflags="begin", flags="new|have-data"),
            req(5, sid=5, sflags="begin"),
            "3 3 0 command-data eos b'three'",
            "1 1 end command-data eos b'one'",
        ]
    )
    events = feed(conn, text)
    assert [(type(e).__name__, getattr(e, "request_id", None)) for e in events] == [
        ("RequestReady", 5),
        ("RequestReady", 3),
        ("RequestReady", 1),
    ]
    assert [e.stream_id for e in events if isinstance(e, RequestReady)] == [5, 3, 1]
    assert isinstance(events[2], RequestReady) and events[2].end_stream
    assert conn.open_streams == 2


# ---- stream begin and end -------------------------------------------------------------------


def test_begin_on_an_open_stream_resets_it() -> None:
    conn = ready()
    only(
        feed(conn, "0 1 0 stream-settings eos msgpack:{'encoding': 'zlib'}"), StreamSettingsReceived
    )
    events = feed(conn, req(1, sflags="begin", flags="new|have-data"))
    assert events == [StreamReset(1)]
    # The reset dropped the encoding: encoded data needs a new stream-settings.
    protocol_error(feed(conn, "1 1 encoded command-data eos 0x00"), "before an encoding")


def test_end_on_a_requests_last_frame_sets_end_stream() -> None:
    conn = ready()
    event = only(feed(conn, req(1, sflags="end")), RequestReady)
    assert event.end_stream
    assert conn.open_streams == 0
    # The ids may be used again, with begin only.
    protocol_error(feed(ready(), req(1, sflags="end") + "\n" + req(3)), "not open")
    event = only(feed(conn, req(3, sflags="begin|end")), RequestReady)
    assert event.end_stream and event.request_id == 3
    # end on a frame after which the request still has frames to come is a protocol error.
    protocol_error(feed(conn, req(5, sflags="begin|end", flags="new|have-data")), "incomplete")


def test_end_on_the_data_eos_and_on_a_rejected_request() -> None:
    conn = ready(max_streams=1)
    feed(conn, req(1, flags="new|have-data"))
    event = only(feed(conn, "1 1 end command-data eos"), RequestReady)
    assert event.end_stream and event.has_data
    feed(conn, "0 5 begin stream-settings eos")
    rejected = only(feed(conn, req(3, sid=3, sflags="begin|end")), RequestRejected)
    assert rejected.end_stream and rejected.code is ErrorCode.TOO_MANY_STREAMS


def test_end_on_an_empty_stream_settings_is_stream_ended() -> None:
    conn = ready()
    only(feed(conn, req(1)), RequestReady)
    assert feed(conn, "0 1 end stream-settings eos") == [
        StreamSettingsReceived(1, StreamSettings()),
        StreamEnded(1),
    ]
    assert conn.open_streams == 0
    # begin|end on a lone settings frame opens and ends a stream at once.
    events = feed(conn, "0 3 begin|end stream-settings eos")
    assert events == [StreamSettingsReceived(3, StreamSettings()), StreamEnded(3)]


def test_settings_frame_with_end() -> None:
    conn = make()
    events = feed(conn, "0 1 begin|end sender-protocol-settings eos msgpack:{}")
    assert events == [SettingsReceived(ClientSettings()), StreamEnded(1)]
    assert conn.open_streams == 0


# ---- the rest of the API --------------------------------------------------------------------


def test_implicit_settings_and_settings_on_another_stream() -> None:
    conn = make()
    events = feed(conn, req(1, sflags="begin"))
    assert events[0] == SettingsReceived(ClientSettings(), explicit=False)
    assert conn.client_settings == ClientSettings()
    conn = make()
    events = feed(conn, "0 3 begin sender-protocol-settings eos msgpack:{'context': 'frame'}")
    assert events == [SettingsReceived(ClientSettings(context="frame"))]


def test_split_settings() -> None:
    conn = make()
    half = len(CLIENT_SETTINGS) // 2
    feed(conn, f"0 1 begin sender-protocol-settings continuation 0x{CLIENT_SETTINGS[:half].hex()}")
    assert conn.state is ConnState.SETTINGS_PARTIAL
    (event,) = feed(conn, f"0 1 0 sender-protocol-settings eos 0x{CLIENT_SETTINGS[half:].hex()}")
    assert isinstance(event, SettingsReceived) and event.settings.level == 5


def test_initial_bytes_is_the_server_settings_frame() -> None:
    conn = make()
    (frame,) = decode_frames(conn.initial_bytes())
    assert frame == Frame(0, 0, 0, FrameType.SENDER_PROTOCOL_SETTINGS, 0x2, frame.payload)
    assert ServerSettings.from_wire(unpack_map(frame.payload, "s")) == SERVER_SETTINGS


def test_partial_frame_and_byte_by_byte_input() -> None:
    conn = ready()
    data = (
        parse_line(req(1, flags="new|have-data")).encode()
        + parse_line("1 1 0 command-data eos b'xyz'").encode()
    )
    events: list[ServerEvent] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
        assert conn.partial_frame == (i + 1 not in (len(data) - 11, len(data)))
    assert [type(e) for e in events] == [RequestReady]


def test_receive_frame() -> None:
    conn = ready()
    event = only(conn.receive_frame(parse_line(req(1))), RequestReady)
    assert event.request_id == 1


def test_error_frame_helpers() -> None:
    (frame,) = decode_frames(
        error_frame(3, 4, ErrorCode.NOT_FOUND, "no such key", stream_flags=2, details={"k": 1})
    )
    assert (frame.request_id, frame.stream_id, frame.stream_flags, frame.type) == (3, 4, 2, 5)
    assert unpack_map(frame.payload, "e") == {
        "code": "not-found",
        "message": "no such key",
        "retryable": False,
        "k": 1,
    }
    (frame,) = decode_frames(connection_error_frame(ErrorCode.GOAWAY, "bye", True, in_flight=[1]))
    assert (frame.request_id, frame.stream_id) == (0, 0)
    assert unpack_map(frame.payload, "e")["in_flight"] == [1]


def test_rejected_event_retryable() -> None:
    for code, retryable in [
        (ErrorCode.OVERLOADED, True),
        (ErrorCode.SHUTTING_DOWN, True),
        (ErrorCode.TOO_MANY_STREAMS, False),
        (ErrorCode.BAD_REQUEST, False),
    ]:
        assert RequestRejected(1, 1, code, "m", False).retryable is retryable
