"""Workers are isolated from each other, on real processes: while one worker is stopped the
others serve, and a worker that stops answering (not only one that exits) is declared lost,
its requests get worker-lost, and it is replaced. (That a stalled worker's full queue delays
no message to another worker is proven on real sockets in tests/units/test_link.py.)"""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path

import pytest
from serverproc import running_server
from test_worker_loss import RawClient

from server.protocol.events import ResponseComplete, ResponseError

pytestmark = pytest.mark.timeout(120)


def test_a_worker_that_stops_answering_is_lost_and_replaced(tmp_path: Path) -> None:
    with running_server(tmp_path, "--worker-silence", "2", workers=2) as srv, ExitStack() as stack:
        w0, w1 = srv.worker_pids()
        client = stack.enter_context(RawClient(srv))
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)  # on w0
        assert isinstance(client.outcome(client.request(3, "echo")), ResponseComplete)  # on w1
        os.kill(w0, signal.SIGSTOP)  # alive, but silent: no exit for the front to see
        held = client.request(1, "generate", size=1000)
        for _ in range(5):  # meanwhile the other worker serves
            assert isinstance(client.outcome(client.request(3, "echo")), ResponseComplete)
        lost = client.outcome(held, limit=30)
        assert isinstance(lost, ResponseError)
        assert lost.error.code == "worker-lost" and lost.error.retryable
        # It was killed and replaced; the stream goes on, and w1 was never disturbed.
        srv.wait_for(lambda: w0 not in srv.worker_pids() and len(srv.worker_pids()) == 2)
        assert w1 in srv.worker_pids()
        assert isinstance(client.outcome(client.request(1, "echo")), ResponseComplete)
