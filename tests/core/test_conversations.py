"""Properties of the server connection on input that gets far: likely frames (valid flags,
small id pools, now and then a frame dropped or repeated) that complete and reject requests,
and interleaved valid streams whose every request must arrive with exactly its data."""

from __future__ import annotations

import itertools
from typing import Any

from event_checks import ECHO_MAP, check_events, chunks, connection, feed_all
from hypothesis import Phase, find, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from server.protocol.client_conn import ClientConnection
from server.protocol.encoding import Decoder, stream_settings_for
from server.protocol.events import (
    ConnectionFailed,
    RequestReady,
    RequestRejected,
    ServerEvent,
    StreamEnded,
    StreamReset,
    StreamSettingsReceived,
)
from server.protocol.frames import Frame, decode_frames
from server.protocol.payloads import CONTEXTS, ENCODINGS, ClientSettings, pack

PROFILES = list(itertools.product(ENCODINGS, CONTEXTS))


# Requests of one to three frames with valid flags, on streams 1, 3 and 5 (sometimes 2), with
# begin or end here and there and an occasional frame dropped or repeated, after frames opening
# streams 1 and 3: most sequences complete requests and reach the limits (plain random flags
# end 9 in 10 sequences at their first frame).
OPENING = Frame(0, 1, 1, 9, 2).encode() + Frame(0, 3, 1, 9, 2).encode()


@st.composite
def likely_frames(draw: st.DrawFn) -> list[Frame]:
    frames: list[Frame] = []
    for n in range(draw(st.integers(0, 8))):
        rid = draw(st.sampled_from([2 * n + 1] * 6 + [1, 2]))
        sid = draw(st.sampled_from([1, 1, 3, 3, 5, 2]))
        shape = draw(st.sampled_from(["one", "two", "data", "settings"]))
        begin = draw(st.sampled_from([0, 0, 0, 1]))
        end = draw(st.sampled_from([0, 0, 0, 2]))
        if shape == "one":
            unit = [Frame(rid, sid, begin | end, 1, 0x1, ECHO_MAP)]
        elif shape == "two":
            unit = [
                Frame(rid, sid, begin, 1, 0x1 | 0x4, ECHO_MAP[:5]),
                Frame(rid, sid, end, 1, 0x2, ECHO_MAP[5:]),
            ]
        elif shape == "data":
            body = draw(st.binary(max_size=30))
            unit = [
                Frame(rid, sid, begin, 1, 0x1 | 0x8, ECHO_MAP),
                Frame(rid, sid, end, 2, 0x2, body),
            ]
        else:
            unit = [Frame(0, sid, begin | end, 9, 0x2, pack({"encoding": "zlib"}))]
        fault = draw(st.sampled_from(["none"] * 8 + ["drop", "repeat"]))
        if fault == "drop":
            unit.pop(0)
        elif fault == "repeat":
            unit.append(unit[-1])
        frames += unit
    return frames


@given(likely_frames(), st.lists(st.integers(0, 5000), max_size=6))
def test_likely_frames_any_split_and_bookkeeping(sequence: list[Frame], cuts: list[int]) -> None:
    wire = OPENING + b"".join(f.encode() for f in sequence)
    conn = connection(max_streams=2, max_inflight_per_stream=2)
    whole = conn.receive_data(wire)
    for e in whole:
        note(type(e).__name__)
    split = feed_all(connection(max_streams=2, max_inflight_per_stream=2), chunks(wire, cuts))
    assert split == whole
    check_events(whole, conn)


def test_likely_frames_reach_complete_requests_and_rejections() -> None:
    """The strategy is not shallow: it completes requests, with data, and rejects some."""

    def events_of(sequence: list[Frame]) -> list[ServerEvent]:
        return connection(max_streams=2, max_inflight_per_stream=2).receive_data(
            OPENING + b"".join(f.encode() for f in sequence)
        )

    strategy = likely_frames()
    settings_ = settings(database=None, max_examples=5000, phases=[Phase.generate])
    with_data = find(
        strategy,
        lambda seq: any(isinstance(e, RequestReady) and e.data for e in events_of(seq)),
        settings=settings_,
    )
    assert any(isinstance(e, RequestReady) for e in events_of(with_data))
    find(
        strategy,
        lambda seq: any(isinstance(e, RequestRejected) for e in events_of(seq)),
        settings=settings_,
    )


