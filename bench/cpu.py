"""CPU and memory measurement of a phase: the ``stats`` side connection (:class:`Monitor`),
CPU seconds per role (:class:`CpuProbe`: psutil when the server runs on this host, else the
``stats`` counters; ``getrusage`` for the client), the peaks of the snapshots
(:class:`Samples`) and the load the rest of the host put on it (:func:`other_load`).

- CPU: user + system, all threads, sampled right before the first pass and after the last.
  A phase of a few milliseconds can fall between two clock ticks (psutil reads 10 ms ticks):
  give CPU figures a few seconds (``-d``).
- fronts: with several, the front CPU is the sum over every front of ``stats``' ``fronts``
  (the same processes before and after the phase), and the peak RSS the largest front's.
- peak RSS: the largest RSS seen in the ``stats`` snapshots taken every
  :data:`SAMPLE_PERIOD_S` during the phase (and at its start and end); the client's from psutil.
- memory per stream: the workers' ``context_bytes`` (the compression contexts' own accounting)
  over the number of streams open, from the same snapshots, the largest value seen; ``null``
  when no snapshot fell inside a pass. The monitor's own (identity, context-free) stream is
  left out (:data:`MONITOR_STREAMS`).
- other load: the host's busy CPU during the phase (``psutil.cpu_times``) minus the bench's own
  processes; above :data:`OTHER_LOAD_WARNING` of the host, a warning says the CPU figures are
  noisy. On a host with fewer cores than processes (2 cores: front, workers and the client),
  every role's CPU per GB also includes the cost of sharing cores (context switches, caches).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import resource
from typing import Any

import psutil

from bench.client import AsyncClient, ConnectionLost, ServerError
from bench.server_process import Endpoint

#: Attempts at a ``stats`` request whose answer a stopping process lost, and the wait
#: before the next (times the attempt's number).
STATS_ATTEMPTS = 5
STATS_BACKOFF_S = 0.05
#: Error codes of a ``stats`` request that a retry can get past.
STATS_RETRY_CODES = frozenset({"worker-lost", "overloaded", "shutting-down"})

#: Seconds between ``stats`` snapshots during a phase.
SAMPLE_PERIOD_S = 0.5
#: Streams the monitor connection holds open on the server (left out of memory per stream).
MONITOR_STREAMS = 1
#: Warn when other processes took more than this share of the host's CPU during a phase.
OTHER_LOAD_WARNING = 0.10


class Monitor:
    """A side connection (identity encoding, one stream) that asks for ``stats``; it
    reconnects if the server dropped it (e.g. after an idle timeout)."""

    def __init__(self, endpoint: Endpoint, timeout: float, connect_timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client: AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> AsyncClient:
        if self.client is None or self.client.closed or self.client.goaway is not None:
            if self.client is not None:
                await self.client.close()
            self.client = await AsyncClient.connect(
                self.endpoint.host,
                self.endpoint.port,
                encodings=("identity",),
                level=None,
                timeout=self.timeout,
                connect_timeout=self.connect_timeout,
            )
        return self.client

    async def stats(self) -> dict[str, Any]:
        """The server's ``stats``, asked again (on a new connection if need be) when the
        answer is lost to a process that stops: a lost connection, ``worker-lost``,
        ``overloaded`` or ``shutting-down`` (under ``--chaos`` they are what the kills
        cause), up to :data:`STATS_ATTEMPTS` times."""
        async with self._lock:
            for attempt in range(1, STATS_ATTEMPTS + 1):
                client = await self.connect()
                try:
                    response = await client.request("stats", timeout=self.timeout)
                    return response.header
                except ServerError as exc:
                    if exc.code not in STATS_RETRY_CODES or attempt == STATS_ATTEMPTS:
                        raise
                except ConnectionLost:
                    if attempt == STATS_ATTEMPTS:
                        raise
                await asyncio.sleep(STATS_BACKOFF_S * attempt)
            raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CpuProbe:
    """CPU seconds (user + system) of the fronts and the workers: psutil when the server runs
    here, else the counters of ``stats``."""

    def __init__(self, local: bool) -> None:
        self.local = local
        self._procs: dict[int, psutil.Process] = {}

    @property
    def source(self) -> str:
        return "psutil" if self.local else "stats"

    def _cpu(self, pid: int, entry: dict[str, Any]) -> float:
        if self.local:
            try:
                proc = self._procs.get(pid)
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                times = proc.cpu_times()
                return float(times.user + times.system)
            except psutil.Error:
                pass
        return float(entry.get("cpu_user", 0.0)) + float(entry.get("cpu_system", 0.0))

    def snapshot(self, header: dict[str, Any]) -> dict[str, Any]:
        """``{"fronts": {pid: seconds}, "workers": {pid: seconds}, "connections": {pid:
        connections accepted so far}, "small_tables": {pid: small-table contexts made so far,
        None if unknown}}`` from a stats header: every front of ``fronts`` (or the one that
        answered, from a server without ``fronts``)."""
        fronts = front_entries(header)
        workers = header.get("workers") or []
        return {
            "fronts": {int(f.get("pid", 0)): self._cpu(int(f.get("pid", 0)), f) for f in fronts},
            "workers": {int(w["pid"]): self._cpu(int(w["pid"]), w) for w in workers},
            "connections": {
                int(f.get("pid", 0)): int(f.get("connections_total", 0)) for f in fronts
            },
            "small_tables": {int(w["pid"]): w.get("small_table_contexts") for w in workers},
        }


def front_entries(header: dict[str, Any]) -> list[dict[str, Any]]:
    """Every front's figures of a stats header (``fronts``, else ``front`` alone)."""
    fronts = [f for f in header.get("fronts") or [] if f]
    if fronts:
        return fronts
    front = header.get("front") or {}
    return [front] if front else []


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[float | None, float, bool]:
    """(fronts' seconds, workers' seconds, same worker processes) between two snapshots; the
    fronts' figure is their sum, None if the fronts are not the same processes."""
    front: float | None = None
    if before["fronts"] and set(before["fronts"]) == set(after["fronts"]):
        front = sum(after["fronts"][pid] - seconds for pid, seconds in before["fronts"].items())
    workers = sum(
        after["workers"][pid] - seconds
        for pid, seconds in before["workers"].items()
        if pid in after["workers"]
    )
    return front, workers, set(before["workers"]) == set(after["workers"])


