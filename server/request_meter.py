"""A front's requests by command: how many arrived, the errors they were answered with (by
code), and a latency histogram (from a request's last frame in to its last frame out).

The hot path only adds to plain ints and floats; :mod:`server.metric_families` turns the
figures into Prometheus metrics when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Callable
from typing import Any

#: Upper bounds (seconds) of the latency histogram's buckets; a last bucket holds the rest.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: The command label of a request the front refused before it ran (unknown command, too
#: many streams, ...): the protocol core does not name it.
REJECTED = "rejected"

#: A request in flight on a connection: (command, stream, when its last frame came in).
Pending = tuple[str, int, float]


@dataclasses.dataclass(slots=True)
class CommandFigures:
    requests: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Answers per latency bucket (not cumulative), the last one past every bound.
    buckets: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1)
    )
    latency_sum_s: float = 0.0

    def to_map(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "buckets": list(self.buckets),
            "latency_sum_s": self.latency_sum_s,
        }


class RequestMeter:
    """One per front; each connection keeps its own map of requests in flight."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.commands: dict[str, CommandFigures] = {}
        #: Connection-level errors (the connection ends), by code.
        self.connection_errors: dict[str, int] = {}

    def begin(self, pending: dict[int, Pending], request: int, stream: int, name: str) -> None:
        """Request ``request`` is complete (its last frame came in)."""
        figures = self.commands.get(name)
        if figures is None:
            figures = self.commands[name] = CommandFigures()
        figures.requests += 1
        pending[request] = (name, stream, self.clock())

    def answered(self, pending: dict[int, Pending], request: int, code: str | None) -> None:
        """The request's last frame went out; ``code``: the error it was answered with."""
        entry = pending.pop(request, None)
        if entry is None:
            return
        figures = self.commands[entry[0]]
        latency = self.clock() - entry[2]
        figures.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, latency)] += 1
        figures.latency_sum_s += latency
        if code is not None:
            figures.errors[code] = figures.errors.get(code, 0) + 1

    def stream_failed(self, pending: dict[int, Pending], stream: int, code: str) -> None:
        """Every request in flight on ``stream`` was answered with ``code``."""
        for request in [r for r, entry in pending.items() if entry[1] == stream]:
            self.answered(pending, request, code)

    def connection_failed(self, code: str) -> None:
        self.connection_errors[code] = self.connection_errors.get(code, 0) + 1

    def to_map(self) -> dict[str, Any]:
        return {
            "commands": {name: f.to_map() for name, f in self.commands.items()},
            "connection_errors": dict(self.connection_errors),
        }
