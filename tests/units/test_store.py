"""Tests for workers.store."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workers.store import (
    DIGEST_PREFIX,
    TMP_PREFIX,
    BadKey,
    BadRange,
    NotFound,
    ObjectStore,
    StoreError,
    digest,
    validate_key,
)
from workers.store_temp import LOCK_NAME, SWEEP_MIN_AGE_S, TEMP_NAME, put_lock


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "objects")


def _all_files(root: Path) -> list[str]:
    """The files under ``root``, the store's lock file (which puts share) aside."""
    files = (p for p in root.rglob("*") if not p.is_dir() and p.name != LOCK_NAME)
    return sorted(str(p.relative_to(root)) for p in files)


# --- digest ---------------------------------------------------------------------------------


def test_digest_format() -> None:
    d = digest(b"hello")
    assert DIGEST_PREFIX == "blake2b-256:"
    assert d == "blake2b-256:" + hashlib.blake2b(b"hello", digest_size=32).hexdigest()
    hexpart = d[len(DIGEST_PREFIX) :]
    assert len(hexpart) == 64
    assert all(c in "0123456789abcdef" for c in hexpart)
    assert digest(b"") != digest(b"\x00")


def test_exception_hierarchy() -> None:
    assert issubclass(BadKey, StoreError)
    assert issubclass(BadRange, StoreError)
    assert issubclass(NotFound, StoreError)


# --- key validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a", "a/b/c.txt", "x.y", ".hidden", "a/.b/..c", "...", "dir/ünïcødé.txt", "a b/c", "é" * 127],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        None,
        1,
        b"a/b",
        ["a"],
        "",
        "/",
        "/x",
        "/a/b",
        "..",
        "../x",
        "a/../b",
        "a/..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a/b/",
        "a\x00b",
        "a\\b",
        "..\\x",
        "a\nb",
        "a\tb",
        "a\rb",
        "a\x1bb",
        "a\x7fb",
        "a\x85b",
        "a\ud800b",
        "\udcff",
        "x" * 1025,
        "a/" * 512 + "b",
        "x" * 256,
        "é" * 128,
        f"a/{TMP_PREFIX}x",
    ],
)
def test_rejected_keys(store: ObjectStore, key: object) -> None:
    with pytest.raises(BadKey):
        validate_key(key)
    with pytest.raises(BadKey):
        store.path_for(key)
    with pytest.raises(BadKey):
        store.get(key)
    with pytest.raises(BadKey):
        store.put(key, b"data")


def test_key_length_limits() -> None:
    assert validate_key("x" * 255)
    long_ok = "/".join(["y" * 255] * 3 + ["y" * 254, "z"])  # 1024 bytes exactly
    assert len(long_ok.encode()) == 1024
    assert validate_key(long_ok) == long_ok
    with pytest.raises(BadKey):
        validate_key(long_ok + "z")


