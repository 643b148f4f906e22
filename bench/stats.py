"""Benchmark arithmetic: ratios, CPU cost per GB, latency percentiles, scaling projection.

Pure computation: no sockets, no files, no processes (the only clock read is
``time.process_time`` in :func:`inprocess_cpu_s_per_gb`, which measures this process).

Units: MB and GB are decimal (1e6 and 1e9 bytes), like h2load and network figures. Functions
return ``None`` when a figure cannot be computed (a zero or missing denominator, a missing
input) instead of raising ``ZeroDivisionError``; the two exceptions, documented on the
functions, return ``math.inf`` where infinity is the meaningful answer (a role that costs no CPU).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable
from typing import Literal, TypedDict

import zstandard
from hdrh.histogram import HdrHistogram

from server.protocol.encoding import zstd_parameters

MB = 1_000_000
GB = 1_000_000_000
#: The window every zstd stream uses (docs/protocol.md ``zstd-8mb``): 8 MiB.
DEFAULT_WINDOW_LOG = 23
#: Raw bytes per independent unit in ``frame`` context with 32 KiB payloads: the server's
#: encoder cuts ``max_payload - max_payload // 128 - 256`` so a unit always fits one frame.
FRAME_UNIT_BYTES = 32768 - 32768 // 128 - 256
#: Core counts of the scaling projection.
DEFAULT_CORES = (4, 8, 16, 32, 64)

Context = Literal["stream", "request", "frame"]


def _positive(value: float | None) -> bool:
    return value is not None and value > 0 and not math.isnan(value)


# --- ratios and rates ------------------------------------------------------------------------


def ratio(raw: float | None, wire: float | None) -> float | None:
    """Compression ratio ``raw / wire`` (frame headers included in ``wire``); None if ``wire``
    is zero or either is missing."""
    if raw is None or not _positive(wire):
        return None
    assert wire is not None
    return raw / wire


def space_savings(raw: float | None, wire: float | None) -> float | None:
    """``1 - wire / raw`` as h2load reports it (0.75 = 75% saved; negative if the wire is
    larger); None if ``raw`` is zero or either is missing."""
    if wire is None or not _positive(raw):
        return None
    assert raw is not None
    return 1.0 - wire / raw


def ratio_vs(base_ratio: float | None, ratio_: float | None) -> float | None:
    """``ratio_ / base_ratio``: how many times better than the base (``ratio_vs_request``);
    None if the base is zero or either is missing."""
    if ratio_ is None or not _positive(base_ratio):
        return None
    assert base_ratio is not None
    return ratio_ / base_ratio


def per_second(amount: float | None, seconds: float | None) -> float | None:
    """``amount / seconds``; None if ``seconds`` is zero or either is missing."""
    if amount is None or not _positive(seconds):
        return None
    assert seconds is not None
    return amount / seconds


def mb_per_s(nbytes: float | None, seconds: float | None) -> float | None:
    """Decimal megabytes per second; None as for :func:`per_second`."""
    rate = per_second(nbytes, seconds)
    return None if rate is None else rate / MB


def cpu_s_per_gb(cpu_seconds: float | None, raw_bytes: float | None) -> float | None:
    """CPU seconds spent per decimal GB of raw (uncompressed) output; None if ``raw_bytes`` is
    zero or either is missing."""
    if cpu_seconds is None or not _positive(raw_bytes):
        return None
    assert raw_bytes is not None
    return cpu_seconds / (raw_bytes / GB)


def cost_ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` of two costs (e.g. CPU s/GB); None if the denominator is
    zero or either is missing. ``worker_efficiency`` is ``cost_ratio(in-process, workers)``,
    ``front_overhead`` is ``cost_ratio(front, workers)``."""
    if numerator is None or not _positive(denominator):
        return None
    assert denominator is not None
    return numerator / denominator


