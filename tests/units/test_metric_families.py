"""The server's snapshot as Prometheus metric families, rendered in the text exposition
format and read back with prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from server.metric_families import families
from server.request_meter import LATENCY_BUCKETS_S


def front(index: int, get_requests: int) -> dict[str, Any]:
    buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
    buckets[0] = get_requests - 1
    buckets[-1] = 1
    return {
        "index": index, "pid": 10 + index, "cpu_user": 1.0, "cpu_system": 0.5, "rss": 1000,
        "connections": 2, "connections_total": 5, "streams": 3, "bytes_in": 100,
        "bytes_out": 200, "worker_restarts": 1,
        "meter": {
            "commands": {
                "get": {"requests": get_requests, "errors": {"not-found": 1}, "buckets": buckets,
                        "latency_sum_s": 12.5},
            },
            "connection_errors": {"protocol": 2},
        },
    }  # fmt: skip


WORKER = {
    "index": 0, "pid": 20, "remote": False, "cpu_user": 2.0, "cpu_system": 1.0, "rss": 3000,
    "max_rss": 4000, "streams": 4, "context_bytes": 5 << 20, "requests": 9, "bytes_raw": 900,
    "bytes_wire": 300, "evictions": 1,
    "traffic": [["zstd-8mb", "stream", 800, 200], ["identity", "request", 100, 100]],
}  # fmt: skip

SNAPSHOT = {
    "supervisor": {"pid": 1, "cpu_user": 0.25, "cpu_system": 0.25, "rss": 500,
                   "front_restarts": 1, "worker_restarts": 2},
    "fronts": [front(0, 4), front(1, 6)],
    "workers": [WORKER],
}  # fmt: skip


class Snapshot:
    def collect(self) -> Iterator[Metric]:
        return families(SNAPSHOT)


def parsed() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())  # type: ignore[arg-type]
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_every_figure_becomes_a_named_series() -> None:
    m = parsed()
    assert m["zplex_requests_total"][(("command", "get"), ("front", "1"))] == 6
    key = (("code", "not-found"), ("command", "get"), ("front", "0"))
    assert m["zplex_errors_total"][key] == 1
    assert m["zplex_connection_errors_total"][(("code", "protocol"), ("front", "0"))] == 2
    raw = m["zplex_response_raw_bytes_total"]
    assert raw[(("context", "stream"), ("encoding", "zstd-8mb"), ("worker", "0"))] == 800
    wire = m["zplex_response_wire_bytes_total"]
    assert wire[(("context", "request"), ("encoding", "identity"), ("worker", "0"))] == 100
    assert m["zplex_context_memory_bytes"][(("worker", "0"),)] == 5 << 20
    assert m["zplex_context_evictions_total"][(("worker", "0"),)] == 1
    assert m["zplex_connections"][(("front", "0"),)] == 2
    assert m["zplex_streams"][(("front", "1"),)] == 3
    assert m["zplex_worker_losses_total"][(("front", "0"),)] == 1
    cpu = m["zplex_process_cpu_seconds_total"]
    assert cpu[(("index", "0"), ("role", "supervisor"))] == 0.5
    assert cpu[(("index", "0"), ("role", "worker"))] == 3.0
    assert m["zplex_process_resident_memory_bytes"][(("index", "1"), ("role", "front"))] == 1000
    assert m["zplex_process_restarts_total"][(("role", "worker"),)] == 2


def test_latency_buckets_are_cumulative() -> None:
    m = parsed()
    labels = (("command", "get"), ("front", "0"))
    buckets = m["zplex_request_latency_seconds_bucket"]
    first = str(LATENCY_BUCKETS_S[0])
    assert buckets[(("command", "get"), ("front", "0"), ("le", first))] == 3
    assert buckets[(("command", "get"), ("front", "0"), ("le", "10.0"))] == 3
    assert buckets[(("command", "get"), ("front", "0"), ("le", "+Inf"))] == 4
    assert m["zplex_request_latency_seconds_count"][labels] == 4
    assert m["zplex_request_latency_seconds_sum"][labels] == 12.5


def test_an_empty_snapshot_is_valid() -> None:
    assert list(families({})) != []  # families with no samples, still well formed