def test_bad_key_messages_have_no_paths(store: ObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    keys: list[object] = ["../etc/passwd", "/etc/passwd", "a//b", "a\x00", 5, "link/x"]
    for key in keys:
        with pytest.raises(BadKey) as info:
            store.put(key, b"x")
        message = str(info.value)
        assert str(tmp_path) not in message
        assert "/etc" not in message


# --- round trips ----------------------------------------------------------------------------


def test_creates_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    s = ObjectStore(root)
    assert root.is_dir()
    assert s.root == root.resolve()


def test_put_get_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    size, d = store.put("a/b/c.bin", data)
    assert size == len(data)
    assert d == digest(data)
    assert store.get("a/b/c.bin") == (data, len(data))
    assert store.size("a/b/c.bin") == len(data)
    assert (store.root / "a" / "b" / "c.bin").read_bytes() == data


def test_put_empty_and_overwrite(store: ObjectStore) -> None:
    assert store.put("e", b"") == (0, digest(b""))
    assert store.get("e") == (b"", 0)
    store.put("e", b"first version")
    store.put("e", b"2nd")
    assert store.get("e") == (b"2nd", 3)


def test_put_accepts_bytes_like(store: ObjectStore) -> None:
    assert store.put("ba", bytearray(b"abc")) == (3, digest(b"abc"))  # type: ignore[arg-type]
    assert store.put("mv", memoryview(b"abcd")) == (4, digest(b"abcd"))  # type: ignore[arg-type]
    assert store.get("mv") == (b"abcd", 4)


def test_unicode_key(store: ObjectStore) -> None:
    store.put("dir/ünï cødé.txt", b"u")
    assert store.get("dir/ünï cødé.txt") == (b"u", 1)
    assert store.list() == [("dir/ünï cødé.txt", 1)]


def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get("no/such/dir/file")
    with pytest.raises(NotFound):
        store.size("nope")


def test_directory_is_not_found(store: ObjectStore) -> None:
    store.put("d/x", b"1")
    with pytest.raises(NotFound):
        store.get("d")
    with pytest.raises(NotFound):
        store.size("d")


def test_file_as_parent_is_not_found_on_get(store: ObjectStore) -> None:
    store.put("f", b"1")
    with pytest.raises(NotFound):
        store.get("f/x")


def test_put_onto_directory_is_bad_key(store: ObjectStore) -> None:
    store.put("d/x", b"1")
    with pytest.raises(BadKey):
        store.put("d", b"2")
    assert store.get("d/x") == (b"1", 1)


def test_put_under_file_is_bad_key(store: ObjectStore) -> None:
    store.put("f", b"1")
    with pytest.raises(BadKey):
        store.put("f/x", b"2")
    with pytest.raises(BadKey):
        store.put("f/x/y", b"2")
    assert store.get("f") == (b"1", 1)
    assert _all_files(store.root) == ["f"]


def test_fifo_is_not_found(store: ObjectStore) -> None:
    os.mkfifo(store.root / "fifo")
    with pytest.raises(NotFound):
        store.get("fifo")


# --- ranges ---------------------------------------------------------------------------------


def test_ranges(store: ObjectStore) -> None:
    data = b"0123456789"
    store.put("r", data)
    assert store.get("r", 0) == (data, 10)
    assert store.get("r", 3) == (b"3456789", 10)
    assert store.get("r", 3, 4) == (b"3456", 10)
    assert store.get("r", 0, 0) == (b"", 10)
    assert store.get("r", 8, 100) == (b"89", 10)
    assert store.get("r", 9, 1) == (b"9", 10)
    assert store.get("r", 10) == (b"", 10)
    assert store.get("r", 11, 5) == (b"", 10)
    assert store.get("r", 10**12) == (b"", 10)
    assert store.get("r", length=2) == (b"01", 10)


def test_large_range(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put("big", data)
    assert store.get("big") == (data, len(data))
    assert store.get("big", 1_000_001, 2_000_003) == (data[1_000_001:3_000_004], len(data))


@pytest.mark.parametrize(
    ("offset", "length"),
    [(-1, None), (0, -1), (True, None), (0, False), (1.0, None), (0, 2.5), ("1", None), (None, 1)],
)
def test_bad_ranges(store: ObjectStore, offset: object, length: object) -> None:
    store.put("r", b"abc")
    with pytest.raises(BadRange):
        store.get("r", offset, length)  # type: ignore[arg-type]


# --- traversal ------------------------------------------------------------------------------


def test_dotdot_traversal_rejected(store: ObjectStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    for key in ["../secret.txt", "a/../../secret.txt", "../objects/../secret.txt"]:
        with pytest.raises(BadKey):
            store.get(key)
        with pytest.raises(BadKey):
            store.put(key, b"overwrite")
    assert secret.read_bytes() == b"secret"


def test_symlink_escape_rejected(store: ObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (store.root / "link").symlink_to(outside)
    (store.root / "filelink").symlink_to(outside / "secret.txt")
    for key in ["link/secret.txt", "link/new.txt", "filelink", "link"]:
        with pytest.raises(BadKey):
            store.path_for(key)
        with pytest.raises(BadKey):
            store.get(key)
        with pytest.raises(BadKey):
            store.put(key, b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_a_directory_swapped_for_a_symlink_after_a_read_never_leads_outside(
    store: ObjectStore, tmp_path: Path
) -> None:
    """The store keeps the descriptor of a directory it read from: a symlink put in that
    directory's place (or in place of the object) is never followed out of the store."""
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "d" / "obj").write_bytes(b"secret")
    (outside / "file").write_bytes(b"secret")
    store.put("d/obj", b"inside")
    store.put("e/obj", b"inside")
    assert store.get("d/obj") == (b"inside", 6) and store.get("e/obj") == (b"inside", 6)
    (store.root / "d").rename(store.root / "moved")
    (store.root / "d").symlink_to(outside / "d")
    (store.root / "e" / "obj").unlink()
    (store.root / "e" / "obj").symlink_to(outside / "file")
    for key in ("d/obj", "e/obj"):
        try:
            data, _ = store.get(key)
        except BadKey:
            continue
        assert data != b"secret", key


def test_symlink_to_root_rejected(store: ObjectStore) -> None:
    (store.root / "self").symlink_to(store.root)
    with pytest.raises(BadKey):
        store.put("self", b"x")


def test_symlink_inside_root_allowed(store: ObjectStore) -> None:
    store.put("real/obj", b"inside")
    (store.root / "alias").symlink_to(store.root / "real")
    assert store.get("alias/obj") == (b"inside", 6)


def test_symlink_loop(store: ObjectStore) -> None:
    (store.root / "loop").symlink_to(store.root / "loop")
    with pytest.raises(StoreError):
        store.get("loop")


# --- durability shape -----------------------------------------------------------------------


def test_put_uses_temp_file_fsync_and_replace(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace
    real_fsync = os.fsync

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        replaced.append((Path(src), Path(dst)))
        assert Path(src).read_bytes() == b"payload"
        real_replace(src, dst)

    def spy_fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    store.put("a/b", b"payload")
    assert events.count("replace") == 1
    i = events.index("replace")
    assert "fsync" in events[:i]  # the temp file
    assert "fsync" in events[i + 1 :]  # the directory
    src, dst = replaced[0]
    assert src.parent == dst.parent == store.root / "a"
    assert src.name.startswith(TMP_PREFIX)
    assert dst == store.root / "a" / "b"
    assert _all_files(store.root) == ["a/b"]


def test_no_temp_files_left(store: ObjectStore) -> None:
    for i in range(20):
        store.put(f"d{i % 3}/obj{i}", b"x" * i)
    store.put("d0/obj0", b"again")
    left = [p for p in store.root.rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert [p.name for p in left] == [LOCK_NAME]


def test_temp_file_removed_on_failure(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StoreError) as info:
        store.put("a/b", b"x")
    assert type(info.value) is StoreError
    assert str(info.value) == "store I/O error: No space left on device"
    assert _all_files(store.root) == []


def test_io_error_is_store_error(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("obj", b"x")

    def failing_pread(fd: int, n: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error", str(store.root / "obj"))

    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(StoreError) as info:
        store.get("obj")
    assert str(info.value) == "store I/O error: Input/output error"


# --- list -----------------------------------------------------------------------------------


def test_list_sorted_recursive(store: ObjectStore) -> None:
    objs = {"b": b"22", "a/z": b"1", "a/b/c": b"333", "a.txt": b"", "aa": b"4444", "c/d/e/f": b"5"}
    for key, data in objs.items():
        store.put(key, data)
    expected = sorted((k, len(v)) for k, v in objs.items())
    assert store.list() == expected
    assert [k for k, _ in store.list()] == ["a.txt", "a/b/c", "a/z", "aa", "b", "c/d/e/f"]


def test_list_prefix(store: ObjectStore) -> None:
    for key in ["a/b/c", "a/bc", "a/z", "ab", "b/a"]:
        store.put(key, b"x")
    assert [k for k, _ in store.list("a")] == ["a/b/c", "a/bc", "a/z", "ab"]
    assert [k for k, _ in store.list("a/")] == ["a/b/c", "a/bc", "a/z"]
    assert [k for k, _ in store.list("a/b")] == ["a/b/c", "a/bc"]
    assert [k for k, _ in store.list("a/b/")] == ["a/b/c"]
    assert [k for k, _ in store.list("a/b/c")] == ["a/b/c"]
    assert store.list("zzz") == []
    assert store.list("/a") == []


def test_list_limit(store: ObjectStore) -> None:
    for i in range(10):
        store.put(f"k/{i:02d}", b"x")
    assert [k for k, _ in store.list(limit=3)] == ["k/00", "k/01", "k/02"]
    assert store.list(limit=0) == []
    assert len(store.list(limit=100)) == 10
    assert [k for k, _ in store.list("k/0", limit=2)] == ["k/00", "k/01"]


@pytest.mark.parametrize(
    ("prefix", "limit"), [(None, None), (b"a", None), (1, None), ("", -1), ("", True), ("", 1.5)]
)
def test_list_bad_args(store: ObjectStore, prefix: object, limit: object) -> None:
    with pytest.raises(BadRange):
        store.list(prefix, limit)  # type: ignore[arg-type]


def test_list_excludes_temp_symlinks_and_invalid_names(store: ObjectStore, tmp_path: Path) -> None:
    store.put("a/real", b"x")
    (store.root / "a" / f"{TMP_PREFIX}abc").write_bytes(b"partial")
    (store.root / f"{TMP_PREFIX}dir").mkdir()
    (store.root / f"{TMP_PREFIX}dir" / "inner").write_bytes(b"y")
    (store.root / "a" / "bad\nname").write_bytes(b"z")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    (store.root / "escape").symlink_to(tmp_path / "outside")
    (store.root / "empty_dir").mkdir()
    assert store.list() == [("a/real", 1)]


def test_list_empty_store(store: ObjectStore) -> None:
    assert store.list() == []


def test_digest_cache_follows_the_file(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.put("a/b", b"first")
    assert store.get_with_digest("a/b") == (b"first", 5, digest(b"first"))
    # Rewritten behind the store's back, same size: the cached digest must not be reused.
    (tmp_path / "a" / "b").write_bytes(b"secnd")
    assert store.get_with_digest("a/b") == (b"secnd", 5, digest(b"secnd"))
    assert store.get_with_digest("a/b", 1, 2) == (b"ec", 5, digest(b"ec"))
    small = ObjectStore(tmp_path, digest_cache=1)
    small.put("x", b"1")
    small.put("y", b"2")
    assert len(small._digests) == 1


def test_list_walk_stops_at_the_limit(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in range(10):
        for f in range(10):
            store.put(f"d{d:02d}/f{f:02d}", b"x" * f)
    scanned: list[str] = []
    real_scan = store._scan

    def counting_scan(directory: str) -> list[tuple[str, os.DirEntry[str]]]:
        scanned.append(os.path.relpath(directory, store.root))
        return real_scan(directory)

    monkeypatch.setattr(store, "_scan", counting_scan)
    assert store.list(limit=5) == [(f"d00/f{f:02d}", f) for f in range(5)]
    assert scanned == [".", "d00"]  # the root and the first directory: nothing else read
    scanned.clear()
    assert [k for k, _ in store.list(limit=12)] == [
        *(f"d00/f{f:02d}" for f in range(10)),
        "d01/f00",
        "d01/f01",
    ]
    assert scanned == [".", "d00", "d01"]
    scanned.clear()
    assert [k for k, _ in store.list("d07/", limit=3)] == ["d07/f00", "d07/f01", "d07/f02"]
    assert scanned == [".", "d07"]  # other directories are pruned by the prefix
    scanned.clear()
    assert len(store.list()) == 100
    assert len(scanned) == 11


def test_list_walk_order_is_key_order(store: ObjectStore) -> None:
    # Names with characters that sort before and after "/" (and beyond ASCII): the walk
    # must yield exactly the sorted order of the keys, so that a limit cuts the right ones.
    names = ["a", "a-b", "a.txt", "a!", "a b", "aa", "é", "z", "a\u00e9", "~"]
    keys = [f"{d}/{n}" for d in ("a", "a-", "a.b", "ab", "é") for n in names[:4]]
    keys += [n for n in names if n not in ("a", "é")]
    keys += ["a/x/y", "a/x-/y", "a/x.y"]
    for key in keys:
        store.put(key, key.encode())
    expected = sorted((k, len(k.encode())) for k in keys)
    assert store.list() == expected
    for limit in range(len(expected) + 2):
        assert store.list(limit=limit) == expected[:limit]
    assert store.list("a", limit=7) == [kv for kv in expected if kv[0].startswith("a")][:7]


# --- concurrent puts of one key -------------------------------------------------------------


@pytest.mark.parametrize("other_put_runs", ["after the rename", "before the rename"])
def test_concurrent_puts_digest_matches_the_bytes_in_place(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, other_put_runs: str
) -> None:
    """Writer A's rename, interleaved with all of writer B's put of the same key: whatever
    ends under the key, its digest (cached or not) must be that of its bytes."""
    real_replace = os.replace
    calls = 0

    def interleaved_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # writer B's own rename
            real_replace(src, dst)
            return
        if other_put_runs == "before the rename":
            assert store.put("k", b"writer B") == (8, digest(b"writer B"))
            real_replace(src, dst)
        else:
            real_replace(src, dst)
            assert store.put("k", b"writer B") == (8, digest(b"writer B"))

    store.put("k", b"old bytes")
    monkeypatch.setattr(os, "replace", interleaved_replace)
    assert store.put("k", b"writer A!") == (9, digest(b"writer A!"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls == 2
    winner = b"writer B" if other_put_runs == "after the rename" else b"writer A!"
    assert (store.root / "k").read_bytes() == winner
    for _ in range(2):  # a miss, then the cache
        assert store.get_with_digest("k") == (winner, len(winner), digest(winner))
    assert ObjectStore(store.root).get_with_digest("k")[2] == digest(winner)


def test_concurrent_puts_from_threads(store: ObjectStore) -> None:
    payloads = [bytes([i]) * (1000 + i) for i in range(8)]
    start = threading.Barrier(len(payloads))
    failures: list[str] = []

    def writer(data: bytes) -> None:
        start.wait(10)
        for _ in range(20):
            if store.put("shared/k", data) != (len(data), digest(data)):
                failures.append("put answered another digest")
            body, size, body_digest = store.get_with_digest("shared/k")
            if body_digest != digest(body) or size != len(body):
                failures.append("get answered bytes and a digest that do not match")

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    body, _, body_digest = store.get_with_digest("shared/k")
    assert body in payloads and body_digest == digest(body)
    assert _all_files(store.root) == ["shared/k"]


# --- temp files of puts killed mid-way ------------------------------------------------------

KILLED_PUT = """
import os, signal, sys
from workers.store import ObjectStore
store = ObjectStore(sys.argv[1])
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename
store.put("a/b/c", b"partial" * 1000)
"""


def test_temp_file_of_a_killed_put_is_swept_at_open(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    ObjectStore(root).put("a/keep", b"kept")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PUT, str(root)], timeout=60, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    left = [p for p in root.rglob("*") if TEMP_NAME.fullmatch(p.name)]
    assert len(left) == 1 and left[0].parent == root / "a" / "b"
    store = ObjectStore(root)  # what the server does at start
    assert not left[0].exists()
    assert _all_files(root) == ["a/keep"]
    assert store.get("a/keep") == (b"kept", 4)


def test_sweep_removes_only_this_stores_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = ObjectStore(root)
    store.put("d/obj", b"x")
    abandoned = [root / f"{TMP_PREFIX}0123456789abcdef", root / "d" / f"{TMP_PREFIX}{'f' * 16}"]
    for path in abandoned:
        path.write_bytes(b"partial")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    kept = {
        "d/obj": b"x",
        f"{TMP_PREFIX}notours": b"1",  # not the temp name pattern
        f"d/{TMP_PREFIX}0123456789ABCDEF": b"2",  # upper case: not ours
        f"d/{TMP_PREFIX}0123456789abcdef0": b"3",  # 17 digits
        f"x{TMP_PREFIX}0123456789abcdef": b"4",
    }
    for rel, data in kept.items():
        (root / rel).write_bytes(data)
    (root / f"{TMP_PREFIX}aaaaaaaaaaaaaaaa").symlink_to(outside)  # a symlink: not a temp file
    (root / f"{TMP_PREFIX}bbbbbbbbbbbbbbbb").mkdir()  # a directory: neither
    (root / "link").symlink_to(tmp_path)  # not followed
    (tmp_path / f"{TMP_PREFIX}cccccccccccccccc").write_bytes(b"outside the store")
    assert store.sweep_temp_files() == 2
    assert not any(p.exists() for p in abandoned)
    for rel, data in kept.items():
        assert (root / rel).read_bytes() == data
    assert (root / f"{TMP_PREFIX}aaaaaaaaaaaaaaaa").is_symlink()
    assert (root / f"{TMP_PREFIX}bbbbbbbbbbbbbbbb").is_dir()
    assert outside.read_bytes() == b"not ours"
    assert (tmp_path / f"{TMP_PREFIX}cccccccccccccccc").exists()
    assert store.sweep_temp_files() == 0


def test_sweep_spares_the_temp_files_of_running_puts(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = ObjectStore(root)
    live = root / f"{TMP_PREFIX}{'1' * 16}"
    old = root / f"{TMP_PREFIX}{'2' * 16}"
    live.write_bytes(b"being written")
    old.write_bytes(b"left long ago")
    long_ago = time.time() - SWEEP_MIN_AGE_S - 5
    os.utime(old, (long_ago, long_ago))
    # A put in progress (here, or in another worker) holds the store's shared lock: the
    # sweep cannot prove the fresh temp file abandoned, only the old one.
    with put_lock(str(root)):
        assert ObjectStore(root, sweep=False).sweep_temp_files() == 1
        assert live.exists() and not old.exists()
    assert store.sweep_temp_files() == 1  # no put running now: it is abandoned
    assert not live.exists()


def test_sweep_waits_for_no_put(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A put holds the shared lock from before its temp file exists until after the rename:
    a sweep run at any point inside a put never removes that put's temp file."""
    store = ObjectStore(tmp_path / "objects")
    real_open, real_replace = os.open, os.replace
    removed: list[int] = []

    def sweeping_open(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if os.path.basename(path).startswith(TMP_PREFIX) and flags & os.O_EXCL:
            removed.append(ObjectStore(store.root, sweep=False).sweep_temp_files())
        return fd

    def sweeping_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        removed.append(ObjectStore(store.root, sweep=False).sweep_temp_files())
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", sweeping_open)
    monkeypatch.setattr(os, "replace", sweeping_replace)
    assert store.put("a/b", b"data") == (4, digest(b"data"))
    assert removed == [0, 0]
    monkeypatch.undo()
    assert store.get("a/b") == (b"data", 4)


def test_a_store_whose_sweep_cannot_run_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "objects"
    ObjectStore(root).put("d/obj", b"x")
    stale = root / "d" / f"{TMP_PREFIX}{'3' * 16}"
    stale.write_bytes(b"partial")
    real_open, real_unlink = os.open, os.unlink

    def read_only_open(
        path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def read_only_unlink(path: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", read_only_open)
    store = ObjectStore(root)  # a read-only store: no lock file, the sweep removes nothing
    assert store.get("d/obj") == (b"x", 1)
    assert stale.exists()
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "unlink", read_only_unlink)
    assert store.sweep_temp_files() == 0  # not ours to remove: left for the next sweep
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert store.sweep_temp_files() == 1
    assert not stale.exists()


def test_directory_descriptors_are_bounded_and_renewed(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most MAX_DIR_FDS directory descriptors are kept; once DIR_FD_TTL_S has passed a
    directory is reached again, so a directory replaced from outside the server is seen."""
    from workers import store_dirs

    monkeypatch.setattr(store_dirs, "MAX_DIR_FDS", 2)
    monkeypatch.setattr(store_dirs, "DIR_FD_TTL_S", 600.0)
    for name in ("a", "b", "c"):
        store.put(f"{name}/obj", name.encode())
        assert store.get(f"{name}/obj") == (name.encode(), 1)
    fds = store._dirs._fds
    assert list(fds) == ["b", "c"]  # "a"'s descriptor closed, least recently reached
    (store.root / "c").rename(store.root / "old-c")
    (store.root / "c").mkdir()
    (store.root / "c" / "obj").write_bytes(b"new")
    assert store.get("c/obj") == (b"c", 1)  # within the TTL: the directory it reached
    monkeypatch.setattr(store_dirs, "DIR_FD_TTL_S", 0.0)
    assert store.get("c/obj") == (b"new", 3)