conversation_ops = st.lists(
    st.tuples(
        st.sampled_from([1, 3, 5]),
        st.sampled_from(["request", "request", "request", "encoding", "end"]),
        st.one_of(
            st.none(),
            st.binary(max_size=200),
            st.builds(lambda n: b"xyz" * n, st.integers(0, 3000)),
        ),
        st.sampled_from(PROFILES),
        st.booleans(),
    ),
    min_size=1,
    max_size=14,
)


@given(
    conversation_ops,
    st.lists(st.integers(0, 2), max_size=60),
    st.lists(st.integers(0, 1 << 17), max_size=8),
)
def test_interleaved_streams_deliver_every_request_and_its_data(
    ops: list[tuple[int, str, bytes | None, tuple[str, str], bool]],
    order: list[int],
    cuts: list[int],
) -> None:
    """Streams interleaved frame by frame, encodings changing, streams ended and begun again:
    every request arrives once, in order on its stream, with its name, arguments and exactly
    the data the client sent once the worker-side decoder has read it."""
    client = ClientConnection(ClientSettings())
    queues: dict[int, list[Frame]] = {1: [], 3: [], 5: []}
    sent: dict[int, tuple[int, dict[str, Any], bytes | None]] = {}
    for n, (sid, kind, body, (encoding, context), end) in enumerate(ops):
        if kind == "encoding":
            data = client.set_data_encoding(sid, stream_settings_for(encoding, 1, context))
        elif kind == "end":
            data = client.end_stream(sid)
        else:
            rid, data = client.send_request(sid, "echo", {"n": n}, body, end_stream=end)
            sent[rid] = (sid, {"n": n}, body)
        queues[sid] += decode_frames(data)
    # Interleave the streams' frames (each stream's own order kept).
    frames: list[Frame] = []
    picks = iter(order)
    while any(queues.values()):
        ready_streams = [sid for sid in (1, 3, 5) if queues[sid]]
        sid = ready_streams[next(picks, 0) % len(ready_streams)]
        frames.append(queues[sid].pop(0))
    wire = client.initiate() + b"".join(f.encode() for f in frames)
    conn = connection()
    events = feed_all(conn, chunks(wire, cuts))
    check_events(events, conn)
    assert not any(isinstance(e, ConnectionFailed | RequestRejected) for e in events)
    decoders: dict[int, Decoder] = {}
    got: list[int] = []
    for event in events:
        if isinstance(event, StreamSettingsReceived):
            decoders.pop(event.stream_id, None)
            if event.settings.encoding != "identity":
                decoders[event.stream_id] = Decoder(event.settings)
        elif isinstance(event, StreamEnded | StreamReset):
            decoders.pop(event.stream_id, None)
        elif isinstance(event, RequestReady):
            sid, args, body = sent[event.request_id]
            assert (event.stream_id, event.name, event.args) == (sid, "echo", args)
            assert event.has_data is (body is not None)
            data = b"".join(
                decoders[sid].decode(c.payload, 1 << 30) if c.encoded else c.payload
                for c in event.data
            )
            assert data == (body or b"")
            note("encoded data" if any(c.encoded for c in event.data) else "request")
            got.append(event.request_id)
            if event.end_stream:
                decoders.pop(sid, None)
    assert sorted(got) == sorted(sent)
    for sid in (1, 3, 5):
        on_stream = [rid for rid in got if sent[rid][0] == sid]
        assert on_stream == sorted(on_stream)  # ids rise with sending order on a stream
    assert conn.in_flight_ids() == sorted(sent)
