"""The fronts of one server ask each other for their figures (``stats`` answers with every
front's), over a private ZeroMQ ``ipc://`` endpoint per front.

Front ``k`` answers on ``ipc://<dir>/front<k>.peers`` (a ROUTER); a front that gathers keeps
one DEALER to each other front and waits at most a timeout for each: a front that is down or
restarting is left out of the answer rather than delaying it. Requests carry a token, so a
late reply to an earlier request is never taken for the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
import zmq.asyncio

log = logging.getLogger("zplex.peers")

PEER_TIMEOUT_S = 1.0
_TOKEN = struct.Struct("!Q")


def peer_endpoint(ipc_dir: str, index: int) -> str:
    return f"ipc://{ipc_dir}/front{index}.peers"


class FrontPeers:
    def __init__(
        self, ipc_dir: str, index: int, count: int, figures: Callable[[], dict[str, Any]]
    ) -> None:
        self.ipc_dir = ipc_dir
        self.index = index
        self.count = count
        self.figures = figures
        self.ctx = zmq.asyncio.Context()
        self._server: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._peers: dict[int, zmq.asyncio.Socket] = {}
        self._next_token = 1

    def start(self) -> None:
        if self.count < 2:
            return
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(peer_endpoint(self.ipc_dir, self.index))
        self._server = sock
        self._task = asyncio.get_running_loop().create_task(self._answer(sock))

    async def _answer(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            parts = await sock.recv_multipart()
            if len(parts) != 2 or len(parts[1]) != _TOKEN.size:
                log.error("malformed request from a peer front")
                continue
            try:
                figures = msgpack.packb(self.figures(), use_bin_type=True)
            except Exception:  # a bug here must not stop the answering task
                log.exception("cannot gather this front's figures")
                continue
            await sock.send_multipart([parts[0], parts[1], figures])

    def _peer(self, index: int) -> zmq.asyncio.Socket:
        sock = self._peers.get(index)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 16)
            sock.connect(peer_endpoint(self.ipc_dir, index))
            self._peers[index] = sock
        return sock

    async def _ask(self, index: int, timeout: float) -> dict[str, Any] | None:
        token = _TOKEN.pack(self._next_token)
        self._next_token += 1
        sock = self._peer(index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(sock.send(token, zmq.NOBLOCK), timeout)
            while True:
                parts = await asyncio.wait_for(sock.recv_multipart(), deadline - loop.time())
                if len(parts) == 2 and parts[0] == token:
                    figures: dict[str, Any] = msgpack.unpackb(parts[1], raw=False)
                    return figures
        except (TimeoutError, zmq.ZMQError, ValueError):
            return None

    async def gather(self, timeout: float = PEER_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every front's figures in front order: this one's now, the others' as they answer
        within ``timeout`` (a front that does not is left out)."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(*(self._ask(i, timeout) for i in others))
        by_index: dict[int, dict[str, Any]] = {self.index: self.figures()}
        for i, answer in zip(others, answers, strict=True):
            if answer is not None:
                by_index[i] = answer
        return [by_index[i] for i in sorted(by_index)]

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for sock in [*self._peers.values(), self._server]:
            if sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    sock.close(linger=0)
        self.ctx.term()
