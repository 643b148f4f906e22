"""Frames that break exactly one rule of PROTOCOL.md, built from the current state of the
connection model (tests/core/connection_model.py), for the model-based test's injected faults.

Stream 7 is never used by the valid frames, so it is closed whenever a fault needs a stream
that nothing else depends on (a fault sent there with ``begin`` breaks no other rule first).
"""

from __future__ import annotations

from connection_model import LIMITS, ConnectionModel, command_map
from hypothesis import strategies as st

from server.protocol.frames import Frame, pack_header
from server.protocol.payloads import pack

SPARE_STREAM = 7
BEGIN, END, ENCODED = 0x1, 0x2, 0x4
REQUEST, DATA, RESPONSE, SETTINGS, STREAM_SETTINGS = 1, 2, 3, 8, 9
NEW, CONTINUATION, HAVE_DATA = 0x1, 0x2, 0x8
EOS = 0x2
ECHO = command_map("echo", 1, 0)


def _new(rid: int, sid: int, sflags: int = BEGIN) -> bytes:
    return Frame(rid, sid, sflags, REQUEST, NEW, ECHO).encode()


def _pick(data: st.DataObject, choices: list[int]) -> int | None:
    return data.draw(st.sampled_from(choices), label="target") if choices else None


def fault_frame(model: ConnectionModel, kind: str, data: st.DataObject) -> bytes | None:
    """The bytes of one faulty frame of ``kind``, or None if the model's state has nothing
    for it to break (e.g. no request is assembling its map)."""
    streams = model.streams
    requests = model.requests
    open_ids = [r.rid for r in requests.values() if streams[r.sid].state != "closed"]
    if kind == "even-stream":
        return _new(1, 2)
    if kind == "control-stream":
        return _new(1, 0)
    if kind == "even-request-id":
        return _new(data.draw(st.sampled_from([0, 2, 0xFFFE]), label="rid"), SPARE_STREAM)
    if kind == "duplicate-request-id":
        rid = _pick(data, sorted(requests))
        return None if rid is None else _new(rid, SPARE_STREAM)
    if kind == "no-begin-on-closed-stream":
        return _new(model.free_ids()[0] if model.free_ids() else 1, SPARE_STREAM, sflags=0)
    if kind == "unknown-request":
        unknown = 15  # never used by the valid frames
        return Frame(unknown, SPARE_STREAM, BEGIN, REQUEST, CONTINUATION, ECHO).encode()
    if kind == "data-without-have-data":
        rid = _pick(data, [r for r in open_ids if not requests[r].have_data])
        if rid is None:
            return None
        return Frame(rid, requests[rid].sid, 0, DATA, EOS, b"d").encode()
    if kind == "data-before-map":
        rid = _pick(data, [r for r in model.in_phase("map") if requests[r].have_data])
        if rid is None:
            return None
        return Frame(rid, requests[rid].sid, 0, DATA, EOS, b"d").encode()
    if kind == "map-after-data":
        rid = _pick(data, model.in_phase("data"))
        if rid is None:
            return None
        flags = CONTINUATION | HAVE_DATA
        return Frame(rid, requests[rid].sid, 0, REQUEST, flags, b"").encode()
    if kind == "frame-after-complete":
        rid = _pick(data, [r for r in model.in_phase("done") if r in open_ids])
        if rid is None:
            return None
        flags = CONTINUATION | (HAVE_DATA if requests[rid].have_data else 0)
        return Frame(rid, requests[rid].sid, 0, REQUEST, flags, b"").encode()
    if kind in ("begin-while-incomplete", "end-while-incomplete"):
        rid = _pick(data, model.incomplete())
        if rid is None:
            return None
        sflags = BEGIN if kind == "begin-while-incomplete" else END
        return Frame(0, requests[rid].sid, sflags, STREAM_SETTINGS, EOS, b"").encode()
    if kind == "encoded-before-settings":
        plain = [r for r in model.in_phase("data") if not streams[requests[r].sid].encoded]
        rid = _pick(data, plain)
        if rid is None:
            return None
        return Frame(rid, requests[rid].sid, ENCODED, DATA, EOS, b"d").encode()
    if kind == "late-settings":
        if not model.settings_done:
            return None
        return Frame(0, SPARE_STREAM, BEGIN, SETTINGS, EOS, pack({})).encode()
    if kind == "oversize-frame":
        return pack_header(LIMITS.max_frame_size + 1, 1, SPARE_STREAM, BEGIN, REQUEST, NEW)
    if kind == "wide-window":
        payload = pack({"encoding": "zstd-8mb", "window_log": 24})
        return Frame(0, SPARE_STREAM, BEGIN, STREAM_SETTINGS, EOS, payload).encode()
    if kind == "reserved-type":
        return Frame(0, SPARE_STREAM, BEGIN, 0x4, 0, b"").encode()
    if kind == "server-frame-type":
        return Frame(1, SPARE_STREAM, BEGIN, RESPONSE, EOS, b"").encode()
    raise AssertionError(f"unknown fault {kind}")
