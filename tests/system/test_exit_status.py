"""One exit-status convention for every ``zplex`` subcommand (README, "Exit status"): 0
success; 1 the operation failed (the server refused, the connection failed, the input did not
parse); 2 bad arguments or an unusable file, found before anything is sent; 130 on Ctrl-C.
Each case runs the real entry point (``python -m server.cli``) and reads its message."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from serverproc import TOKEN, running_server, zplex

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What the cases name: a running server, a refused address, files good and bad, a
    directory of keys."""
    tmp = tmp_path_factory.mktemp("exit")
    (tmp / "good.txt").write_text("1 1 0 1 0\n")
    (tmp / "bad.txt").write_text("1 1 0 1\n")
    (tmp / "bad.bin").write_bytes(bytes.fromhex("00 00 00 01 00 01 00"))
    assert zplex("keys", str(tmp / "keys")).returncode == 0
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    (tmp / "server").mkdir()
    with running_server(tmp / "server", workers=1) as server:
        yield {
            "tmp": str(tmp),
            "server": f"127.0.0.1:{server.port}",
            "port": str(server.port),
            "refused": f"127.0.0.1:{refused.getsockname()[1]}",
        }
    refused.close()


CASES = [
    # (argv, status, what stderr says)
    ([], 2, "the following arguments are required: COMMAND"),
    (["serve", "--limit", "nope=1"], 2, "--limit nope: unknown limit"),
    (["serve", "--port", "{port}", "--store", "{tmp}/s"], 1, "Address already in use"),
    (
        ["worker", "--connect", "tcp://{server}", "--keys", "{tmp}", "--store", "{tmp}/s"],
        2,
        "lacks",
    ),
    (["keys", "{tmp}/keys"], 2, "pass --force"),
    (["keys", "/proc/zplex-keys"], 1, "cannot write /proc/zplex-keys"),
    (["frames", "decode", "{tmp}/missing"], 2, "cannot read {tmp}/missing"),
    (["frames", "decode", "{tmp}/bad.bin"], 1, "truncated frame at byte offset 0"),
    (["frames", "encode", "{tmp}/missing"], 2, "cannot read {tmp}/missing"),
    (["frames", "encode", "{tmp}/bad.txt"], 1, "line 1: expected"),
    (["frames", "encode", "--hex", "{tmp}/good.txt"], 0, ""),
    (["get", "x", "-o", "{tmp}/missing/x", "--connect", "{refused}"], 2, "no such directory"),
    (["get", "x", "--timeout", "0"], 2, "must be a positive number of seconds"),
    (["get", "x", "--offset", "-1", "--connect", "{refused}"], 2, "must be an integer >= 0"),
    (["list", "--limit", "-2", "--connect", "{refused}"], 2, "must be an integer >= 0"),
    (["get", "no/such/key", "--connect", "{server}"], 1, "not-found"),
    (["put", "k", "{tmp}/missing", "--connect", "{refused}"], 2, "cannot read {tmp}/missing"),
    (["put", "k", "{tmp}/good.txt", "--connect", "{server}"], 1, "forbidden"),
    (["put", "k", "{tmp}/good.txt", "--connect", "{server}", "--token", TOKEN], 0, ""),
    (["delete", "k", "--connect", "{server}", "--token", TOKEN], 1, "--allow-delete"),
    (["bench", "--cleanup"], 2, "--cleanup goes with --connect"),
    (["list", "--connect", "no-port"], 2, "expected HOST:PORT"),
    (["list", "--connect", "{refused}"], 1, "connection refused"),
    (["list", "--connect", "{server}"], 0, ""),
    (["stats", "--connect", "{refused}"], 1, "connection refused"),
    (["capabilities", "--connect", "{server}"], 0, ""),
    (["bench", "--threshold", "stream.nope>1"], 2, "unknown figure 'nope'"),
    (["bench", "-w", "dir:{tmp}/missing"], 2, "is not a directory"),
    (["bench", "-w", "generate:json", "-n", "5", "--connect", "{refused}"], 1, "refused"),
    (["bench", "compare", "{tmp}/a.json", "{tmp}/b.json"], 2, "cannot read {tmp}/a.json"),
    (["bench", "--bogus"], 2, "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    CASES,
    ids=[" ".join(argv[:2]) + f" -> {status}" for argv, status, _ in CASES],
)
def test_exit_status(argv: list[str], status: int, message: str, places: dict[str, str]) -> None:
    done = zplex(*(arg.format(**places) for arg in argv))
    assert done.returncode == status, done.stderr
    assert message.format(**places) in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_is_130(places: dict[str, str]) -> None:
    """Ctrl-C while a client command waits for a server that says nothing."""
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "stats", "--connect", address],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert accepted, "the command did not connect"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for sock in (silent, *accepted):
            sock.close()
