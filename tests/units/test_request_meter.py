"""The front's request meter (counts, errors by code, latency buckets) and the core's
reading of a response's final error code."""

from __future__ import annotations

from server.protocol.error_frames import error_frame, final_error_code
from server.protocol.errors import ErrorCode
from server.protocol.frames import FrameType, encode_frame
from server.request_meter import LATENCY_BUCKETS_S, REJECTED, Pending, RequestMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_errors_and_latency_by_command() -> None:
    clock = Clock()
    meter = RequestMeter(clock)
    pending: dict[int, Pending] = {}
    meter.begin(pending, 1, 1, "get")
    meter.begin(pending, 3, 1, "get")
    meter.begin(pending, 5, 3, REJECTED)
    clock.now += 0.003
    meter.answered(pending, 1, None)
    meter.answered(pending, 3, "not-found")
    meter.answered(pending, 5, "unknown-command")
    meter.answered(pending, 7, None)  # not in flight: ignored
    assert pending == {}
    get = meter.to_map()["commands"]["get"]
    assert get["requests"] == 2
    assert get["errors"] == {"not-found": 1}
    assert sum(get["buckets"]) == 2
    assert get["buckets"][LATENCY_BUCKETS_S.index(0.005)] == 2  # 3 ms: the 5 ms bucket
    assert abs(get["latency_sum_s"] - 0.006) < 1e-9
    assert meter.commands[REJECTED].errors == {"unknown-command": 1}


def test_a_slow_answer_lands_past_every_bound() -> None:
    clock = Clock()
    meter = RequestMeter(clock)
    pending: dict[int, Pending] = {}
    meter.begin(pending, 1, 1, "generate")
    clock.now += LATENCY_BUCKETS_S[-1] + 1
    meter.answered(pending, 1, None)
    assert meter.commands["generate"].buckets[-1] == 1


def test_a_failed_stream_answers_only_its_own_requests() -> None:
    meter = RequestMeter(Clock())
    pending: dict[int, Pending] = {}
    meter.begin(pending, 1, 1, "get")
    meter.begin(pending, 3, 1, "echo")
    meter.begin(pending, 5, 3, "get")
    meter.stream_failed(pending, 1, "worker-lost")
    assert list(pending) == [5]
    assert meter.commands["get"].errors == {"worker-lost": 1}
    assert meter.commands["echo"].errors == {"worker-lost": 1}
    meter.connection_failed("protocol")
    assert meter.to_map()["connection_errors"] == {"protocol": 1}


def test_final_error_code_reads_the_last_frame() -> None:
    response = encode_frame(1, 2, 0, FrameType.COMMAND_RESPONSE, 0, b"x" * 100)
    error = error_frame(1, 2, ErrorCode.NOT_FOUND, "no such key")
    assert final_error_code(response) is None
    assert final_error_code(error) == "not-found"
    assert final_error_code(response + error) == "not-found"  # a response that failed midway
    assert final_error_code(error + response) is None
    assert final_error_code(b"") is None
    assert final_error_code(error[:-1]) is None  # not a whole frame
