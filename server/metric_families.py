"""The server's figures as Prometheus metric families: what ``/metrics`` shows.

Pure: a snapshot (the supervisor's own figures, every front's and every worker's, as
gathered by :mod:`server.metrics_endpoint`) in, ``prometheus_client`` metric families out.
Every series is labelled with the process it comes from (``front``, ``worker``, or ``role``
and ``index``): a process that restarts starts its counters again from zero, which
Prometheus's ``rate()`` takes as a counter reset. The README lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from server.request_meter import LATENCY_BUCKETS_S


def families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    fronts: list[dict[str, Any]] = snapshot.get("fronts", [])
    workers: list[dict[str, Any]] = snapshot.get("workers", [])
    yield from _request_families(fronts)
    yield from _front_families(fronts)
    yield from _worker_families(workers)
    yield from _process_families(snapshot.get("supervisor"), fronts, workers)


def _request_families(fronts: list[dict[str, Any]]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "zplex_requests", "Requests received, by front and command", labels=["front", "command"]
    )
    errors = CounterMetricFamily(
        "zplex_errors",
        "Requests answered with an error-response, by front, command and error code",
        labels=["front", "command", "code"],
    )
    latency = HistogramMetricFamily(
        "zplex_request_latency_seconds",
        "Time from a request's last frame in to its response's last frame out, in the front",
        labels=["front", "command"],
    )
    failed = CounterMetricFamily(
        "zplex_connection_errors",
        "Connections ended by a connection-level error, by front and error code",
        labels=["front", "code"],
    )
    for front in fronts:
        index = str(front["index"])
        meter = front.get("meter", {})
        for command, figures in sorted(meter.get("commands", {}).items()):
            requests.add_metric([index, command], figures["requests"])
            for code, count in sorted(figures["errors"].items()):
                errors.add_metric([index, command, code], count)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(
                [*map(str, LATENCY_BUCKETS_S), "+Inf"], figures["buckets"], strict=True
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([index, command], buckets, figures["latency_sum_s"])
        for code, count in sorted(meter.get("connection_errors", {}).items()):
            failed.add_metric([index, code], count)
    yield from (requests, errors, latency, failed)


def _front_families(fronts: list[dict[str, Any]]) -> Iterator[Metric]:
    label = ["front"]
    connections = GaugeMetricFamily("zplex_connections", "Open client connections", labels=label)
    accepted = CounterMetricFamily(
        "zplex_connections_accepted", "Client connections accepted", labels=label
    )
    streams = GaugeMetricFamily(
        "zplex_streams", "Client streams routed to a worker (open or answering)", labels=label
    )
    received = CounterMetricFamily(
        "zplex_received_bytes", "Bytes received from clients (every frame)", labels=label
    )
    sent = CounterMetricFamily(
        "zplex_sent_bytes", "Bytes sent to clients (every frame)", labels=label
    )
    losses = CounterMetricFamily(
        "zplex_worker_losses",
        "Workers this front lost (died, fell silent or started over)",
        labels=label,
    )
    for front in fronts:
        index = [str(front["index"])]
        connections.add_metric(index, front["connections"])
        accepted.add_metric(index, front["connections_total"])
        streams.add_metric(index, front["streams"])
        received.add_metric(index, front["bytes_in"])
        sent.add_metric(index, front["bytes_out"])
        losses.add_metric(index, front["worker_restarts"])
    yield from (connections, accepted, streams, received, sent, losses)


def _worker_families(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    label = ["worker"]
    traffic = ["worker", "encoding", "context"]
    raw = CounterMetricFamily(
        "zplex_response_raw_bytes",
        "Response body bytes before compression, by worker, encoding and context",
        labels=traffic,
    )
    wire = CounterMetricFamily(
        "zplex_response_wire_bytes",
        "Response bytes on the wire (every frame), by worker, encoding and context",
        labels=traffic,
    )
    requests = CounterMetricFamily("zplex_worker_requests", "Requests a worker ran", labels=label)
    streams = GaugeMetricFamily(
        "zplex_worker_streams", "Client streams a worker holds (with their contexts)", labels=label
    )
    memory = GaugeMetricFamily(
        "zplex_context_memory_bytes",
        "Memory of a worker's compression contexts (its own accounting)",
        labels=label,
    )
    evictions = CounterMetricFamily(
        "zplex_context_evictions",
        "Compression contexts a worker dropped to stay within its budget",
        labels=label,
    )
    for worker in workers:
        index = str(worker["index"])
        for encoding, context, raw_bytes, wire_bytes in worker.get("traffic", []):
            raw.add_metric([index, encoding, context], raw_bytes)
            wire.add_metric([index, encoding, context], wire_bytes)
        requests.add_metric([index], worker["requests"])
        streams.add_metric([index], worker["streams"])
        memory.add_metric([index], worker["context_bytes"])
        evictions.add_metric([index], worker["evictions"])
    yield from (raw, wire, requests, streams, memory, evictions)


def _process_families(
    supervisor: dict[str, Any] | None,
    fronts: list[dict[str, Any]],
    workers: list[dict[str, Any]],
) -> Iterator[Metric]:
    labels = ["role", "index"]
    cpu = CounterMetricFamily(
        "zplex_process_cpu_seconds", "CPU time (user and system) of each process", labels=labels
    )
    rss = GaugeMetricFamily(
        "zplex_process_resident_memory_bytes", "Resident memory of each process", labels=labels
    )
    restarts = CounterMetricFamily(
        "zplex_process_restarts", "Processes the supervisor replaced, by role", labels=["role"]
    )
    processes = [("front", f) for f in fronts] + [("worker", w) for w in workers]
    if supervisor is not None:
        processes.insert(0, ("supervisor", {"index": 0, **supervisor}))
        restarts.add_metric(["front"], supervisor["front_restarts"])
        restarts.add_metric(["worker"], supervisor["worker_restarts"])
    for role, figures in processes:
        index = [role, str(figures["index"])]
        cpu.add_metric(index, figures["cpu_user"] + figures["cpu_system"])
        rss.add_metric(index, figures["rss"])
    yield from (cpu, rss, restarts)
