"""The front's ZeroMQ link with real sockets in one process: a worker whose queue is full
gets a backlog of its own, announced, while another worker's messages go straight through;
the backlog drains in order once the worker reads again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import zmq

from server.ipc.batch import decode_batch
from server.link import WorkerLink, router_socket

HWM = 4


def test_a_stalled_worker_delays_no_other_worker(tmp_path: Path) -> None:
    async def main() -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        endpoint = f"ipc://{tmp_path}/link"
        front = router_socket(ctx)
        front.setsockopt(zmq.SNDHWM, HWM)
        front.bind(endpoint)
        workers = {}
        for name in (b"w0", b"w1"):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, name)
            sock.setsockopt(zmq.RCVHWM, HWM)
            sock.connect(endpoint)
            sock.send(b"")  # so that the front knows the identity
            workers[name] = sock
        loop = asyncio.get_running_loop()
        backlog_events: list[tuple[bytes, bool]] = []
        link = WorkerLink(
            loop,
            front,
            lambda identity, message: None,
            lambda i, on: backlog_events.append((i, on)),
        )
        await asyncio.sleep(0.2)  # connections made; the empty hellos are dropped as malformed
        try:
            # w0 reads nothing: its queue fills and the rest waits in its backlog.
            for n in range(200):
                link.send(b"w0", [b"x" * 1000, str(n).encode()])
                link.flush()
            await asyncio.sleep(0.05)
            assert backlog_events == [(b"w0", True)] and link.backlog(b"w0") > 0
            # w1 reads: everything sent to it arrives, in order, while w0 stays stalled.
            got_w1: list[int] = []
            deadline = loop.time() + 10
            for n in range(200):
                link.send(b"w1", [b"y", str(n).encode()])
                link.flush()
                await asyncio.sleep(0)
                while workers[b"w1"].poll(0):
                    got_w1 += [int(m[1]) for m in decode_batch(workers[b"w1"].recv())]
            while len(got_w1) < 200 and loop.time() < deadline:
                while workers[b"w1"].poll(0):
                    got_w1 += [int(m[1]) for m in decode_batch(workers[b"w1"].recv())]
                await asyncio.sleep(0.01)
            assert got_w1 == list(range(200))
            assert link.backlog(b"w0") > 0
            # w0 reads again: its backlog drains, in order.
            got_w0: list[int] = []
            deadline = loop.time() + 10
            while len(got_w0) < 200 and loop.time() < deadline:
                while workers[b"w0"].poll(0):
                    got_w0 += [int(m[1]) for m in decode_batch(workers[b"w0"].recv())]
                await asyncio.sleep(0.01)
            assert got_w0 == list(range(200))
            assert (b"w0", False) in backlog_events and link.backlog(b"w0") == 0
        finally:
            link.close()
            for sock in workers.values():
                sock.close(linger=0)
            ctx.term()

    asyncio.run(main())
