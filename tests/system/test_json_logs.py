"""``--log-format json`` on real processes: every line the server writes is one JSON object
with the time, level, role and index of its process and the message; a connection error
carries the connection id and the error code as fields; the start banner shows at the
default level, and the lifecycle lines are INFO."""

from __future__ import annotations

import json
import signal
import socket
from datetime import datetime
from pathlib import Path

import pytest
from serverproc import running_server

pytestmark = pytest.mark.timeout(120)


def lines_of(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    """The server's log lines, parsed, from start to a SIGTERM drain; a client sends it
    bytes that are not frames meanwhile."""
    with running_server(tmp_path, "--fronts", "2", "--log-format", "json", *args) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"\xff" * 64)  # not a frame: a protocol error ends the connection
            while sock.recv(4096):
                pass
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        assert srv.proc.stdout is not None
        output = srv.proc.stdout.read().decode()
    return [json.loads(line) for line in output.splitlines()]


def test_json_lines_at_info(tmp_path: Path) -> None:
    lines = lines_of(tmp_path, "--log-level", "INFO")
    for line in lines:
        assert {"time", "level", "role", "index", "message"} <= line.keys(), line
        datetime.fromisoformat(str(line["time"]))
    roles = {(line["role"], line["index"]) for line in lines}
    assert {("supervisor", None), ("front", 0), ("front", 1)} <= roles
    by_message = {str(line["message"]): line for line in lines}
    banner = next(m for m in by_message if m.startswith("zplex serving on"))
    assert by_message[banner]["level"] == "INFO"
    assert by_message["shutting down"]["level"] == "INFO"
    failed = [line for line in lines if line.get("code") == "protocol"]
    assert failed and isinstance(failed[0]["conn"], int)
    assert failed[0]["role"] == "front"


def test_banner_shows_at_the_default_level(tmp_path: Path) -> None:
    lines = lines_of(tmp_path)
    messages = [str(line["message"]) for line in lines]
    assert any(m.startswith("zplex serving on") for m in messages), messages
    assert "shutting down" not in messages  # INFO: below the default WARNING
    assert all(line["level"] != "INFO" or line["logger"] == "zplex.banner" for line in lines)
