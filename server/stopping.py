"""How a process of the server is asked to stop.

The first SIGTERM or SIGINT, or the supervisor's ``drain`` message, starts a drain (goaway,
answer what is in flight, within ``drain_timeout_s``); a second signal, or the supervisor's
``force``, ends it at once. A signal sent to the whole process group (``kill -TERM -PGID``,
systemd) reaches every process once, and the supervisor's ``drain`` that follows does not
count as a second signal.
"""

from __future__ import annotations

import asyncio
import signal

DRAIN = "drain"
FORCE = "force"


class Stopping:
    def __init__(self) -> None:
        self.drain = asyncio.Event()
        self.force = asyncio.Event()
        self.signals = 0

    def on_signal(self) -> None:
        self.signals += 1
        self.drain.set()
        if self.signals > 1:
            self.force.set()

    def on_message(self, message: str) -> None:
        if message in (DRAIN, FORCE):
            self.drain.set()
        if message == FORCE:
            self.force.set()

    def catch_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal)
