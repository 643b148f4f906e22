"""Tests for bench.stats: ratios, CPU cost, HDR latency percentiles, scaling projection."""

from __future__ import annotations

import math
import zlib

import pytest
import zstandard
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import stats
from bench.stats import LatencyRecorder

# --- ratios and costs ------------------------------------------------------------------------


def test_ratio_and_space_savings_on_known_inputs() -> None:
    assert stats.ratio(1000, 250) == 4.0
    assert stats.space_savings(1000, 250) == pytest.approx(0.75)
    assert stats.space_savings(100, 120) == pytest.approx(-0.2)  # expansion is negative
    assert stats.ratio(0, 10) == 0.0
    assert stats.space_savings(1000, 0) == 1.0


@pytest.mark.parametrize(
    ("raw", "wire"), [(1000, 0), (1000, None), (None, 10), (0, 0), (None, None)]
)
def test_ratio_without_a_denominator_is_none(raw: int | None, wire: int | None) -> None:
    assert stats.ratio(raw, wire) is None


@pytest.mark.parametrize(("raw", "wire"), [(0, 10), (None, 10), (10, None), (0, 0)])
def test_space_savings_without_raw_bytes_is_none(raw: int | None, wire: int | None) -> None:
    assert stats.space_savings(raw, wire) is None


def test_ratio_vs() -> None:
    assert stats.ratio_vs(2.0, 5.0) == 2.5
    assert stats.ratio_vs(0.0, 5.0) is None
    assert stats.ratio_vs(None, 5.0) is None
    assert stats.ratio_vs(2.0, None) is None


def test_rates_and_cpu_per_gb() -> None:
    assert stats.per_second(500, 2.0) == 250.0
    assert stats.per_second(500, 0) is None
    assert stats.mb_per_s(3_000_000, 2.0) == 1.5
    assert stats.mb_per_s(None, 2.0) is None
    # 0.5 CPU seconds for 250 MB (decimal) is 2 CPU seconds per GB.
    assert stats.cpu_s_per_gb(0.5, 250_000_000) == pytest.approx(2.0)
    assert stats.cpu_s_per_gb(0.5, 0) is None
    assert stats.cpu_s_per_gb(None, 10) is None
    assert stats.cpu_s_per_gb(0.0, 10) == 0.0


def test_worker_efficiency_and_front_overhead() -> None:
    assert stats.worker_efficiency(3.0, 4.0) == 0.75
    assert stats.front_overhead(0.4, 4.0) == pytest.approx(0.1)
    assert stats.worker_efficiency(3.0, 0.0) is None
    assert stats.front_overhead(None, 4.0) is None
    assert stats.front_overhead(0.4, None) is None


# --- in-process references -------------------------------------------------------------------

BODIES = [(b"def function_%d(x):\n    return x * %d\n" % (i, i)) * 40 for i in range(30)]