def connections_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[int, int]:
    """Connections each front (by pid) accepted between two snapshots."""
    return {
        pid: total - before["connections"].get(pid, 0)
        for pid, total in after["connections"].items()
    }


def small_tables_delta(before: dict[str, Any], after: dict[str, Any]) -> int | None:
    """zstd contexts the workers made with small match tables between two snapshots; None
    if unknown (a worker restarted, or a server that does not report them)."""
    made_before, made_after = before["small_tables"], after["small_tables"]
    if set(made_before) != set(made_after):
        return None
    pairs = [(made_before[pid], made_after[pid]) for pid in made_before]
    if any(then is None or now is None for then, now in pairs):
        return None
    return sum(int(now) - int(then) for then, now in pairs)


def host_busy_s() -> float:
    """CPU seconds every core of this host spent busy (not idle, iowait or stolen)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    total = sum(getattr(times, name) for name in times._fields if not name.startswith("guest"))
    return float(total - idle)


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Samples:
    """Peaks seen in the stats snapshots of one phase."""

    front_rss: int | None = None
    worker_rss: dict[int, int] = dataclasses.field(default_factory=dict)
    client_rss: int | None = None
    memory_per_stream: float | None = None
    max_rss: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, header: dict[str, Any], monitor_streams: int) -> None:
        front = header.get("front") or {}
        for each in front_entries(header):
            if "rss" in each:
                self.front_rss = max(self.front_rss or 0, int(each["rss"]))
        streams = context = 0
        for worker in header.get("workers") or []:
            pid = int(worker.get("pid", 0))
            if "rss" in worker:
                self.worker_rss[pid] = max(self.worker_rss.get(pid, 0), int(worker["rss"]))
            streams += int(worker.get("streams", 0))
            context += int(worker.get("context_bytes", 0))
        streams -= monitor_streams
        if streams > 0 and context > 0:
            per_stream = context / streams
            self.memory_per_stream = max(self.memory_per_stream or 0.0, per_stream)
        self.max_rss = {
            "front": front.get("max_rss"),
            "workers": [w.get("max_rss") for w in header.get("workers") or []],
        }
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process().memory_info().rss
            self.client_rss = max(self.client_rss or 0, rss)


def other_load(
    host_cpu: float, front_cpu: float, workers_cpu: float, client_cpu: float, elapsed: float
) -> tuple[float, float]:
    """(CPU seconds the rest of the host ran during a phase, their share of the host's CPU):
    the host's busy seconds minus our processes' (CPU they did not get)."""
    other = max(0.0, host_cpu - front_cpu - workers_cpu - client_cpu)
    return other, other / (elapsed * (psutil.cpu_count() or 1))
