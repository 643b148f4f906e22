"""The result model of ``zplex bench`` and its JSON form.

``BenchResult.to_json()`` is the document ``--json FILE`` writes::

    {"schema": 1,
     "metadata": {... collect_metadata() ...},
     "runs": [RunResult.to_json(), ...],          # one per (workload, policy)
     "projection": [Projection.to_json(), ...]}   # one per workload

Keys are stable: a figure that could not be computed is ``null``, never missing, and never
``NaN`` or ``Infinity`` (which are not JSON). Sizes are bytes, rates decimal MB/s, CPU costs
seconds per decimal GB of raw output, latencies milliseconds.

Use :meth:`RunResult.from_measurements` to turn what a run measured into every derived figure,
then :func:`fill_ratio_vs_request` once all policies of a workload ran, and
:func:`project_runs` for the scaling projection.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_type_hints

from bench import stats
from bench.projection import SplitRow, split_projection

SCHEMA_VERSION = 1
ROLES = ("front", "workers", "client")
POLICIES = ("frame", "request", "stream", "connection")
#: Points of the latency CDF kept in results (enough for a smooth plot, small in JSON).
CDF_POINTS = 400


def _clean(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@dataclass
class CpuPerGb:
    """CPU seconds per GB of raw output, by role (``workers``: all worker processes summed)."""

    front: float | None = None
    workers: float | None = None
    client: float | None = None


@dataclass
class PeakRss:
    """Peak resident set size in bytes, by role (``workers``: the largest worker; ``each_worker``:
    every worker's, when known)."""

    front: int | None = None
    workers: int | None = None
    client: int | None = None
    each_worker: list[int] | None = None


@dataclass
class RunResult:
    """Every figure of one policy run on one workload."""

    workload: str
    policy: str
    encoding: str
    level: int | None
    streams: int
    connections: int
    requests: int
    duration_s: float
    raw_bytes: int
    wire_bytes: int
    ratio: float | None
    space_savings: float | None
    ratio_vs_request: float | None
    ratio_vs_ideal: float | None
    requests_per_s: float | None
    raw_mb_per_s: float | None
    wire_mb_per_s: float | None
    cpu_s_per_gb: CpuPerGb
    worker_efficiency: float | None
    front_overhead: float | None
    latency_ms: dict[str, float | None]
    errors: dict[str, int] = field(default_factory=dict)
    peak_rss: PeakRss = field(default_factory=PeakRss)
    #: Bytes of worker memory per open stream (context memory, or worker RSS growth / streams).
    memory_per_stream: float | None = None
    #: ``(latency_ms, fraction)`` points of the latency CDF, for plots (optional).
    latency_cdf: list[tuple[float, float]] | None = None
    #: Inputs of the derived figures, kept so they can be checked: the ideal single stream's
    #: wire bytes, and the in-process CPU cost per GB behind ``worker_efficiency``.
    ideal_wire_bytes: int | None = None
    inprocess_cpu_s_per_gb: float | None = None
    #: generate: the workers' CPU per GB of making the data, subtracted from ``workers``.
    generation_cpu_s_per_gb: float | None = None
    #: Open model: the target request rate (``--rate``; ``requests_per_s`` is what was achieved).
    target_rate: float | None = None
    #: ``--repeat N``: per figure (``requests_per_s``, ``ratio``, ``latency_ms.p99``, ...) the
    #: ``{n, median, min, max, spread}`` over the N runs (this run is the median one).
    repeats: dict[str, dict[str, float]] | None = None
    #: In-process CPU per GB over the whole server's (fronts + workers): what offloading costs
    #: beyond compressing (1.0: nothing).
    server_efficiency: float | None = None
    #: Client CPU per GB over the workers': how much load generator the workers need.
    client_worker_ratio: float | None = None
    #: --chaos: ``{kills, answered, retried, failed, lost}`` (:mod:`bench.chaos`).
    chaos: dict[str, int] | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def ideal_ratio(self) -> float | None:
        """The single-context limit ``raw / ideal_wire_bytes`` (None if unknown)."""
        if self.ideal_wire_bytes is not None:
            return stats.ratio(self.raw_bytes, self.ideal_wire_bytes)
        if self.ratio is not None and self.ratio_vs_ideal:
            return self.ratio * self.ratio_vs_ideal
        return None

    @classmethod
    def from_measurements(
        cls,
        *,
        workload: str,
        policy: str,
        encoding: str,
        level: int | None,
        streams: int,
        connections: int,
        requests: int,
        duration_s: float,
        raw_bytes: int,
        wire_bytes: int,
        cpu_seconds: Mapping[str, float | None],
        latency: stats.LatencyRecorder | None = None,
        errors: Mapping[str, int] | None = None,
        peak_rss: Mapping[str, int | None] | None = None,
        peak_rss_each_worker: Sequence[int] | None = None,
        memory_per_stream: float | None = None,
        ideal_wire_bytes: int | None = None,
        inprocess_cpu_s_per_gb: float | None = None,
        ratio_vs_request: float | None = None,
        keep_cdf: bool = True,
    ) -> RunResult:
        """Derive every figure from what a run measured: ``cpu_seconds`` maps roles (``front``,
        ``workers``, ``client``) to CPU seconds (user + system) spent during the run;
        ``raw_bytes`` are the response bodies' bytes, ``wire_bytes`` every response byte read
        from the socket (frame headers and response headers included). ``ratio_vs_request`` is
        usually filled later by :func:`fill_ratio_vs_request`. ``peak_rss`` maps roles to bytes;
        ``peak_rss_each_worker`` lists every worker's (its maximum is the ``workers`` figure
        unless ``peak_rss`` gives one)."""
        r = stats.ratio(raw_bytes, wire_bytes)
        cpu = CpuPerGb(
            **{role: stats.cpu_s_per_gb(cpu_seconds.get(role), raw_bytes) for role in ROLES}
        )
        given = peak_rss or {}
        rss = PeakRss(
            front=given.get("front"), workers=given.get("workers"), client=given.get("client")
        )
        if peak_rss_each_worker:
            rss.each_worker = list(peak_rss_each_worker)
            if rss.workers is None:
                rss.workers = max(peak_rss_each_worker)
        return cls(
            workload=workload,
            policy=policy,
            encoding=encoding,
            level=level,
            streams=streams,
            connections=connections,
            requests=requests,
            duration_s=duration_s,
            raw_bytes=raw_bytes,
            wire_bytes=wire_bytes,
            ratio=r,
            space_savings=stats.space_savings(raw_bytes, wire_bytes),
            ratio_vs_request=ratio_vs_request,
            ratio_vs_ideal=stats.cost_ratio(wire_bytes, ideal_wire_bytes),
            requests_per_s=stats.per_second(requests, duration_s),
            raw_mb_per_s=stats.mb_per_s(raw_bytes, duration_s),
            wire_mb_per_s=stats.mb_per_s(wire_bytes, duration_s),
            cpu_s_per_gb=cpu,
            worker_efficiency=stats.worker_efficiency(inprocess_cpu_s_per_gb, cpu.workers),
            front_overhead=stats.front_overhead(cpu.front, cpu.workers),
            latency_ms=(
                latency.percentiles_ms()
                if latency is not None
                else dict.fromkeys(stats.PERCENTILES)
            ),
            errors=dict(errors or {}),
            peak_rss=rss,
            memory_per_stream=memory_per_stream,
            latency_cdf=(
                latency.cdf_points(max_points=CDF_POINTS)
                if latency is not None and keep_cdf
                else None
            ),
            ideal_wire_bytes=ideal_wire_bytes,
            inprocess_cpu_s_per_gb=inprocess_cpu_s_per_gb,
            server_efficiency=stats.server_efficiency(
                inprocess_cpu_s_per_gb, cpu.front, cpu.workers
            ),
            client_worker_ratio=stats.cost_ratio(cpu.client, cpu.workers),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with every field under its stable key."""
        data: dict[str, Any] = _clean(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """The inverse of :meth:`to_json` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["cpu_s_per_gb"] = CpuPerGb(**(data.get("cpu_s_per_gb") or {}))
        kwargs["peak_rss"] = PeakRss(**(data.get("peak_rss") or {}))
        if data.get("latency_cdf") is not None:
            kwargs["latency_cdf"] = [(float(x), float(y)) for x, y in data["latency_cdf"]]
        return cls(**kwargs)


#: The counters of a run's ``chaos`` figures (:func:`bench.chaos.chaos_figures`).
CHAOS_FIGURES = ("kills", "answered", "retried", "failed", "lost")
_NUMBERS = (int, float, int | None, float | None)


def _number_fields(cls: type) -> list[str]:
    """The fields of a result dataclass that are numbers, dotted into nested dataclasses."""
    hints = get_type_hints(cls)
    names: list[str] = []
    for f in fields(cls):
        kind = hints[f.name]
        if kind in _NUMBERS:
            names.append(f.name)
        elif isinstance(kind, type) and is_dataclass(kind):
            names += [f"{f.name}.{name}" for name in _number_fields(kind)]
    return names


def figure_names() -> tuple[str, ...]:
    """The numbers of a run's JSON, dotted into nested objects, as ``--threshold`` names them
    (``ratio``, ``cpu_s_per_gb.front``, ``latency_ms.p99``, ``chaos.lost``), and
    ``error_count``: the run's errors summed."""
    return (
        *_number_fields(RunResult),
        *(f"latency_ms.{name}" for name in stats.PERCENTILES),
        *(f"chaos.{name}" for name in CHAOS_FIGURES),
        "error_count",
    )


def fill_ratio_vs_request(runs: Iterable[RunResult]) -> None:
    """Set each run's ``ratio_vs_request``: its ratio over the ratio of the ``request`` policy
    run of the same workload (None where that run is missing)."""
    runs = list(runs)
    base = {run.workload: run.ratio for run in runs if run.policy == "request"}
    for run in runs:
        run.ratio_vs_request = stats.ratio_vs(base.get(run.workload), run.ratio)


@dataclass
class Projection:
    """Scaling projection from one run's per-role CPU costs: for each core count the best
    split of fronts and workers with the clients elsewhere (``rows``), and of fronts, workers
    and clients on the same host (``rows_with_clients``); see :mod:`bench.projection`."""

    workload: str
    policy: str
    front_cpu_s_per_gb: float | None
    workers_cpu_s_per_gb: float | None
    workers_one_front_can_feed: float | None
    rows: list[SplitRow]
    client_cpu_s_per_gb: float | None = None
    rows_with_clients: list[SplitRow] = field(default_factory=list)

    @classmethod
    def from_run(cls, run: RunResult, cores: Iterable[int] = stats.DEFAULT_CORES) -> Projection:
        cores = tuple(cores)
        cost = run.cpu_s_per_gb
        front, workers, client = cost.front, cost.workers, cost.client
        return cls(
            workload=run.workload,
            policy=run.policy,
            front_cpu_s_per_gb=front,
            workers_cpu_s_per_gb=workers,
            workers_one_front_can_feed=stats.workers_one_front_can_feed(front, workers),
            rows=split_projection(front, workers, None, cores),
            client_cpu_s_per_gb=client,
            rows_with_clients=split_projection(
                front, workers, client, [n for n in cores if n >= 3], with_clients=True
            ),
        )

    def gb_per_s_at(self, cores: int, *, with_clients: bool = False) -> float | None:
        """The projected GB/s at ``cores`` (None if not projected)."""
        rows = self.rows_with_clients if with_clients else self.rows
        return next((row["gb_per_s"] for row in rows if row["cores"] == cores), None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _clean(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Projection:
        def rows(key: str) -> list[SplitRow]:
            return [
                {
                    "cores": row["cores"],
                    "fronts": row.get("fronts", 1),
                    "workers": row["workers"],
                    "clients": row.get("clients", 0),
                    "gb_per_s": row["gb_per_s"],
                    "bound": row["bound"],
                }
                for row in data.get(key, [])
            ]

        return cls(
            workload=data["workload"],
            policy=data["policy"],
            front_cpu_s_per_gb=data.get("front_cpu_s_per_gb"),
            workers_cpu_s_per_gb=data.get("workers_cpu_s_per_gb"),
            workers_one_front_can_feed=data.get("workers_one_front_can_feed"),
            rows=rows("rows"),
            client_cpu_s_per_gb=data.get("client_cpu_s_per_gb"),
            rows_with_clients=rows("rows_with_clients"),
        )


def project_runs(
    runs: Iterable[RunResult],
    policy: str = "stream",
    cores: Iterable[int] = stats.DEFAULT_CORES,
) -> list[Projection]:
    """One projection per workload, from its ``policy`` run (the design under test); workloads
    without such a run get none."""
    cores = tuple(cores)
    return [Projection.from_run(run, cores) for run in runs if run.policy == policy]


@dataclass
class BenchResult:
    """Everything one ``zplex bench`` invocation measured."""

    metadata: dict[str, Any]
    runs: list[RunResult]
    projection: list[Projection] = field(default_factory=list)

    def workloads(self) -> list[str]:
        """Workload names in the order they first appear in ``runs``."""
        return list(dict.fromkeys(run.workload for run in self.runs))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "metadata": _clean(self.metadata),
            "runs": [run.to_json() for run in self.runs],
            "projection": [p.to_json() for p in self.projection],
        }

    def write_json(self, path: Path | str) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8, indented, strict JSON)."""
        text = json.dumps(self.to_json(), indent=2, allow_nan=False)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BenchResult:
        return cls(
            metadata=dict(data.get("metadata", {})),
            runs=[RunResult.from_json(run) for run in data.get("runs", [])],
            projection=[Projection.from_json(p) for p in data.get("projection", [])],
        )

    @classmethod
    def read_json(cls, path: Path | str) -> BenchResult:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# --- metadata --------------------------------------------------------------------------------


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


_CPU_MODEL_KEYS = ("model name", "Hardware", "Processor", "cpu model")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows, else "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in _CPU_MODEL_KEYS and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def collect_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """Versions, machine and configuration to store beside the figures: zplex, Python, zstd
    (libzstd and python-zstandard), pyzmq and libzmq, CPU model, logical/physical/usable cores,
    platform, UTC time, and ``config`` as given."""
    import psutil
    import zstandard

    zmq_version: str | None = None
    libzmq_version: str | None = None
    try:
        import zmq

        zmq_version = zmq.pyzmq_version()
        libzmq_version = zmq.zmq_version()
    except ImportError:
        pass
    return {
        "zplex": _package_version("zplex") or "unknown",
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "zstd": ".".join(str(part) for part in zstandard.ZSTD_VERSION),
        "python_zstandard": zstandard.__version__,
        "zstandard_backend": getattr(zstandard, "backend", None),
        "pyzmq": zmq_version,
        "libzmq": libzmq_version,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": _usable_cores(),
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": _clean(dict(config)),
    }