def worker_efficiency(
    inprocess_cpu_per_gb: float | None, workers_cpu_per_gb: float | None
) -> float | None:
    """In-process single-core compression cost over the workers' cost, per GB: 1.0 means the
    workers spend nothing beyond compression; None if either is missing or workers cost 0."""
    return cost_ratio(inprocess_cpu_per_gb, workers_cpu_per_gb)


def server_efficiency(
    inprocess_cpu_per_gb: float | None,
    front_cpu_per_gb: float | None,
    workers_cpu_per_gb: float | None,
) -> float | None:
    """In-process single-core compression cost over the whole server's (fronts + workers),
    per GB: 1.0 means offloading costs nothing beyond compressing; None if any is missing or
    the server costs 0."""
    if front_cpu_per_gb is None or workers_cpu_per_gb is None:
        return None
    return cost_ratio(inprocess_cpu_per_gb, front_cpu_per_gb + workers_cpu_per_gb)


def front_overhead(
    front_cpu_per_gb: float | None, workers_cpu_per_gb: float | None
) -> float | None:
    """Front CPU per GB over workers' CPU per GB (the target is <= 0.12); None if either is
    missing or workers cost 0."""
    return cost_ratio(front_cpu_per_gb, workers_cpu_per_gb)


# --- in-process references -------------------------------------------------------------------


def reference_small_tables(small_tables_from: int | None, context: str, encoding: str) -> bool:
    """Whether the in-process reference of a phase compresses with small zstd match tables:
    when the server gives them to every context (``--small-tables-from 0``) and the phase's
    contexts can have them (``stream`` and ``request`` zstd); otherwise default tables, those
    a worker gives its first contexts (with N > 0, whether a run reaches N contexts on a
    worker is not known in advance: the phase's stats say it, see
    :func:`bench.phase_checks.unlike_tables`)."""
    return small_tables_from == 0 and encoding == "zstd-8mb" and context != "frame"


def _zstd_compressor(level: int, window_log: int, small_tables: bool) -> zstandard.ZstdCompressor:
    params = zstd_parameters(level, window_log, small_tables)
    return zstandard.ZstdCompressor(compression_params=params)


