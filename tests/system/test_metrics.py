"""``zplex serve --metrics-port``: the Prometheus endpoint scraped after known traffic, on
real processes, with one front and with two; the figures are parsed with prometheus_client's
own parser and must match the traffic (requests and errors by command and code, raw and
wire bytes by encoding and context)."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serverproc import TOKEN, ServerProcess, running_server
from test_fronts import clients_on_every_front
from test_remote import make_keys, remote_worker

from bench.client import Client, Response, ServerError

pytestmark = pytest.mark.timeout(120)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(srv: ServerProcess) -> Samples:
    host, port = srv.info["metrics"]
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (over every process)."""
    return sum(
        value
        for got, value in samples.get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def traffic(client: Client) -> list[Response]:
    """3 gets of one object, one get of a missing key, 2 echoes: 6 responses."""
    responses = [client.get("docs/a.txt", stream=1) for _ in range(3)]
    with pytest.raises(ServerError) as missing:
        client.get("no/such/key", stream=3)
    assert missing.value.code == "not-found"
    responses += [client.echo(b"x" * 1000, stream=5) for _ in range(2)]
    return responses


@pytest.mark.parametrize("fronts", [1, 2])
def test_metrics_match_known_traffic(tmp_path: Path, fronts: int) -> None:
    args = ("--fronts", str(fronts), "--metrics-port", "0")
    with running_server(tmp_path, *args, workers=2) as srv:
        with Client.connect("127.0.0.1", srv.port, token=TOKEN) as writer:
            writer.put("docs/a.txt", b"the same line again\n" * 500, stream=1)
        responses: list[Response] = []
        with clients_on_every_front(srv) as clients:
            before = scrape(srv)
            fronts_seen = {labels["front"] for labels, _ in before["zplex_connections"]}
            assert fronts_seen == {str(k) for k in range(fronts)}
            for client in clients.values():
                responses += traffic(client)
            after = scrape(srv)

        n = len(clients)
        assert n == fronts

        def grew(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert grew("zplex_requests_total", command="get") == 4 * n
        assert grew("zplex_requests_total", command="echo") == 2 * n
        assert grew("zplex_errors_total", command="get", code="not-found") == n
        assert grew("zplex_errors_total") == n
        assert grew("zplex_request_latency_seconds_count", command="get") == 4 * n
        assert grew("zplex_request_latency_seconds_count", command="echo") == 2 * n
        assert grew("zplex_request_latency_seconds_bucket", command="echo", le="+Inf") == 2 * n
        assert grew("zplex_request_latency_seconds_sum", command="get") > 0
        for front in range(fronts):  # every front served its share
            assert grew("zplex_requests_total", front=str(front), command="echo") == 2
        raw = sum(r.raw_bytes for r in responses)
        wire = sum(r.wire_bytes for r in responses)
        assert grew("zplex_response_raw_bytes_total", encoding="zstd-8mb", context="stream") == raw
        grew_wire = grew("zplex_response_wire_bytes_total", encoding="zstd-8mb", context="stream")
        assert grew_wire == wire
        assert total(after, "zplex_connections") >= n  # the clients are still open
        # Every process is there, with its CPU and memory.
        roles = [labels["role"] for labels, _ in after["zplex_process_cpu_seconds_total"]]
        assert sorted(roles) == sorted(["supervisor"] + ["front"] * fronts + ["worker"] * 2)
        assert all(value > 0 for _, value in after["zplex_process_resident_memory_bytes"])
        assert total(after, "zplex_process_restarts_total") == 0
        assert len(after["zplex_context_memory_bytes"]) == 2


def test_a_replaced_worker_is_counted(tmp_path: Path) -> None:
    with running_server(tmp_path, "--fronts", "1", "--metrics-port", "0", workers=1) as srv:
        old = srv.worker_pids()[0]
        os.kill(old, signal.SIGKILL)
        srv.wait_for(lambda: srv.worker_pids() and srv.worker_pids()[0] != old)

        def counted() -> bool:
            samples = scrape(srv)
            return (
                total(samples, "zplex_process_restarts_total", role="worker") == 1
                and total(samples, "zplex_worker_losses_total") == 1
                and len(samples["zplex_context_memory_bytes"]) == 1  # the new one answers
            )

        srv.wait_for(counted)


def test_remote_workers_are_scraped_too(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    args = ("--worker-listen", "tcp://127.0.0.1:0", "--worker-keys", str(keys), "--fronts", "1")
    with (
        running_server(tmp_path, *args, "--metrics-port", "0", workers=1) as srv,
        remote_worker(srv.info["worker_endpoint"], keys, srv.store),
    ):
        srv.wait_for(lambda: len(srv.info.get("remote_workers", [])) == 1)
        samples = scrape(srv)
        workers = {labels["worker"] for labels, _ in samples["zplex_context_memory_bytes"]}
        assert workers == {"0", "1"}  # the local worker and the remote one
        cpu = samples["zplex_process_cpu_seconds_total"]
        indexes = sorted(labels["index"] for labels, _ in cpu if labels["role"] == "worker")
        assert indexes == ["0", "1"]
