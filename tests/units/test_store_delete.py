"""The store's ``delete`` (workers/store_delete.py, ObjectStore.delete), called directly: the
object and the directories it leaves empty go, never the root; nothing, a directory or a
symlink is not found; bad keys are refused; nothing outside the store is touched; and a put
of the same key or into the same directory, landing at any step of a delete, never fails
and never loses its object to a delete that did not take it."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers import store_delete
from workers.store import BadKey, NotFound, ObjectStore
from workers.store_keys import StoreError
from workers.store_temp import LOCK_NAME, TEMP_NAME


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "objects")


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (directories with a trailing slash), the lock file aside."""
    return sorted(
        str(p.relative_to(root)) + ("/" if p.is_dir() and not p.is_symlink() else "")
        for p in root.rglob("*")
        if p.name != LOCK_NAME
    )


class OsWith:
    """The ``os`` module as workers/store_delete.py sees it, some functions replaced."""

    def __init__(self, **replaced: Callable[..., Any]) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_delete_removes_the_object_and_the_directories_it_leaves_empty(
    store: ObjectStore,
) -> None:
    store.put("a/b/c/deep.txt", b"12345")
    store.put("a/keep.txt", b"k")
    assert store.delete("a/b/c/deep.txt") == 5
    assert tree(store.root) == ["a/", "a/keep.txt"]  # a/b/c and a/b went, a holds keep.txt
    with pytest.raises(NotFound):
        store.get("a/b/c/deep.txt")
    assert store.list() == [("a/keep.txt", 1)]
    assert store.delete("a/keep.txt") == 1
    assert tree(store.root) == []
    assert store.root.is_dir()  # never the root, even once empty
    store.put("a/b/c/deep.txt", b"again")  # and the directories come back with a put
    assert store.get("a/b/c/deep.txt") == (b"again", 5)


def test_delete_of_an_empty_object_and_at_the_root(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.delete("empty") == 0
    assert tree(store.root) == [] and store.root.is_dir()


@pytest.mark.parametrize("key", ["missing", "no/such/dir/x", "d", "d/sub", "f/x"])
def test_a_key_that_names_no_object_is_not_found(store: ObjectStore, key: str) -> None:
    """Nothing there, a directory (empty or not), a file where a directory should be: not
    found, and nothing is changed."""
    store.put("d/sub/x", b"1")
    (store.root / "d" / "empty").mkdir()
    store.put("f", b"2")
    before = tree(store.root)
    with pytest.raises(NotFound):
        store.delete(key)
    assert tree(store.root) == before


@pytest.mark.parametrize(
    "key", ["", "/abs", "../up", "a/../b", "a//b", "a/./b", "nul\x00", ".zplex-tmp-lock", 7, None]
)
def test_a_bad_key_is_refused(store: ObjectStore, key: Any) -> None:
    store.put("a/b", b"1")
    with pytest.raises(BadKey):
        store.delete(key)
    assert store.get("a/b") == (b"1", 1)


def test_no_symlink_is_followed_in_or_out_of_the_store(store: ObjectStore, tmp_path: Path) -> None:
    """A symlink on the way (to a directory outside, or inside) or as the last component
    (to a file outside, or to an object) is not an object to delete: neither the link nor
    what it leads to is removed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    store.put("real/obj", b"object")
    (store.root / "out").symlink_to(outside)
    (store.root / "victim-link").symlink_to(outside / "victim")
    (store.root / "alias").symlink_to(store.root / "real")
    (store.root / "real" / "obj-link").symlink_to(store.root / "real" / "obj")
    before = tree(store.root)
    for key in ("out/victim", "victim-link", "alias/obj", "real/obj-link"):
        with pytest.raises(NotFound):
            store.delete(key)
    assert tree(store.root) == before
    assert (outside / "victim").read_bytes() == b"precious"
    assert store.get("real/obj") == (b"object", 6)


def test_a_directory_swapped_for_a_symlink_mid_delete_leads_nowhere_outside(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories are held open from the root down, so one replaced by a symlink to
    the outside once they are open leaves the delete in the real directory: the object
    removed is the store's, and no directory is removed through the symlink."""
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "d" / "x").write_bytes(b"precious")
    store.put("d/x", b"object")
    real_open_chain = store_delete.open_chain

    def swap_then_open(root: str, segments: list[str]) -> list[int]:
        chain = real_open_chain(root, segments)
        os.rename(store.root / "d", store.root / "moved")
        (store.root / "d").symlink_to(outside / "d")
        return chain

    monkeypatch.setattr(store_delete, "open_chain", swap_then_open)
    assert store.delete("d/x") == 6
    assert (outside / "d" / "x").read_bytes() == b"precious"
    assert tree(store.root) == ["d", "moved/"]  # the symlink, and the real directory


def test_the_digest_cache_forgets_a_deleted_object(store: ObjectStore) -> None:
    store.put("a/x", b"cached")
    store.get_with_digest("a/x")
    assert len(store._digests) == 1
    store.delete("a/x")
    assert len(store._digests) == 0


