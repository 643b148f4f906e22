"""``zplex serve --metrics-port``: the supervisor serves Prometheus metrics at ``/metrics``.

On each scrape the supervisor asks every front for its figures over the channel it already
has to each (a ``{"figures": token}`` message; the front answers with its own figures and
every worker's, gathered with STATS) and waits at most :data:`FRONT_TIMEOUT_S`: a front that
does not answer in time (restarting, say) is left out of that scrape. Every worker serves
every front, so the workers' figures are taken from one front's answer (the fullest).
Nothing is measured per request here: the fronts and workers keep plain counters, turned
into metric families (:mod:`server.metric_families`) only when scraped.

The HTTP server is ``prometheus_client``'s (a thread); it hands each scrape to the
supervisor's event loop and waits for the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from server.logs import banner
from server.metric_families import families

log = logging.getLogger("zplex.metrics")

#: How long a scrape waits for the fronts' answers.
FRONT_TIMEOUT_S = 2.0
#: How long the HTTP thread waits for the whole snapshot.
SCRAPE_TIMEOUT_S = FRONT_TIMEOUT_S + 3.0


class FrontsChannel(Protocol):
    """What the endpoint needs of the supervisor (``server.cluster.Cluster``)."""

    on_figures: Callable[[int, dict[str, Any]], None] | None

    def tell_fronts(self, message: Any) -> int: ...

    def restarts(self) -> dict[str, int]: ...


class MetricsEndpoint:
    def __init__(self, cluster: FrontsChannel, loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self.loop = loop
        self.process = psutil.Process()
        self._tokens = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Event, dict[int, dict[str, Any]], int]] = {}
        self._server: WSGIServer | None = None
        self.address: tuple[str, int] | None = None
        cluster.on_figures = self._answered

    def start(self, host: str, port: int) -> tuple[str, int]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._server, _ = start_http_server(port, addr=host, registry=registry)
        self.address = (host, self._server.server_port)
        banner.info("zplex metrics on http://%s:%d/metrics", *self.address)
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- a scrape (prometheus_client's Collector) -----------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Called in the HTTP server's thread."""
        future = asyncio.run_coroutine_threadsafe(self.snapshot(), self.loop)
        yield from families(future.result(SCRAPE_TIMEOUT_S))

    async def snapshot(self) -> dict[str, Any]:
        answers = await self._ask_fronts()
        fronts = [answers[k]["front"] for k in sorted(answers)]
        workers: list[dict[str, Any]] = []
        for k in sorted(answers):  # the fullest answer (the lowest front among equals)
            if len(answers[k]["workers"]) > len(workers):
                workers = answers[k]["workers"]
        return {"supervisor": self._own_figures(), "fronts": fronts, "workers": workers}

    async def _ask_fronts(self) -> dict[int, dict[str, Any]]:
        token = next(self._tokens)
        done = asyncio.Event()
        answers: dict[int, dict[str, Any]] = {}
        self._waiting[token] = (done, answers, 0)
        try:
            expected = self.cluster.tell_fronts({"figures": token})
            self._waiting[token] = (done, answers, expected)
            if expected and len(answers) < expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), FRONT_TIMEOUT_S)
        finally:
            del self._waiting[token]
        return answers

    def _answered(self, index: int, message: dict[str, Any]) -> None:
        waiting = self._waiting.get(message.get("figures", 0))
        if waiting is None:
            return  # too late: that scrape went without it
        done, answers, expected = waiting
        answers[index] = message
        if expected and len(answers) >= expected:
            done.set()

    def _own_figures(self) -> dict[str, Any]:
        cpu = self.process.cpu_times()
        restarts = self.cluster.restarts()
        return {
            "pid": self.process.pid,
            "cpu_user": cpu.user,
            "cpu_system": cpu.system,
            "rss": self.process.memory_info().rss,
            "front_restarts": restarts.get("front", 0),
            "worker_restarts": restarts.get("worker", 0),
        }
