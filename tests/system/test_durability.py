"""Durability: what ``put`` acknowledged survives ``kill -9`` of every process of the server
(the supervisor, its fronts and its workers: the process group), and the next server on the
same store serves the same bytes with the same digest, having swept the temp files of puts
killed mid-way and the killed server's ipc directory."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from serverproc import TOKEN, running_server

from bench.client import Client, body_digest
from workers.generate import generate
from workers.store_temp import TMP_PREFIX

pytestmark = pytest.mark.timeout(60)

#: Objects of several sizes and kinds, the largest over one frame.
OBJECTS = {
    "durable/small": b"acknowledged means on disk",
    "durable/text": generate(300_000, "text", 1),
    "durable/random": generate(1_500_000, "random", 2),
    "durable/deep/empty": b"",
}


def test_acknowledged_puts_survive_kill_9_of_the_process_group(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ipc_base = tmp_path / "ipc"
    ipc_base.mkdir()
    env = {"TMPDIR": str(ipc_base)}
    (tmp_path / "first").mkdir()
    with running_server(tmp_path / "first", store=store, env=env) as srv:
        with Client.connect("127.0.0.1", srv.port, token=TOKEN, timeout=20) as client:
            for stream, (key, data) in enumerate(OBJECTS.items()):
                client.put(key, data, stream=2 * stream + 1)
        killed_ipc = [p.name for p in ipc_base.iterdir()]
        assert len(killed_ipc) == 1
        # What a put killed mid-way leaves: a temp file beside the key, partly written.
        leftover = store / "durable" / f"{TMP_PREFIX}0123456789abcdef"
        leftover.write_bytes(OBJECTS["durable/text"][:1000])
        group = os.getpgid(srv.proc.pid)
        assert group == srv.proc.pid  # its own process group, as a service manager gives it
        processes = [srv.proc.pid, *(p.pid for p in psutil.Process(srv.proc.pid).children(True))]
        assert len(processes) >= 4  # the supervisor, a front and two workers
        os.killpg(group, signal.SIGKILL)
        assert srv.proc.wait(10) == -signal.SIGKILL
        _gone, alive = psutil.wait_procs([psutil.Process(p) for p in processes[1:]], timeout=10)
        assert alive == []
    (tmp_path / "second").mkdir()
    with (
        running_server(tmp_path / "second", store=store, env=env) as srv,
        Client.connect("127.0.0.1", srv.port, timeout=20) as client,
    ):
        for key, data in OBJECTS.items():
            response = client.get(key)
            assert response.body == data, key
            assert response.header["digest"] == body_digest(data), key
            assert response.verify_digest()
        listed = client.list("durable/").header["keys"]
        assert not leftover.exists()  # swept at start
        assert [p.name for p in ipc_base.iterdir()] != killed_ipc  # the killed one's is gone
        assert len(list(ipc_base.iterdir())) == 1
    assert len(listed) == len(OBJECTS)  # the objects, and no temp file
    assert not any(TMP_PREFIX in str(entry) for entry in listed)