def _compress_all(
    bodies: Iterable[bytes],
    level: int,
    window_log: int,
    context: Context,
    encoding: str,
    frame_unit: int,
    small_tables: bool = False,
) -> tuple[int, int]:
    """Compress ``bodies`` the way a worker does under ``context`` (``small_tables``: a zstd
    context with small match tables); (raw bytes, wire bytes)."""
    raw = wire = 0
    if encoding == "identity":
        for body in bodies:
            raw += len(body)
        return raw, raw
    if encoding == "zlib":
        if context == "frame":
            for body in bodies:
                raw += len(body)
                for i in range(0, len(body), frame_unit):
                    wire += len(zlib.compress(body[i : i + frame_unit], level))
            return raw, wire
        zobj = zlib.compressobj(level)
        for body in bodies:
            raw += len(body)
            wire += len(zobj.compress(body))
            if context == "request":
                wire += len(zobj.flush(zlib.Z_FINISH))
                zobj = zlib.compressobj(level)
            else:
                wire += len(zobj.flush(zlib.Z_SYNC_FLUSH))
        return raw, wire
    if encoding != "zstd-8mb":
        raise ValueError(f"unknown encoding {encoding!r}")
    cctx = _zstd_compressor(level, window_log, small_tables)
    if context == "frame":
        for body in bodies:
            raw += len(body)
            for i in range(0, len(body), frame_unit):
                wire += len(cctx.compress(body[i : i + frame_unit]))
        return raw, wire
    obj = cctx.compressobj()
    for body in bodies:
        raw += len(body)
        wire += len(obj.compress(body))
        if context == "request":
            wire += len(obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
            obj = cctx.compressobj()  # reuses the compressor's context, as the server does
        else:
            wire += len(obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    return raw, wire


def ideal_wire_bytes(
    bodies: Iterable[bytes],
    level: int,
    window_log: int = DEFAULT_WINDOW_LOG,
    encoding: str = "zstd-8mb",
) -> int:
    """Compressed size of all ``bodies``, in order, through one in-process compression stream
    with the given level and window, flushed (``FLUSH_BLOCK``; zlib: ``Z_SYNC_FLUSH``) after
    each body, like one ``stream`` context: the limit of a single context. The stream is not
    finished (the epilogue is a few bytes). ``ratio_vs_ideal`` is a run's wire bytes over this."""
    return _compress_all(bodies, level, window_log, "stream", encoding, FRAME_UNIT_BYTES)[1]


def inprocess_cpu_s_per_gb(
    bodies: Iterable[bytes],
    level: int,
    window_log: int = DEFAULT_WINDOW_LOG,
    context: Context = "stream",
    encoding: str = "zstd-8mb",
    frame_unit: int = FRAME_UNIT_BYTES,
    repeat: int = 1,
    small_tables: bool = False,
) -> float | None:
    """CPU seconds per GB (``time.process_time``, this process, one core) to compress
    ``bodies`` in process with the same settings as the workers: one stream (``stream``), one
    frame per body on a reused context (``request``), or independent ``frame_unit`` slices
    (``frame``); ``small_tables``: small zstd match tables (:func:`reference_small_tables`).
    The best of ``repeat`` passes; ``bodies`` must then be re-iterable (a list). None if there
    are no bytes. The reference of ``worker_efficiency``."""
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    if repeat > 1 and not isinstance(bodies, list | tuple):
        bodies = list(bodies)
    best: float | None = None
    raw = 0
    for _ in range(repeat):
        start = time.process_time()
        raw, _wire = _compress_all(
            bodies, level, window_log, context, encoding, frame_unit, small_tables
        )
        spent = time.process_time() - start
        best = spent if best is None else min(best, spent)
    return cpu_s_per_gb(best, raw)


# --- latency ---------------------------------------------------------------------------------

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


class LatencyRecorder:
    """An HDR histogram of latencies in microseconds (1 us to 60 s, 3 significant digits).

    Values above 60 s are recorded as 60 s and counted in ``clamped``; values below 1 us as
    1 us. Percentiles are HDR's: the highest value equivalent to the bucket reached, so they
    are exact to 3 significant digits (at most 0.1% high).
    """

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self.clamped = 0
        #: Latencies not yet in the histogram: a count per bucket, keyed by the bucket's
        #: lowest value (HdrHistogram's ``record_value`` costs more than the rest of a
        #: request's bookkeeping; recording a bucket's count at once gives the same counts).
        self._pending: dict[int, int] = {}
        #: Values of this many bits or fewer have a bucket each (1 us resolution).
        h = self._histogram
        self._exact_bits = h.unit_magnitude + h.sub_bucket_half_count_magnitude + 1

    @property
    def histogram(self) -> HdrHistogram:
        """The HDR histogram of every latency recorded so far."""
        pending = self._pending
        if pending:
            record = self._histogram.record_value
            for value, count in pending.items():
                record(value, count)
            pending.clear()
        return self._histogram

    def record_s(self, seconds: float) -> None:
        """Record one latency given in seconds (e.g. a difference of ``time.perf_counter``)."""
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"latency must be >= 0 seconds, not {seconds}")
        micros = round(seconds * 1_000_000)
        if micros > HIGHEST_US:
            micros = HIGHEST_US
            self.clamped += 1
        elif micros < LOWEST_US:
            micros = LOWEST_US
        shift = micros.bit_length() - self._exact_bits
        if shift > 0:
            micros = micros >> shift << shift  # the lowest value of its HDR bucket
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + 1

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def percentiles_ms(self) -> dict[str, float | None]:
        """``{"p50", "p90", "p99", "p999"}`` in milliseconds; values None when empty."""
        if not self.count:
            return dict.fromkeys(PERCENTILES)
        values = self.histogram.get_percentile_to_value_dict(list(PERCENTILES.values()))
        return {name: values[pct] / 1000.0 for name, pct in PERCENTILES.items()}

    def max_ms(self) -> float | None:
        return self.histogram.get_max_value() / 1000.0 if self.count else None

    def mean_ms(self) -> float | None:
        return self.histogram.get_mean_value() / 1000.0 if self.count else None

    def cdf_points(self, max_points: int | None = None) -> list[tuple[float, float]]:
        """``(latency_ms, fraction of requests at or below it)`` for every recorded bucket, in
        increasing latency; the last point is the maximum, with fraction 1.0. With
        ``max_points``, evenly spaced buckets are kept (always the first and the last). Empty
        when nothing was recorded."""
        total = self.count
        if not total:
            return []
        points = [
            (step.value_iterated_to / 1000.0, step.total_count_to_this_value / total)
            for step in self.histogram.get_recorded_iterator()
        ]
        if max_points is not None and len(points) > max(2, max_points):
            last = len(points) - 1
            keep = max(2, max_points)
            points = [points[round(i * last / (keep - 1))] for i in range(keep)]
        return points

    def merge(self, other: LatencyRecorder) -> None:
        """Add ``other``'s recordings to this one (e.g. from several client processes)."""
        self.histogram.add(other.histogram)  # both flushed
        self.clamped += other.clamped

    def encode(self) -> str:
        """The histogram in HdrHistogram's compressed base64 form, to ship between processes."""
        encoded = self.histogram.encode()
        return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyRecorder:
        """The recorder :meth:`encode` described (``clamped`` is not carried)."""
        recorder = cls()
        recorder.histogram.decode_and_add(encoded)
        return recorder


# --- scaling projection ----------------------------------------------------------------------


class ProjectionRow(TypedDict):
    cores: int
    workers: int
    gb_per_s: float | None
    bound: Literal["workers", "front"] | None


def scaling_projection(
    front_cpu_per_gb: float | None,
    worker_cpu_per_gb: float | None,
    cores: Iterable[int] = DEFAULT_CORES,
) -> list[ProjectionRow]:
    """Projected throughput with one front on one core and the other ``cores - 1`` cores running
    workers, from measured CPU seconds per GB of each role: the front can carry
    ``1 / front_cpu_per_gb`` GB/s, the workers ``workers / worker_cpu_per_gb`` GB/s; the smaller
    is the projection and its role the ``bound`` (ties: ``workers``). A cost of 0 means that
    role never limits. If either cost is missing (None), or both are 0, ``gb_per_s`` and
    ``bound`` are None. Clients run elsewhere and are not counted."""
    rows: list[ProjectionRow] = []
    for n in cores:
        if n < 2:
            raise ValueError(f"a projection needs at least 2 cores (one front, one worker): {n}")
        workers = n - 1
        gb_per_s: float | None = None
        bound: Literal["workers", "front"] | None = None
        if front_cpu_per_gb is not None and worker_cpu_per_gb is not None:
            front_cap = 1.0 / front_cpu_per_gb if front_cpu_per_gb > 0 else math.inf
            worker_cap = workers / worker_cpu_per_gb if worker_cpu_per_gb > 0 else math.inf
            if not (math.isinf(front_cap) and math.isinf(worker_cap)):
                if worker_cap <= front_cap:
                    gb_per_s, bound = worker_cap, "workers"
                else:
                    gb_per_s, bound = front_cap, "front"
        rows.append({"cores": n, "workers": workers, "gb_per_s": gb_per_s, "bound": bound})
    return rows


def workers_one_front_can_feed(
    front_cpu_per_gb: float | None, worker_cpu_per_gb: float | None
) -> float | None:
    """``worker_cpu_per_gb / front_cpu_per_gb``: how many fully busy workers one front core
    keeps fed. ``math.inf`` if the front costs 0 (and the workers something); None if either
    is missing, or the workers cost 0."""
    if front_cpu_per_gb is None or worker_cpu_per_gb is None or worker_cpu_per_gb <= 0:
        return None
    if front_cpu_per_gb <= 0:
        return math.inf
    return worker_cpu_per_gb / front_cpu_per_gb