def test_ideal_wire_bytes_is_one_flushed_stream() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=23)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    expected = 0
    for body in BODIES:
        expected += len(obj.compress(body)) + len(obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    assert stats.ideal_wire_bytes(BODIES, level=3, window_log=23) == expected
    assert stats.ideal_wire_bytes(iter(BODIES), level=3) == expected  # any iterable


def test_one_context_beats_independent_frames_on_repeated_data() -> None:
    body = bytes(range(256)) * 64  # 16 KiB, seen again and again
    bodies = [body] * 20
    ideal = stats.ideal_wire_bytes(bodies, level=3)
    independent = sum(len(zstandard.ZstdCompressor(level=3).compress(b)) for b in bodies)
    assert ideal * 5 < independent


def test_ideal_wire_bytes_other_encodings() -> None:
    zobj = zlib.compressobj(6)
    expected = sum(len(zobj.compress(b)) + len(zobj.flush(zlib.Z_SYNC_FLUSH)) for b in BODIES)
    assert stats.ideal_wire_bytes(BODIES, level=6, encoding="zlib") == expected
    assert stats.ideal_wire_bytes(BODIES, level=0, encoding="identity") == sum(map(len, BODIES))
    with pytest.raises(ValueError, match="encoding"):
        stats.ideal_wire_bytes(BODIES, level=3, encoding="brotli")


@pytest.mark.parametrize("context", ["stream", "request", "frame"])
@pytest.mark.parametrize("encoding", ["zstd-8mb", "zlib"])
def test_inprocess_cpu_per_gb(context: stats.Context, encoding: str) -> None:
    cost = stats.inprocess_cpu_s_per_gb(
        BODIES, level=3, context=context, encoding=encoding, repeat=2
    )
    assert cost is not None
    assert 0 <= cost < 1000  # CPU seconds per GB: zstd level 3 is about 3-10 here


def test_inprocess_cpu_per_gb_without_bytes_is_none() -> None:
    assert stats.inprocess_cpu_s_per_gb([], level=3) is None
    assert stats.inprocess_cpu_s_per_gb([b""], level=3) is None


# --- latency ---------------------------------------------------------------------------------


def test_percentiles_of_1_to_1000_ms() -> None:
    recorder = LatencyRecorder()
    for ms in range(1, 1001):
        recorder.record_s(ms / 1000)
    p = recorder.percentiles_ms()
    assert set(p) == {"p50", "p90", "p99", "p999"}
    # HDR keeps 3 significant digits: values are exact to within 0.1% (rounded up).
    assert p["p50"] == pytest.approx(500, rel=1e-3)
    assert p["p90"] == pytest.approx(900, rel=1e-3)
    assert p["p99"] == pytest.approx(990, rel=1e-3)
    assert p["p999"] == pytest.approx(999, rel=1e-3)
    assert recorder.count == 1000
    assert recorder.max_ms() == pytest.approx(1000, rel=1e-3)
    assert recorder.mean_ms() == pytest.approx(500.5, rel=1e-3)


def test_empty_recorder() -> None:
    recorder = LatencyRecorder()
    assert recorder.percentiles_ms() == {"p50": None, "p90": None, "p99": None, "p999": None}
    assert recorder.cdf_points() == []
    assert recorder.max_ms() is None
    assert recorder.mean_ms() is None


def test_out_of_range_latencies() -> None:
    recorder = LatencyRecorder()
    recorder.record_s(0.0)  # below 1 us: recorded as 1 us
    recorder.record_s(3600.0)  # above 60 s: recorded as 60 s and counted
    assert recorder.count == 2
    assert recorder.clamped == 1
    assert recorder.max_ms() == pytest.approx(60_000, rel=1e-3)
    with pytest.raises(ValueError):
        recorder.record_s(-0.001)
    with pytest.raises(ValueError):
        recorder.record_s(math.nan)


def test_cdf_points() -> None:
    recorder = LatencyRecorder()
    for ms in (1, 1, 2, 5, 5, 5, 100):
        recorder.record_s(ms / 1000)
    points = recorder.cdf_points()
    assert len(points) == 4
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    assert xs == sorted(xs)
    assert ys == sorted(ys)
    assert ys[-1] == 1.0
    assert points[0] == pytest.approx((1.0, 2 / 7), rel=1e-3)
    assert xs[-1] == pytest.approx(100, rel=1e-3)


def test_cdf_points_thinned() -> None:
    recorder = LatencyRecorder()
    for us in range(1, 5001):
        recorder.record_s(us / 1e6 * 37)
    full = recorder.cdf_points()
    thin = recorder.cdf_points(max_points=50)
    assert len(full) > 50
    assert len(thin) == 50
    assert thin[0] == full[0]
    assert thin[-1] == full[-1]


def test_merge_and_encode() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    for ms in range(1, 501):
        a.record_s(ms / 1000)
    for ms in range(501, 1001):
        b.record_s(ms / 1000)
    b.record_s(100.0)
    shipped = LatencyRecorder.decode(b.encode())
    assert shipped.count == b.count
    assert shipped.percentiles_ms() == b.percentiles_ms()
    a.merge(b)
    assert a.count == 1001
    assert a.clamped == 1
    assert a.percentiles_ms()["p50"] == pytest.approx(501, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60_000_000), min_size=1, max_size=200))
