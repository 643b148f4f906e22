"""A front's life as a process: started by the supervisor (``server.cluster``), it serves
until it is asked to stop, drains, and exits.

It also answers the supervisor's requests for its figures (``{"figures": token}``, for
``/metrics``) on the same channel.

It is asked to stop by a signal or by the supervisor's message on its channel
(:class:`server.stopping.Stopping` says how the two combine), and it stops by itself when
the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq

from server.app import READY_TIMEOUT_S, FrontApp
from server.cluster import Report
from server.config import ServeConfig
from server.logs import setup_logging
from server.stdio import serve_stdio
from server.stopping import Stopping

log = logging.getLogger("zplex.front")

#: How often a front checks that its supervisor is still there.
PARENT_CHECK_S = 1.0


async def run_front(
    spec: dict[str, Any],
    report: Report,
    stopping: Stopping,
    started: Callable[[FrontApp], None] | None = None,
) -> int:
    """Serve as front ``spec["index"]`` until ``stopping`` says to drain; ``started`` is
    called with the front's application once it exists."""
    config: ServeConfig = spec["config"]
    app = FrontApp(spec, report)
    if started is not None:
        started(app)
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
    apps: list[FrontApp] = []
    answering: set[asyncio.Task[None]] = set()

    async def answer_figures(token: int) -> None:
        try:
            if apps:
                report({"figures": token, **await apps[0].metrics_figures()})
        except Exception:  # e.g. shutting down meanwhile: the supervisor does without
            log.debug("cannot gather figures for the supervisor", exc_info=True)

    def from_supervisor() -> None:
        try:
            while channel.poll():
                message = channel.recv()
                if isinstance(message, dict):  # {"figures": token}
                    task = loop.create_task(answer_figures(message["figures"]))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
                else:
                    stopping.on_message(message)
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
    return await run_front(spec, report, stopping, apps.append)


def front_main(spec: dict[str, Any]) -> None:
    """Process entry point of a front (started with the ``spawn`` method)."""
    config: ServeConfig = spec["config"]
    index = spec["index"]
    setup_logging(config.log_level, config.log_format, "front", index)
    channel = spec.pop("channel")
    try:
        status = asyncio.run(_serve_as_process(spec, channel))
    except (OSError, zmq.ZMQError, ValueError) as exc:  # e.g. the remote endpoint or keys
        log.error("front %d cannot serve: %s", index, exc)
        status = 1
    raise SystemExit(status)
