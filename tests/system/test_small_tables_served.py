"""``--small-tables-from`` on real processes on 127.0.0.1: a server started with 0 gives its
workers' first zstd context small match tables (and one started without it does not), and
``zplex bench`` passes the option to the server it starts, records it, and warns when a
server's tables and its in-process reference's differ. The remote worker's case, which learns
the option from the front, is in test_remote.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serverproc import running_server

from bench import server_process
from bench.client import Client
from server.cli import main
from workers.generate import generate

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("args", "small"), [(("--small-tables-from", "0"), 1), ((), 0)])
def test_a_worker_started_with_0_gives_its_first_context_small_tables(
    tmp_path: Path, args: tuple[str, ...], small: int
) -> None:
    with (
        running_server(tmp_path, *args, workers=1) as srv,
        Client.connect("127.0.0.1", srv.port, encodings=("zstd-8mb",), timeout=20) as client,
    ):
        assert client.generate(30_000, "log", 1, stream=3).body == generate(30_000, "log", 1)
        (worker,) = client.stats(stream=3).header["workers"]  # the same stream: no new context
    assert worker["small_table_contexts"] == small


def test_the_bench_passes_it_to_its_server_and_warns_when_the_tables_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["bench", "-w", "stdlib", "--limit", "64K", "--policies", "stream", "-n", "20"]
    common += ["--warmup", "0"]
    own = tmp_path / "own.json"
    status = main([*common, "--workers", "1", "--small-tables-from", "0", "--json", str(own)])
    assert status == 0, capsys.readouterr().err
    data = json.loads(own.read_text())
    assert data["metadata"]["config"]["small_tables_from"] == 0
    # Had the server not given its contexts small tables, the reference (small ones) would
    # differ from them, and the run would say so.
    assert not [w for w in data["warnings"] if "unlike compressions" in w]

    # A running server with small tables on every context, measured with --connect: the
    # bench's reference keeps default tables, and the workers' stats say they differ.
    server = server_process.ServerProcess(workers=1, token="t0ken", small_tables_from=0)
    try:
        server.start()
        connected = tmp_path / "connect.json"
        argv = ["--connect", str(server.endpoint), "--token", "t0ken", "--json", str(connected)]
        assert main([*common, *argv]) == 0, capsys.readouterr().err
    finally:
        server.stop()
    data = json.loads(connected.read_text())
    assert data["metadata"]["config"]["small_tables_from"] is None  # not the bench's to know
    (warning,) = [w for w in data["warnings"] if "unlike compressions" in w]
    assert warning.startswith("stdlib / stream: the workers gave ")
    assert "--small-tables-from" in warning
