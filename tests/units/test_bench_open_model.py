"""The bench's open model counts latency from each request's intended send time, so the time a
request waits in the client for a free slot (coordinated omission) is in the percentiles.

Tested through the command line only (``zplex bench --connect … --rate … --json``) against the
fake server answering every request exactly ``DELAY_S`` after it arrives. With one stream the
client keeps at most ``SLOTS`` (the server's ``max_inflight_per_stream``) requests outstanding, so
at ``RATE`` requests per second the schedule falls behind: request ``k`` cannot be sent before
request ``k - SLOTS`` was answered, hence (``due(k) = k / RATE``)

    latency(k) >= due(k - SLOTS) + DELAY_S - due(k) + DELAY_S = 2 * DELAY_S - SLOTS / RATE

and, one more generation on, ``3 * DELAY_S - 2 * SLOTS / RATE``. Those are lower bounds that
hold on any machine (a slower one only adds); a bench that measured from the actual send time
would report about ``DELAY_S`` for every request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeserver import FakeServerThread

from server.cli import main
from server.protocol.limits import Limits

DELAY_S = 0.2
SLOTS = 32
RATE = 1000.0
REQUESTS = 3 * SLOTS  # three generations of SLOTS requests


@pytest.mark.timeout(60)
def test_open_model_latency_includes_the_wait_for_a_slot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "open.json"
    limits = Limits(max_inflight_per_stream=SLOTS)
    with FakeServerThread(limits=limits, delay_s=DELAY_S, with_stats=True) as fake:
        args = ["bench", "--connect", f"127.0.0.1:{fake.port}", "-w", "generate:text"]
        args += ["--generate-size", "1K", "--policies", "request", "--encoding", "identity"]
        args += ["-c", "1", "-s", "1", "--warmup", "0", "-n", str(REQUESTS)]
        args += ["--rate", str(RATE), "--json", str(out)]
        assert main(args) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["metadata"]["config"]["model"] == "open"
    (run,) = data["runs"]
    assert run["errors"] == {} and run["requests"] == REQUESTS
    latency_s = {name: ms / 1000 for name, ms in run["latency_ms"].items()}
    second_generation = 2 * DELAY_S - SLOTS / RATE  # 0.368 s
    third_generation = 3 * DELAY_S - 2 * SLOTS / RATE  # 0.536 s
    # The median request is of the second generation, the 99th percentile of the third; the
    # histogram's resolution is far finer than the 2% margin.
    assert latency_s["p50"] >= 0.98 * second_generation
    assert latency_s["p99"] >= 0.98 * third_generation
