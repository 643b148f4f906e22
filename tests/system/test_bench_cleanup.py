"""``zplex bench --connect --cleanup`` against a real ``zplex serve --allow-delete`` on
127.0.0.1: it removes exactly the objects the run put (never one the store held before the
run), at the end of a run, after a failed run and after Ctrl-C; against a server without
``--allow-delete`` it fails before any put. The parts without processes:
tests/units/test_cleanup_ledger.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from serverproc import TOKEN, ServerProcess, bench_until, running_server

from bench import main as bench_main
from server.cli import main
from workers.store_temp import LOCK_NAME

#: The corpus: keys dir/a/one.txt, dir/a/two.txt, dir/b/three.txt, dir/top.txt.
FILES = {
    "a/one.txt": b"one " * 300,
    "a/two.txt": b"two " * 400,
    "b/three.txt": b"three " * 500,
    "top.txt": b"top " * 600,
}


def corpus(directory: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def store_files(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in store.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def bench_args(server: ServerProcess, *more: str) -> list[str]:
    return [
        "bench", "--connect", f"127.0.0.1:{server.port}", "--token", TOKEN, "--cleanup",
        "--policies", "stream", "-c", "1", "-s", "2", "--warmup", "0", *more,
    ]  # fmt: skip


def held_before(store: Path) -> dict[str, bytes]:
    """A store that holds, before the run, one of the corpus's objects as it is, one with
    other bytes (the run puts it again), and an object of its own."""
    before = {
        "dir/a/one.txt": FILES["a/one.txt"],
        "dir/b/three.txt": b"an older three",
        "mine/keep.bin": b"the user's",
    }
    corpus(store, before)
    return before


@pytest.mark.timeout(60)
def test_cleanup_removes_exactly_the_objects_the_run_put(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    held_before(store)
    source = corpus(tmp_path / "corpus")
    out = tmp_path / "out.json"
    with running_server(tmp_path, "--allow-delete", workers=1, store=store) as server:
        args = bench_args(server, "--dir", str(source), "-n", "20", "--json", str(out))
        assert main(args) == 0, capsys.readouterr().err
        at = f"127.0.0.1:{server.port}"
    err = capsys.readouterr().err
    put = len(FILES["a/two.txt"]) + len(FILES["top.txt"])  # what the store lacked
    assert f"removed 2 objects ({put / 1e6:.1f} MB) this run put into the store of {at}" in err
    assert "kept 1 objects this run put again" in err
    assert "they stay there" not in err
    # The object held as it was, the one put again over older bytes, the user's own: only
    # the two the store lacked are gone, with the directory they leave empty (none here).
    assert store_files(store) == {
        "dir/a/one.txt": FILES["a/one.txt"],
        "dir/b/three.txt": FILES["b/three.txt"],
        "mine/keep.bin": b"the user's",
    }
    metadata = json.loads(out.read_text())["metadata"]
    assert metadata["cleanup"] == {"deleted": 2, "bytes": put, "failed": {}, "kept": 1}
    assert metadata["put_objects"] == {f"dir:{source}": 3}
    assert metadata["config"]["cleanup"] is True
    assert json.loads(out.read_text())["runs"][0]["errors"] == {}


@pytest.mark.timeout(60)
def test_a_failed_run_still_removes_what_it_put(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second workload cannot be put (its file ``dir/a`` would replace the directory of
    the first one's objects): the run fails, and what the first one put goes."""
    store = tmp_path / "store"
    before = held_before(store)
    first = corpus(tmp_path / "first")
    second = corpus(tmp_path / "second", {"a": b"a file where a directory is"})
    with running_server(tmp_path, "--allow-delete", workers=1, store=store) as server:
        args = bench_args(server, "--dir", str(first), "--dir", str(second), "-n", "10")
        assert main(args) == 1  # the run failed
    err = capsys.readouterr().err
    assert "filling the store for dir:" in err and "bad-request" in err
    assert "removed 2 objects" in err and "Traceback" not in err
    assert err.index("bad-request") < err.index("removed 2 objects")  # the failure first
    assert store_files(store) == {**before, "dir/b/three.txt": FILES["b/three.txt"]}


@pytest.mark.timeout(90)
def test_an_interrupted_run_still_removes_what_it_put(tmp_path: Path) -> None:
    store = tmp_path / "store"
    before = held_before(store)
    source = corpus(tmp_path / "corpus")
    with running_server(tmp_path, "--allow-delete", workers=1, store=store) as server:
        args = [*bench_args(server, "--dir", str(source))[1:], "-d", "30"]
        # Once measuring, the objects are in the store.
        with bench_until(args, tmp_path, "/ stream ...") as proc:
            assert len(store_files(store)) == len(before) + 2
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "removed 2 objects" in err and "Traceback" not in err
    assert store_files(store) == {**before, "dir/b/three.txt": FILES["b/three.txt"]}


@pytest.mark.timeout(60)
def test_cleanup_needs_a_server_that_offers_delete_and_puts_nothing_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    before = held_before(store)
    source = corpus(tmp_path / "corpus")
    with running_server(tmp_path, workers=1, store=store) as server:
        assert main(bench_args(server, "--dir", str(source), "-n", "10")) == 1
        at = f"127.0.0.1:{server.port}"
    err = capsys.readouterr().err
    assert f"--cleanup: the server at {at} does not offer delete" in err
    assert "zplex serve --allow-delete" in err and "Traceback" not in err
    assert store_files(store) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_during_the_cleanup_keeps_the_runs_figures(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signum: int,
    status: int,
) -> None:
    """Ctrl-C or SIGTERM while the objects are being deleted stops the cleanup, says what is
    left in the store, and still writes the finished run (JSON, tables) with its status."""
    store = tmp_path / "store"
    held_before(store)
    source = corpus(tmp_path / "corpus")
    out = tmp_path / "run.json"

    def interrupted(cleanup: Any, ledger: Any, *args: Any) -> None:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(10)  # the signal's handler raises KeyboardInterrupt here
        except KeyboardInterrupt:
            cleanup.failed["interrupted"] += len(ledger.sent)
            raise

    monkeypatch.setattr(bench_main, "remove_objects", interrupted)
    with running_server(tmp_path, "--allow-delete", workers=1, store=store) as server:
        args = bench_args(server, "--dir", str(source), "-n", "10", "--json", str(out))
        assert main(args) == status
    data = json.loads(out.read_text())
    assert [run["policy"] for run in data["runs"]] == ["stream"]
    assert data["metadata"]["cleanup"]["failed"] == {"interrupted": 2}
    assert any("--cleanup was interrupted: 2 object(s)" in w for w in data["warnings"])
    err = capsys.readouterr().err
    assert "could not remove 2 objects (interrupted: 2)" in err and "Traceback" not in err