def test_the_directory_of_the_last_removal_is_fsynced(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a/b/x", b"1")
    store.put("a/y", b"2")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(store_delete, "os", OsWith(fsync=recording_fsync))
    store.delete("a/b/x")  # x unlinked in a/b, then a/b removed from a: a is synced
    store.delete("a/y")  # y unlinked in a, then a removed from the root: the root
    assert synced == [str(store.root / "a"), str(store.root)]


# --- beside concurrent puts ---------------------------------------------------------------


def hooked(monkeypatch: pytest.MonkeyPatch, name: str, before: Callable[[], None]) -> None:
    """Run ``before`` once, just before the delete's first ``os.<name>`` call."""
    real = getattr(os, name)
    calls: list[int] = []

    def hook(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(1)
            before()
        return real(*args, **kwargs)

    monkeypatch.setattr(store_delete, "os", OsWith(**{name: hook}))


def test_a_put_of_the_same_key_before_the_rename_is_what_the_delete_takes(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename takes the file in place at that instant: a put that lands between the
    delete's look and its rename is the object removed, and its size is the one answered."""
    store.put("k/obj", b"old")
    hooked(monkeypatch, "rename", lambda: store.put("k/obj", b"newer bytes"))
    assert store.delete("k/obj") == len(b"newer bytes")
    assert tree(store.root) == []


def test_a_put_of_the_same_key_after_the_rename_stays(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put that lands after the rename came after the delete: its object stays, and so
    does its directory."""
    store.put("k/obj", b"old")
    hooked(monkeypatch, "unlink", lambda: store.put("k/obj", b"newer bytes"))
    assert store.delete("k/obj") == 3
    assert store.get("k/obj") == (b"newer bytes", 11)
    assert tree(store.root) == ["k/", "k/obj"]


def test_a_put_into_the_directory_before_it_is_removed_keeps_it(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("d/e/gone", b"1")
    hooked(monkeypatch, "rmdir", lambda: store.put("d/e/new", b"2"))
    store.delete("d/e/gone")
    assert store.get("d/e/new") == (b"2", 1)
    assert tree(store.root) == ["d/", "d/e/", "d/e/new"]


def test_a_put_whose_directory_a_delete_removes_makes_it_again(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a put's mkdir (the directories exist) and its temp file, a delete empties and
    removes them: the put makes them again and succeeds."""
    store.put("d/e/old", b"1")
    real_create = ObjectStore._create_temp
    attempts: list[Path] = []

    def delete_first(parent: Path) -> tuple[int, Path]:
        if not attempts:
            store.delete("d/e/old")  # d/e and d go with it
        attempts.append(parent)
        return real_create(parent)

    monkeypatch.setattr(ObjectStore, "_create_temp", staticmethod(delete_first))
    assert store.put("d/e/new", b"2")[0] == 1
    assert len(attempts) == 2
    assert tree(store.root) == ["d/", "d/e/", "d/e/new"]


def test_a_directory_that_cannot_go_back_is_logged_with_where_it_is(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Between the look and the rename the file goes and a put makes a directory under its
    name; before that directory is put back, yet another put fills the name: the delete
    fails, and the log says under which temp name the directory's objects are kept."""
    store.put("k", b"old")
    real_rename = os.rename
    calls: list[int] = []

    def rename(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # before the delete's rename: the file becomes a directory
            (store.root / "k").unlink()
            store.put("k/x", b"1")
        elif len(calls) == 2:  # before the directory goes back: the name is taken again
            store.put("k/y", b"2")
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(store_delete, "os", OsWith(rename=rename))
    with pytest.raises(StoreError, match="Directory not empty"):
        store.delete("k")
    (record,) = [r for r in caplog.records if r.name == "zplex.store"]
    kept = record.args[1] if isinstance(record.args, tuple) else None
    assert "could not be put back" in record.getMessage()
    assert isinstance(kept, str) and (store.root / kept / "x").read_bytes() == b"1"


def test_puts_and_deletes_from_threads_never_fail(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads putting and deleting keys of the same directories, each put pausing between
    making its directories and its temp file (where a delete can remove them): no put ever
    fails, a delete only finds nothing, and what stays is whole objects, no temp file and no
    empty directory."""
    real_create = ObjectStore._create_temp

    def slow_create(parent: Path) -> tuple[int, Path]:
        time.sleep(0.0002)
        return real_create(parent)

    monkeypatch.setattr(ObjectStore, "_create_temp", staticmethod(slow_create))
    keys = ["d/e/k", "d/e/l", "d/f", "g/k"]  # directories often left empty
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        steps = random.Random(seed)
        try:
            for n in range(300):
                key = steps.choice(keys)
                if steps.random() < 0.5:
                    store.put(key, key.encode() * (1 + n % 3))
                else:
                    with contextlib.suppress(NotFound):
                        store.delete(key)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns between any two steps
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    for key, size in store.list():
        data, _ = store.get(key)
        assert data == key.encode() * (size // len(key))
    paths = [store.root / p for p in tree(store.root)]
    assert not [p for p in paths if TEMP_NAME.fullmatch(p.name)]
    assert not [p for p in paths if p.is_dir() and not any(p.iterdir())]


def test_a_delete_killed_after_its_rename_leaves_a_temp_file_that_is_swept(
    tmp_path: Path,
) -> None:
    """The object is renamed to a temp name before it is unlinked: a worker killed in between
    leaves a temp file of put's kind, which the next store to open removes."""
    root = tmp_path / "objects"
    ObjectStore(root).put("a/obj", b"1")
    killed = (
        "import os, sys\n"
        "from workers import store_delete\n"
        "from workers.store import ObjectStore\n"
        "store_delete.os.unlink = lambda *a, **k: os._exit(9)\n"
        f"ObjectStore({str(root)!r}).delete('a/obj')\n"
    )
    result = subprocess.run([sys.executable, "-c", killed], timeout=30, check=False)
    assert result.returncode == 9
    [left] = tree(root / "a")
    assert TEMP_NAME.fullmatch(left)
    ObjectStore(root)  # the sweep at open
    assert tree(root) == ["a/"]
