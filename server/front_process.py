"""A front's life as a process: started by the supervisor (``server.cluster``), it serves
until it is asked to stop, drains, and exits.

It is asked to stop by a signal or by the supervisor's message on its channel
(:class:`server.stopping.Stopping` says how the two combine), and it stops by itself when
the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import zmq

from server.app import READY_TIMEOUT_S, FrontApp
from server.cluster import Report
from server.config import ServeConfig
from server.stdio import serve_stdio
from server.stopping import Stopping

log = logging.getLogger("zplex.front")

#: How often a front checks that its supervisor is still there.
PARENT_CHECK_S = 1.0


async def run_front(spec: dict[str, Any], report: Report, stopping: Stopping) -> int:
    """Serve as front ``spec["index"]`` until ``stopping`` says to drain."""
    config: ServeConfig = spec["config"]
    app = FrontApp(spec, report)
    starting = asyncio.ensure_future(app.start(tcp=not config.stdio))
    stopped = asyncio.ensure_future(stopping.drain.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # asked to stop during start-up
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await app.shutdown(stopping.force)
        return 0
    try:
        starting.result()
        if config.stdio:
            await serve_stdio(app.new_connection(), stopping.drain)
    except TimeoutError:
        stopped.cancel()
        log.error("workers did not report ready within %.0f s", READY_TIMEOUT_S)
        await app.shutdown(stopping.force)
        return 1
    await stopped
    await app.shutdown(stopping.force)
    return 0


async def _serve_as_process(spec: dict[str, Any], channel: Any) -> int:
    loop = asyncio.get_running_loop()
    stopping = Stopping()
    stopping.catch_signals(loop)
    parent = os.getppid()

    def from_supervisor() -> None:
        try:
            while channel.poll():
                stopping.on_message(channel.recv())
        except (EOFError, OSError):  # the supervisor is gone: stop serving
            loop.remove_reader(channel.fileno())
            stopping.on_message("drain")

    def watch_parent() -> None:
        if os.getppid() != parent:
            log.warning("the supervisor is gone; front stops")
            stopping.on_message("drain")
        else:
            loop.call_later(PARENT_CHECK_S, watch_parent)

    def report(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            channel.send(message)

    loop.add_reader(channel.fileno(), from_supervisor)
    loop.call_later(PARENT_CHECK_S, watch_parent)
    return await run_front(spec, report, stopping)


def front_main(spec: dict[str, Any]) -> None:
    """Process entry point of a front (started with the ``spawn`` method)."""
    config: ServeConfig = spec["config"]
    index = spec["index"]
    logging.basicConfig(
        level=config.log_level, format=f"%(asctime)s front{index} %(levelname)s %(message)s"
    )
    channel = spec.pop("channel")
    try:
        status = asyncio.run(_serve_as_process(spec, channel))
    except (OSError, zmq.ZMQError, ValueError) as exc:  # e.g. the remote endpoint or keys
        log.error("front %d cannot serve: %s", index, exc)
        status = 1
    raise SystemExit(status)