def test_percentiles_match_exact_quantiles(values_us: list[int]) -> None:
    recorder = LatencyRecorder()
    for us in values_us:
        recorder.record_s(us / 1e6)
    ordered = sorted(values_us)
    for name, pct in stats.PERCENTILES.items():
        rank = max(1, int(pct * len(ordered) / 100 + 0.5))  # HDR's target count
        exact_ms = ordered[rank - 1] / 1000
        got = recorder.percentiles_ms()[name]
        assert got is not None
        assert exact_ms <= got <= exact_ms * 1.001 + 0.001


# --- scaling projection ----------------------------------------------------------------------


def test_scaling_projection_on_known_inputs() -> None:
    # Workers: 3.3 CPU s/GB each; front: 0.5 CPU s/GB, so one front carries 2 GB/s.
    rows = stats.scaling_projection(0.5, 3.3)
    assert [row["cores"] for row in rows] == [4, 8, 16, 32, 64]
    assert [row["workers"] for row in rows] == [3, 7, 15, 31, 63]
    assert rows[0]["gb_per_s"] == pytest.approx(3 / 3.3)
    assert rows[0]["bound"] == "workers"
    assert rows[1]["gb_per_s"] == pytest.approx(2.0)  # 7 / 3.3 = 2.12 > 2
    assert rows[1]["bound"] == "front"
    assert all(row["gb_per_s"] == pytest.approx(2.0) for row in rows[1:])
    assert stats.workers_one_front_can_feed(0.5, 3.3) == pytest.approx(6.6)


def test_scaling_projection_tie_and_custom_cores() -> None:
    rows = stats.scaling_projection(1.0, 3.0, cores=(2, 4, 5))
    assert [r["gb_per_s"] for r in rows] == pytest.approx([1 / 3, 1.0, 1.0])
    # With 3 workers the workers carry exactly what the front does: a tie is workers-bound.
    assert [r["bound"] for r in rows] == ["workers", "workers", "front"]
    with pytest.raises(ValueError):
        stats.scaling_projection(1.0, 3.0, cores=(1,))


def test_scaling_projection_zero_and_missing_costs() -> None:
    free_front = stats.scaling_projection(0.0, 2.0, cores=(4,))
    assert free_front[0]["gb_per_s"] == pytest.approx(1.5)
    assert free_front[0]["bound"] == "workers"
    free_workers = stats.scaling_projection(0.25, 0.0, cores=(4,))
    assert free_workers[0]["gb_per_s"] == pytest.approx(4.0)
    assert free_workers[0]["bound"] == "front"
    for front, workers in ((0.0, 0.0), (None, 2.0), (0.5, None)):
        (row,) = stats.scaling_projection(front, workers, cores=(8,))
        assert row == {"cores": 8, "workers": 7, "gb_per_s": None, "bound": None}


def test_workers_one_front_can_feed_edges() -> None:
    assert stats.workers_one_front_can_feed(0.0, 2.0) == math.inf
    assert stats.workers_one_front_can_feed(0.5, 0.0) is None
    assert stats.workers_one_front_can_feed(None, 2.0) is None
    assert stats.workers_one_front_can_feed(0.5, None) is None


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=0.0, max_value=90.0), min_size=1, max_size=300))
def test_latencies_recorded_in_batches_equal_each_recorded_alone(seconds: list[float]) -> None:
    """The recorder counts latencies per HDR bucket and adds them to the histogram when it is
    read: the histogram is the one ``record_value`` of each latency makes."""
    recorder = LatencyRecorder()
    alone = HdrHistogram(stats.LOWEST_US, stats.HIGHEST_US, stats.SIGNIFICANT_DIGITS)
    for i, value in enumerate(seconds):
        recorder.record_s(value)
        micros = min(stats.HIGHEST_US, max(stats.LOWEST_US, round(value * 1_000_000)))
        alone.record_value(micros)
        if i == len(seconds) // 2:
            assert recorder.count == i + 1  # a read half-way: the rest still adds up
    assert recorder.count == alone.get_total_count() == len(seconds)
    assert recorder.encode() == alone.encode().decode("ascii")
    assert recorder.max_ms() == alone.get_max_value() / 1000.0
    assert recorder.mean_ms() == alone.get_mean_value() / 1000.0
    assert recorder.clamped == sum(round(v * 1_000_000) > stats.HIGHEST_US for v in seconds)
