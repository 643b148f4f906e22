"""Model-based test of the server connection (server/protocol/server_conn.py): a Hypothesis
state machine sends frames that are valid by construction (settings, requests in one or more
parts with or without data, stream-settings, begin and end, on three streams with small
limits), answers requests the ways the front does (frames, partial frames, errors, a failed
stream, goaway), and injects at most one fault. After every step the events, the output, the
in-flight set, the per-stream state and the counts must match tests/core/connection_model.py;
each fault must end the connection with its documented code and message."""

from __future__ import annotations

from typing import Any

import pytest
from connection_model import (
    LIMITS,
    STREAMS,
    ConnectionModel,
    command_map,
    split,
)
from fault_frames import fault_frame
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from server.protocol.errors import ErrorCode
from server.protocol.events import (
    ConnectionFailed,
    RequestRejected,
    ServerEvent,
    SettingsReceived,
    StreamSettingsReceived,
)
from server.protocol.frames import Frame, decode_frames
from server.protocol.payloads import (
    ENCODINGS,
    ClientSettings,
    ErrorResponse,
    ServerSettings,
    StreamSettings,
    pack,
    unpack_map,
)
from server.protocol.server_conn import ServerConnection

SERVER_SETTINGS = ServerSettings("zplex/test", ENCODINGS, 32768, 2, LIMITS.to_wire())
CLIENT_SETTINGS = ClientSettings(encodings=("zlib", "identity"), level=5)
BEGIN, END, ENCODED = 0x1, 0x2, 0x4
REQUEST, DATA, RESPONSE, ERROR, SETTINGS, STREAM_SETTINGS = 1, 2, 3, 5, 8, 9
NEW, CONTINUATION, MORE, HAVE_DATA = 0x1, 0x2, 0x4, 0x8
EOS = 0x2  # of command-data and of the settings frames
DATA_CONTINUATION = 0x1
STREAM_ENCODINGS = {
    "identity": b"",
    "zlib": pack({"encoding": "zlib"}),
    "zstd-8mb": pack({"encoding": "zstd-8mb", "window_log": 23}),
}
#: The faults and what each must give: (code, words of the message).
FAULTS: dict[str, tuple[ErrorCode, str]] = {
    "even-stream": (ErrorCode.PROTOCOL, "may not send on stream 2"),
    "control-stream": (ErrorCode.PROTOCOL, "may not send on stream 0"),
    "even-request-id": (ErrorCode.PROTOCOL, "is not odd"),
    "duplicate-request-id": (ErrorCode.PROTOCOL, "already in flight"),
    "no-begin-on-closed-stream": (ErrorCode.PROTOCOL, "not open, without begin"),
    "unknown-request": (ErrorCode.PROTOCOL, "unknown request id"),
    "data-without-have-data": (ErrorCode.PROTOCOL, "without have-data"),
    "data-before-map": (ErrorCode.PROTOCOL, "before the command-request is complete"),
    "map-after-data": (ErrorCode.PROTOCOL, "continuation after its data began"),
    "frame-after-complete": (ErrorCode.PROTOCOL, "already complete"),
    "begin-while-incomplete": (ErrorCode.PROTOCOL, "on it is incomplete"),
    "end-while-incomplete": (ErrorCode.PROTOCOL, "ended while request"),
    "encoded-before-settings": (ErrorCode.PROTOCOL, "encoded command-data before"),
    "late-settings": (ErrorCode.PROTOCOL, "after other frames"),
    "oversize-frame": (ErrorCode.PROTOCOL, "exceeds max_frame_size 32768"),
    "wide-window": (ErrorCode.TOO_LARGE, "window over 8 MiB"),
    "reserved-type": (ErrorCode.PROTOCOL, "reserved frame type"),
    "server-frame-type": (ErrorCode.PROTOCOL, "may not send command-response"),
}


def _comparable(events: list[ServerEvent]) -> list[Any]:
    """Rejection messages are prose; everything else must match exactly."""
    return [e._replace(message="") if isinstance(e, RequestRejected) else e for e in events]


def _error(frame: Frame) -> ErrorResponse:
    assert frame.type == ERROR
    return ErrorResponse.from_wire(unpack_map(frame.payload, "error-response"))


class ServerConnectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._new_connection()

    def _new_connection(self) -> None:
        self.conn = ServerConnection(LIMITS, SERVER_SETTINGS)
        self.model = ConnectionModel()
        (first,) = decode_frames(self.conn.data_to_send())
        assert (first.type, first.stream_id, first.request_id) == (SETTINGS, 0, 0)

    # -- sending ---------------------------------------------------------------------------

    def _send(self, frame: Frame, expected: list[ServerEvent], cut: int) -> None:
        wire = frame.encode()
        cut %= len(wire)
        assert self.conn.receive_data(wire[:cut]) == []
        events = self.conn.receive_data(wire[cut:])
        assert _comparable(events) == _comparable(expected)
        for e in events:
            event(f"rejected {e.code}" if isinstance(e, RequestRejected) else type(e).__name__)
        assert self.conn.data_to_send() == b""  # valid input is answered by the front only

    def _stream_flags(self, data: st.DataObject, sid: int, may_end: bool) -> tuple[int, bool]:
        """begin when the stream is closed, maybe when nothing on it is incomplete; end maybe
        when nothing on it will be incomplete."""
        stream = self.model.streams[sid]
        if stream.state == "closed":
            begin = True
        elif self.model.incomplete(sid):
            begin = False
        else:
            begin = data.draw(st.booleans(), label="begin")
        end = may_end and data.draw(st.booleans(), label="end")
        return (BEGIN if begin else 0) | (END if end else 0), begin

    @initialize(explicit=st.booleans(), cut=st.integers(0, 200))
    def settings(self, explicit: bool, cut: int) -> None:
        if not explicit:
            return
        payload = pack(CLIENT_SETTINGS.to_wire())
        events = self.model.enter(1, begin=True, is_settings=True)
        events.append(SettingsReceived(CLIENT_SETTINGS))
        self._send(Frame(0, 1, BEGIN, SETTINGS, EOS, payload), events, cut)

    @precondition(lambda self: self.model.free_ids())
    @rule(
        data=st.data(),
        name=st.sampled_from(["echo", "get", "generate"]),
        pad=st.sampled_from([0, 0, 0, 10, 120]),
        cuts=st.lists(st.integers(0, 200), max_size=2),
        have_data=st.booleans(),
        bad_map=st.sampled_from([False] * 9 + [True]),
        cut=st.integers(0, 200),
    )
    def start_request(
        self,
        data: st.DataObject,
        name: str,
        pad: int,
        cuts: list[int],
        have_data: bool,
        bad_map: bool,
        cut: int,
    ) -> None:
        model = self.model
        sid = data.draw(st.sampled_from(STREAMS), label="stream")
        rid = data.draw(st.sampled_from(model.free_ids()), label="request id")
        command = pack([name]) if bad_map else command_map(name, rid, pad)
        parts = split(command, cuts)
        completes = len(parts) == 1 and not have_data
        sflags, begin = self._stream_flags(data, sid, completes and not model.incomplete(sid))
        events = model.enter(sid, begin)
        before = len(events)
        request = model.new_request(rid, sid, have_data, parts)
        part = model.map_part(request, events)
        flags = NEW | (MORE if request.parts else 0) | (HAVE_DATA if have_data else 0)
        if sflags & END:
            model.end(sid, events, before)
        self._send(Frame(rid, sid, sflags, REQUEST, flags, part), events, cut)

    @precondition(lambda self: self.model.free_ids())
    @rule(data=st.data(), count=st.integers(1, 4), sid=st.sampled_from(STREAMS))
    def pipeline(self, data: st.DataObject, count: int, sid: int) -> None:
        """Several one-frame requests on one stream in a row (reaches the in-flight limits)."""
        for _ in range(count):
            if not self.model.free_ids():
                return
            self._one_frame_request(data, sid)

    def _one_frame_request(self, data: st.DataObject, sid: int) -> None:
        model = self.model
        rid = model.free_ids()[0]
        command = command_map("echo", rid, 0)
        sflags, begin = self._stream_flags(data, sid, not model.incomplete(sid))
        events = model.enter(sid, begin)
        before = len(events)
        request = model.new_request(rid, sid, False, [command])
        model.map_part(request, events)
        if sflags & END:
            model.end(sid, events, before)
        self._send(Frame(rid, sid, sflags, REQUEST, NEW, command), events, 0)

    @precondition(lambda self: self.model.in_phase("map"))
    @rule(data=st.data(), cut=st.integers(0, 200))
    def continue_map(self, data: st.DataObject, cut: int) -> None:
        model = self.model
        request = model.requests[data.draw(st.sampled_from(model.in_phase("map")))]
        sid = request.sid
        completes = len(request.parts) == 1 and not request.have_data
        others = [r for r in model.incomplete(sid) if r != request.rid]
        end = completes and not others and data.draw(st.booleans(), label="end")
        events = model.enter(sid, begin=False)
        before = len(events)
        part = model.map_part(request, events)
        flags = CONTINUATION | (MORE if request.parts else 0)
        flags |= HAVE_DATA if request.have_data else 0
        if end:
            model.end(sid, events, before)
        self._send(Frame(request.rid, sid, END if end else 0, REQUEST, flags, part), events, cut)

    @precondition(lambda self: self.model.in_phase("data"))
    @rule(data=st.data(), payload=st.binary(max_size=40), eos=st.booleans(), cut=st.integers())
    def send_data(self, data: st.DataObject, payload: bytes, eos: bool, cut: int) -> None:
        model = self.model
        request = model.requests[data.draw(st.sampled_from(model.in_phase("data")))]
        sid = request.sid
        encoded = model.streams[sid].encoded and data.draw(st.booleans(), label="encoded")
        others = [r for r in model.incomplete(sid) if r != request.rid]
        end = eos and not others and data.draw(st.booleans(), label="end")
        events = model.enter(sid, begin=False)
        before = len(events)
        events += model.data_frame(request, payload, encoded, eos)
        if end:
            model.end(sid, events, before)
        sflags = (END if end else 0) | (ENCODED if encoded else 0)
        flags = EOS if eos else DATA_CONTINUATION
        self._send(Frame(request.rid, sid, sflags, DATA, flags, payload), events, cut)

    @rule(
        data=st.data(),
        sid=st.sampled_from(STREAMS),
        encoding=st.sampled_from(sorted(STREAM_ENCODINGS)),
        cut=st.integers(0, 200),
    )
    def stream_settings(self, data: st.DataObject, sid: int, encoding: str, cut: int) -> None:
        model = self.model
        sflags, begin = self._stream_flags(data, sid, not model.incomplete(sid))
        events = model.enter(sid, begin)
        before = len(events)
        payload = STREAM_ENCODINGS[encoding]
        settings = StreamSettings.from_wire(unpack_map(payload, "s")) if payload else None
        events.append(StreamSettingsReceived(sid, settings or StreamSettings()))
        model.streams[sid].encoded = encoding != "identity"
        if sflags & END:
            model.end(sid, events, before)
        self._send(Frame(0, sid, sflags, STREAM_SETTINGS, EOS, payload), events, cut)

    # -- answering -------------------------------------------------------------------------

    @precondition(lambda self: self.model.answerable())
    @rule(
        data=st.data(),
        how=st.sampled_from(["frames", "partial", "error"]),
        stream_open=st.booleans(),
    )
    def answer(self, data: st.DataObject, how: str, stream_open: bool) -> None:
        model = self.model
        request = model.requests[data.draw(st.sampled_from(model.answerable()))]
        rid, sid = request.rid, request.sid
        if request.reported:
            how = "error"  # refused early: the front answers with the refusal
        stream = model.streams[sid]
        if how == "error":
            self.conn.send_error(sid, rid, ErrorCode.NOT_FOUND, "no", end_stream=not stream_open)
            (frame,) = decode_frames(self.conn.data_to_send())
            begin = 0 if stream.server_open else BEGIN
            assert (frame.request_id, frame.stream_id) == (rid, sid + 1)
            assert frame.stream_flags == begin | (0 if stream_open else END)
            assert _error(frame).code == "not-found"
        else:
            wire = Frame(rid, sid + 1, 0, RESPONSE, CONTINUATION, b"body").encode()
            done = how == "frames"
            self.conn.send_frames(sid, rid, wire, done=done, stream_open=stream_open)
            assert self.conn.data_to_send() == wire
            if not done:
                request.partial = True
                stream.server_open = stream_open
                return
        stream.server_open = stream_open
        model.answered(rid)

    @rule(sid=st.sampled_from(STREAMS))
    def fail_stream(self, sid: int) -> None:
        """What the front does when the stream's worker is lost."""
        model = self.model
        expected = model.done_unanswered_on(sid)
        assert self.conn.fail_stream(sid, ErrorCode.WORKER_LOST, "lost") == expected
        frames = decode_frames(self.conn.data_to_send())
        assert [f.request_id for f in frames] == expected
        stream = model.streams[sid]
        for n, (rid, frame) in enumerate(zip(expected, frames, strict=True)):
            last = n == len(expected) - 1
            begin = 0 if stream.server_open else BEGIN
            assert frame.stream_id == sid + 1
            assert frame.stream_flags == begin | (END if last else 0)
            error = _error(frame)
            assert error.code == "worker-lost"
            assert error.retryable is not model.requests[rid].partial
            event(
                "worker-lost after part of a response"
                if model.requests[rid].partial
                else "worker-lost"
            )
            stream.server_open = not last
            model.answered(rid)

    @rule(sid=st.sampled_from(STREAMS))
    def end_server_stream(self, sid: int) -> None:
        stream = self.model.streams[sid]
        self.conn.end_server_stream(sid)
        frames = decode_frames(self.conn.data_to_send())
        if stream.server_open:
            (frame,) = frames
            assert (frame.stream_id, frame.stream_flags, frame.type) == (
                sid + 1,
                END,
                STREAM_SETTINGS,
            )
        else:
            assert frames == []
        stream.server_open = False

    @precondition(lambda self: not self.model.goaway and self.model.requests)
    @rule(now=st.sampled_from([False, False, True]))
    def goaway(self, now: bool) -> None:
        """Only sometimes, and with requests in flight: later requests are all refused."""
        if not now:
            return
        expected = self.model.unanswered()
        assert self.conn.send_goaway("bye") == expected
        (frame,) = decode_frames(self.conn.data_to_send())
        assert (frame.request_id, frame.stream_id) == (0, 0)
        error = _error(frame)
        assert (error.code, error.retryable) == ("goaway", True)
        assert error.details == {"in_flight": expected}
        self.model.goaway = True

    # -- one fault ---------------------------------------------------------------------------

    @rule(data=st.data(), kind=st.sampled_from(sorted(FAULTS)), cut=st.integers(0, 200))
    def fault(self, data: st.DataObject, kind: str, cut: int) -> None:
        wire = fault_frame(self.model, kind, data)
        if wire is None:
            return  # this fault needs a state the run has not reached
        event(f"fault {kind}")
        cut %= len(wire)
        events = self.conn.receive_data(wire[:cut]) + self.conn.receive_data(wire[cut:])
        code, words = FAULTS[kind]
        failures = [e for e in events if isinstance(e, ConnectionFailed)]
        assert failures == events[-1:], events
        failed = failures[0]
        assert failed.code is code
        assert words in failed.message, (kind, failed.message)
        (frame,) = decode_frames(failed.data)
        assert (frame.request_id, frame.stream_id, frame.type) == (0, 0, ERROR)
        assert _error(frame).code == code.value
        assert self.conn.data_to_send() == failed.data
        assert self.conn.failed
        # Nothing is accepted after it, valid or not.
        valid = Frame(1, 1, BEGIN, REQUEST, NEW, command_map("echo", 1, 0)).encode()
        assert self.conn.receive_data(valid + bytes(cut)) == []
        assert self.conn.data_to_send() == b""
        # The run goes on with a new connection (one fault per connection).
        self._new_connection()

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def bookkeeping_matches_the_model(self) -> None:
        conn, model = self.conn, self.model
        assert not conn.failed
        assert conn.in_flight_ids() == model.unanswered()
        assert conn.incomplete_ids() == model.incomplete()
        assert conn.inflight == model.inflight()
        assert conn.open_streams == model.open_streams()
        assert conn.goaway is model.goaway
        assert conn.drained is (model.goaway and not model.unanswered())
        for sid, expected in model.streams.items():
            # White-box: the per-stream record is the connection's own.
            stream = conn._streams.get(sid)
            if stream is None:
                assert (expected.state, expected.inflight) == ("closed", 0)
                continue
            assert stream.state.value == expected.state, sid
            assert stream.inflight == expected.inflight, sid
            assert stream.encoded_data is expected.encoded, sid
            assert stream.server_open is expected.server_open, sid
            assert sorted(stream.incomplete) == model.incomplete(sid), sid


TestServerConnectionModel = ServerConnectionMachine.TestCase


@pytest.mark.slow
class TestServerConnectionModelLongRuns(ServerConnectionMachine.TestCase):
    """``make fuzz``: runs of up to 400 steps (a fifth of the profile's examples)."""

    settings = settings(
        stateful_step_count=400, max_examples=max(10, settings.default.max_examples // 5)
    )
