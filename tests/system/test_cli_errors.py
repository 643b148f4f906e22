"""The command-line tools' errors name the thing at fault (issue 11): a local file, a flag, a
host, a missing token; a closed pipe ends quietly; a typo prints the subcommand's usage."""

from __future__ import annotations

import contextlib
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess, running_server, zplex

from bench import connect_failure
from server.cli import main as cli_main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("cli"), workers=1) as srv:
        yield srv


def address(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


def test_get_to_an_unwritable_output_blames_the_file(server: ServerProcess) -> None:
    done = zplex("get", "x", "-o", "/nonexistent/x", "--connect", address(server))
    assert done.returncode == 2
    assert "/nonexistent/x" in done.stderr
    assert "cannot talk" not in done.stderr


def test_get_names_the_key_it_finds_nothing_under_and_refuses_bad_ranges_and_outputs(
    server: ServerProcess, tmp_path: Path
) -> None:
    done = zplex("get", "no/such", "--connect", address(server))
    assert done.returncode == 1
    assert (
        done.stderr
        == f"zplex get: not-found: no object 'no/such' in the store of {address(server)}\n"
    )
    for flag in ("--offset", "--length"):
        done = zplex("get", "k", flag, "-1", "--connect", address(server))
        assert done.returncode == 2
        assert f"argument {flag}: must be an integer >= 0, not -1" in done.stderr
    done = zplex("get", "k", "-o", str(tmp_path), "--connect", address(server))
    assert done.returncode == 2
    assert done.stderr == f"zplex get: cannot write {tmp_path}: it is a directory\n"


def test_timeout_zero_is_a_bad_argument() -> None:
    done = zplex("get", "x", "--timeout", "0")
    assert done.returncode == 2
    assert "usage: zplex get" in done.stderr
    assert "--timeout" in done.stderr and "positive" in done.stderr


def test_a_closed_pipe_ends_quietly(server: ServerProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "stats", "--json", "--connect", address(server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0
    assert stderr == ""


@pytest.fixture(scope="module")
def not_serving() -> Iterator[dict[str, str]]:
    """Addresses where no zplex server answers, by what goes wrong: ``refused`` (a port bound
    but not listening), ``unanswered`` (a listener whose accept queue is full, so the kernel
    drops new connections: connect times out), ``silent`` (accepts, never says a word)."""
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = [socket.socket() for _ in range(2)]
    for filler in fillers:  # the first one fills the queue; the next is dropped
        filler.settimeout(0.5)
        with contextlib.suppress(OSError):
            filler.connect(full.getsockname())
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield {
            "refused": f"127.0.0.1:{refused.getsockname()[1]}",
            "unresolvable": "nosuch.invalid:1234",
            "unanswered": f"127.0.0.1:{full.getsockname()[1]}",
            "silent": f"127.0.0.1:{silent.getsockname()[1]}",
        }
    finally:
        for sock in (refused, full, silent, *fillers, *accepted):
            sock.close()


#: What each failure to connect says: the thing at fault, named.
CONNECT_FAILURES = {
    "refused": "cannot connect to {address}: connection refused (is a zplex server running there?)",
    "unresolvable": "cannot resolve host nosuch.invalid",
    "unanswered": "cannot connect to {address}: no answer within 0.3 s (is the address right, "
    "or is a firewall dropping the connection?)",
    "silent": "{address} did not answer the zplex handshake within 0.3 s: is it a zplex server?",
}


@pytest.mark.parametrize("case", sorted(CONNECT_FAILURES))
@pytest.mark.parametrize(
    "argv",
    [["list"], ["get", "key"], ["stats"], ["bench", "-w", "generate:json", "-n", "5"]],
    ids=lambda argv: argv[0],
)
def test_a_failed_connect_names_what_is_at_fault(
    case: str, argv: list[str], not_serving: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    address = not_serving[case]
    started = time.monotonic()
    assert cli_main([*argv, "--connect", address, "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"zplex {argv[0]}: {CONNECT_FAILURES[case].format(address=address)}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert time.monotonic() - started < 5


def test_the_handshake_timeout_is_the_benchs_for_every_client_command(
    not_serving: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --timeout (30 s), a port that never speaks fails after the handshake timeout
    the bench uses (10 s, shortened here), not after the request timeout."""
    monkeypatch.setattr(connect_failure, "HANDSHAKE_TIMEOUT_S", 0.5)
    address = not_serving["silent"]
    for argv in (["capabilities"], ["bench", "-w", "generate:json", "-n", "5"]):
        started = time.monotonic()
        assert cli_main([*argv, "--connect", address]) == 1
        message = f"{address} did not answer the zplex handshake within 0.5 s"
        assert message in capsys.readouterr().err
        assert time.monotonic() - started < 5


def test_serve_with_a_bad_host_names_it(tmp_path: Path) -> None:
    done = zplex("serve", "--host", "no-such-host.invalid", "--port", "0", "--store", str(tmp_path))
    assert done.returncode == 2
    assert "--host 'no-such-host.invalid'" in done.stderr


def test_workers_zero_names_worker_listen(tmp_path: Path) -> None:
    done = zplex("serve", "--workers", "0", "--port", "0", "--store", str(tmp_path))
    assert done.returncode == 2
    assert "--worker-listen" in done.stderr


def test_a_typo_in_a_flag_prints_the_subcommands_usage() -> None:
    done = zplex("get", "key", "--ofset", "3")
    assert done.returncode == 2
    assert "usage: zplex get" in done.stderr
    assert "--ofset" in done.stderr
    # A subcommand's own subcommand: its usage, not its parent's.
    nested = zplex("bench", "compare", "a.json", "b.json", "--bogus")
    assert nested.returncode == 2
    assert nested.stderr.startswith("usage: zplex bench compare A.json B.json")
    assert "zplex bench compare: error: unrecognized arguments: --bogus" in nested.stderr
    nested = zplex("frames", "decode", "--bogus")
    assert nested.returncode == 2
    assert nested.stderr.startswith("usage: zplex frames decode")


def test_put_without_permission_hints_at_the_token(server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    done = zplex("put", "k", str(source), "--connect", address(server))
    assert done.returncode == 1
    assert "forbidden" in done.stderr
    assert "--token" in done.stderr and "ZPLEX_WRITE_TOKEN" in done.stderr


def test_get_without_digest(server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"some data " * 100)
    env = {"ZPLEX_WRITE_TOKEN": "test-token"}
    assert zplex("put", "nd", str(source), "--connect", address(server), env=env).returncode == 0
    out = tmp_path / "copy"
    done = zplex("get", "nd", "--no-digest", "-o", str(out), "--connect", address(server))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == source.read_bytes()


def test_keys_are_private_and_not_overwritten(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert zplex("keys", str(keys)).returncode == 0
    for name in ("front.key_secret", "worker.key_secret"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    before = (keys / "front.key_secret").read_bytes()
    again = zplex("keys", str(keys))
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert (keys / "front.key_secret").read_bytes() == before
    assert zplex("keys", "--force", str(keys)).returncode == 0
    assert (keys / "front.key_secret").read_bytes() != before
    assert stat.S_IMODE((keys / "worker.key_secret").stat().st_mode) == 0o600
    a_file = keys / "front.key"
    onto_a_file = zplex("keys", str(a_file))
    assert onto_a_file.returncode == 2
    assert onto_a_file.stderr == f"zplex keys: {a_file} is not a directory\n"


def test_client_library_digest_parameter(server: ServerProcess) -> None:
    from bench.client import Client, body_digest

    with Client.connect("127.0.0.1", server.port, token="test-token") as client:
        client.put("lib/digest", b"payload " * 50)
        with_digest = client.get("lib/digest")
        without = client.get("lib/digest", digest=False)
        assert with_digest.header["digest"] == body_digest(with_digest.body)
        assert "digest" not in without.header
        assert without.header["size"] == len(without.body) == 400
        assert without.body == with_digest.body
        assert without.verify_digest() is None
        generated = client.generate(1000, "json", 3, digest=False)
        assert "digest" not in generated.header and len(generated.body) == 1000
        assert client.generate(1000, "json", 3).header["digest"] == body_digest(generated.body)


def test_serve_refuses_a_port_another_server_listens_on(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The fronts share their port with SO_REUSEPORT: without a check, a second server would
    silently share the first one's port and split its clients."""
    result = zplex("serve", "--port", str(server.port), "--store", str(tmp_path / "s"))
    assert result.returncode == 1
    assert f"127.0.0.1:{server.port}: Address already in use" in result.stderr


def test_serve_checks_the_ready_files_directory_before_it_starts(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "ready.json"
    result = zplex(
        "serve", "--port", "0", "--store", str(tmp_path / "s"), "--ready-file", str(missing)
    )
    assert result.returncode == 2
    assert "is not a writable directory" in result.stderr


def test_a_generate_size_the_server_refuses_names_the_flag(tmp_path: Path) -> None:
    """bench -w generate:KIND with --generate-size over the server's --max-generate-bytes: one
    line naming the flag (exit status 1), not an exception logged per request in flight; and
    --generate-size 0 is a bad argument before anything starts."""
    with running_server(tmp_path, "--max-generate-bytes", "1000", workers=1) as srv:
        done = zplex(
            "bench", "--connect", f"127.0.0.1:{srv.port}", "-w", "generate:json",
            "--generate-size", "2K", "-n", "40", "--policies", "stream",
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "--generate-size is 2,048 bytes (the server's largest generate is its " in done.stderr
    assert "--max-generate-bytes" in done.stderr
    assert "never retrieved" not in done.stderr and "Traceback" not in done.stderr
    zero = zplex("bench", "-w", "generate:json", "--generate-size", "0", "-n", "1")
    assert zero.returncode == 2
    assert zero.stderr == "zplex bench: --generate-size must be at least 1 byte, not 0\n"
