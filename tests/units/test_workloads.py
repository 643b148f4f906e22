"""Tests for bench.workloads: corpora, their order and keys, and affinity placement."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import workloads as wl
from bench.workloads import Item, Workload, WorkloadError

# --- items and keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/", "../a", "a/../b", "a/./b", ".", "a\x00b", "a\\b", "a\nb",
     "x" * 1025, "a/" + "y" * 256, "a/.zplex-tmp-1", "\udcff"],
)  # fmt: skip
def test_unsafe_keys_are_refused(key: str) -> None:
    assert not wl.is_safe_key(key)
    with pytest.raises(ValueError, match="unsafe"):
        Item(key, b"", "g")


@pytest.mark.parametrize("key", ["a", "a/b.py", "dir/x y/é.txt", "git/a.txt@0123456789ab"])
def test_safe_keys(key: str) -> None:
    assert wl.is_safe_key(key)
    assert Item(key, b"x", "g").key == key


def test_item_is_frozen() -> None:
    item = Item("a", b"x", "g")
    with pytest.raises(AttributeError):
        item.key = "b"  # type: ignore[misc]


# --- affinity --------------------------------------------------------------------------------


def test_stream_index_is_pinned() -> None:
    # BLAKE2b of the group: these values never change between runs, machines or Pythons.
    assert wl.stream_index("stdlib/asyncio", 8) == 4
    assert wl.stream_index("a.txt", 8) == 5
    assert wl.stream_index("stdlib/asyncio", 1_000_003) == 197083


def test_assign_streams_is_group_consistent_and_spreads() -> None:
    items = [Item(f"k{i}", b"", f"group-{i % 40}") for i in range(400)]
    streams = wl.assign_streams(items, 8)
    assert len(streams) == len(items)
    by_group: dict[str, set[int]] = {}
    for item, s in zip(items, streams, strict=True):
        by_group.setdefault(item.group, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert set(streams) == set(range(8))  # 40 groups reach every one of 8 streams
    assert wl.assign_streams(items, 8) == streams
    assert wl.assign_streams(items, 1) == [0] * len(items)
    with pytest.raises(ValueError):
        wl.assign_streams(items, 0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=20), st.integers(1, 64))
def test_assign_groups_property(groups: list[str], n: int) -> None:
    streams = wl.assign_groups(groups, n)
    assert all(0 <= s < n for s in streams)
    for g, s in zip(groups, streams, strict=True):
        assert s == wl.stream_index(g, n)


def test_split_groups() -> None:
    items = [Item(f"big/{i}", b"x" * 100, "big") for i in range(5)]
    items.append(Item("small/a", b"y" * 50, "small"))
    split = wl.split_groups(Workload("w", items), max_group_bytes=250)
    assert [i.group for i in split.items] == ["big#1", "big#1", "big#2", "big#2", "big#3", "small"]
    assert [i.key for i in split.items] == [i.key for i in items]


# --- stdlib ----------------------------------------------------------------------------------


def test_stdlib_workload_small() -> None:
    w = wl.stdlib_workload(limit_bytes=200_000)
    assert w.name == "stdlib"
    assert 0 < w.raw_bytes <= 200_000
    assert w.requests == len(w.items)
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = [item.key.removeprefix("stdlib/") for item in w.items]
    assert all(item.key.startswith("stdlib/") and item.key.endswith(".py") for item in w.items)
    assert [PurePosixPath(r).parts for r in rels] == sorted(PurePosixPath(r).parts for r in rels)
    first = w.items[0]
    assert first.data == (root / rels[0]).read_bytes()
    assert first.group == str(PurePosixPath(first.key).parent)


def test_stdlib_workload_skips_tests_and_site_packages() -> None:
    w = wl.stdlib_workload()
    parts = {p for item in w.items for p in PurePosixPath(item.key).parts[:-1]}
    assert not parts & {"test", "tests", "site-packages", "idle_test", "__pycache__"}
    assert all(len(item.data) <= wl.DEFAULT_MAX_FILE_BYTES for item in w.items)
    assert 1 << 20 < w.raw_bytes <= 32 << 20  # ~11 MiB on CPython 3.11


def test_stdlib_sample_is_stable_and_spread_across_the_tree() -> None:
    whole = wl.stdlib_workload()
    small = wl.stdlib_workload(limit_bytes=300_000)
    assert small.items == wl.stdlib_workload(limit_bytes=300_000).items  # deterministic
    assert 200_000 < small.raw_bytes <= 300_000
    keys = [item.key for item in whole.items]
    positions = [keys.index(item.key) for item in small.items]
    assert positions == sorted(positions)  # in path order
    # A sample of the whole tree, not its first directories.
    assert positions[0] < len(keys) // 10 and positions[-1] > len(keys) * 9 // 10
    assert small.selection.skipped["over-limit"] == len(whole.items) - len(small.items)


# --- versioned -------------------------------------------------------------------------------


def test_versioned_is_deterministic_and_ordered() -> None:
    a = wl.versioned_workload(revisions=5, files=3)
    b = wl.versioned_workload(revisions=5, files=3)
    assert a == b
    assert a.name == "versioned"
    assert len(a.items) == 15
    files = wl.versioned_files(3)
    assert files == sorted(files, key=lambda r: PurePosixPath(r).parts)
    expected = [f"versioned/{rel}@{rev}" for rel in files for rev in range(5)]
    assert [item.key for item in a.items] == expected
    assert [item.group for item in a.items] == [rel for rel in files for _ in range(5)]
    root = Path(sysconfig.get_paths()["stdlib"])
    assert a.items[0].data == (root / files[0]).read_bytes()  # rev0 is the file as installed
    assert wl.versioned_workload(revisions=5, files=3, seed=1) != a


def test_successive_revisions_differ_slightly() -> None:
    w = wl.versioned_workload(revisions=6, files=2)
    for prev, cur in zip(w.items, w.items[1:], strict=False):
        if prev.group != cur.group:
            continue
        assert prev.data != cur.data
        old, new = prev.data.splitlines(), cur.data.splitlines()
        changed = sum(
            max(i2 - i1, j2 - j1)
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new).get_opcodes()
            if tag != "equal"
        )
        assert 1 <= changed <= 16


def test_versioned_limit() -> None:
    w = wl.versioned_workload(revisions=4, files=4, limit_bytes=60_000)
    assert 0 < w.raw_bytes <= 60_000
    full = wl.versioned_workload(revisions=4, files=4)
    assert full.items[: len(w.items)] == w.items
    with pytest.raises(WorkloadError):
        wl.versioned_workload(revisions=0)
    with pytest.raises(WorkloadError):
        wl.versioned_workload(max_edits=0)


def test_versioned_max_edits_moves_revisions_further_apart() -> None:
    def changed_lines(w: Workload) -> int:
        return sum(
            len(set(b.data.splitlines()) ^ set(a.data.splitlines()))
            for a, b in zip(w.items, w.items[1:], strict=False)
            if a.group == b.group
        )

    small = wl.versioned_workload(revisions=6, files=2)
    large = wl.versioned_workload(revisions=6, files=2, max_edits=40)
    assert changed_lines(large) > 3 * changed_lines(small)


# --- git -------------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(repo.parent),
    )
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, text=True
    )
    return out.stdout.strip()


def _commit(repo: Path, message: str, files: dict[str, bytes | None]) -> None:
    for name, data in files.items():
        path = repo / name
        if data is None:
            _git(repo, "rm", "-q", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        _git(repo, "add", name)
    _git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _commit(repo, "1", {"b.py": b"b1\n", "a/x.txt": b"x1\n"})
    _commit(repo, "2", {"b.py": b"b2\n"})
    _commit(repo, "3", {"a/x.txt": b"x2\n", "c.txt": b"c1\n"})
    _commit(repo, "4", {"b.py": b"b1\n"})  # back to an earlier blob: not a new one
    (repo / "link").symlink_to("b.py")
    _git(repo, "add", "link")
    _commit(repo, "5", {"c.txt": None, "b.py": b"b3\n"})
    return repo


def _blob(repo: Path, data: bytes) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "hash-object", "--stdin"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout.decode()[:12]


@needs_git
def test_git_workload_replays_history_path_major(repo: Path) -> None:
    w = wl.git_workload(repo)
    expected = [
        ("a/x.txt", b"x1\n"),
        ("a/x.txt", b"x2\n"),
        ("b.py", b"b1\n"),
        ("b.py", b"b2\n"),
        ("b.py", b"b3\n"),
        ("c.txt", b"c1\n"),
    ]
    assert [(i.group, i.data) for i in w.items] == expected
    assert [i.key for i in w.items] == [f"git/{p}@{_blob(repo, d)}" for p, d in expected]
    assert w.name == f"git:{repo}"


@needs_git
def test_git_workload_window_and_limits(repo: Path) -> None:
    # The last two commits: the tree at commit 4 first, then commit 5's changes.
    w = wl.git_workload(repo, max_commits=2)
    assert [(i.group, i.data) for i in w.items] == [
        ("a/x.txt", b"x2\n"),
        ("b.py", b"b1\n"),
        ("b.py", b"b3\n"),
        ("c.txt", b"c1\n"),
    ]
    # Over the limit, whole paths are sampled across the tree (a path's revisions together).
    capped = wl.git_workload(repo, max_bytes=9)
    assert [i.data for i in capped.items] == [b"x1\n", b"x2\n", b"c1\n"]
    assert capped.corpus()["skipped"] == {"over-limit": 3}
    assert capped.corpus()["commits"] == 5 and capped.corpus()["commits_total"] == 5
    assert w.corpus()["commits"] == 2 and w.corpus()["commits_total"] == 5


@needs_git
def test_git_workload_of_a_subdirectory_replays_the_files_under_it(repo: Path) -> None:
    """--git on a subdirectory of a repository: its files' histories, not the whole tree's
    (keys still name the path in the repository)."""
    w = wl.git_workload(repo / "a")
    expected = [b"x1\n", b"x2\n"]
    assert [i.data for i in w.items] == expected
    assert [i.key for i in w.items] == [f"git/a/x.txt@{_blob(repo, d)}" for d in expected]
    assert w.name == f"git:{repo / 'a'}" and w.corpus()["commits_total"] == 5
    (repo / "empty").mkdir()
    with pytest.raises(WorkloadError, match=r"empty \(in its git repository\) has no file"):
        wl.git_workload(repo / "empty")


@needs_git
def test_git_workload_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkloadError, match="not a git repository"):
        wl.git_workload(plain)
    with pytest.raises(WorkloadError, match="not a directory"):
        wl.git_workload(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    with pytest.raises(WorkloadError, match="no commits"):
        wl.git_workload(empty)


def test_git_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(WorkloadError, match="git is not installed"):
        wl.git_workload(tmp_path)


# --- dir -------------------------------------------------------------------------------------


def test_dir_workload(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "z.txt").write_bytes(b"z" * 10)
    (root / "a.txt").write_bytes(b"a" * 10)
    (root / "sub" / "m.bin").write_bytes(b"m" * 10)
    (root / "sub" / "deep" / "d.txt").write_bytes(b"d" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (root / "link-file").symlink_to(root / "a.txt")
    (root / "link-dir").symlink_to(outside)
    w = wl.dir_workload(root)
    assert [i.key for i in w.items] == [
        "dir/a.txt",
        "dir/sub/deep/d.txt",
        "dir/sub/m.bin",
        "dir/z.txt",
    ]
    assert [i.group for i in w.items] == ["dir", "dir/sub/deep", "dir/sub", "dir"]
    assert w.raw_bytes == 40
    # Over the limit: a sample spread across the tree, not its first files.
    assert [i.key for i in wl.dir_workload(root, max_bytes=25).items] == [
        "dir/a.txt",
        "dir/sub/m.bin",
    ]
    with pytest.raises(WorkloadError):
        wl.dir_workload(tmp_path / "missing")
    with pytest.raises(WorkloadError, match="no readable"):
        wl.dir_workload(outside, max_bytes=0)


def test_dir_workload_selects_the_users_files(tmp_path: Path) -> None:
    """A tree with .git, a cache folder, hidden files and a gzip file: exactly the sources
    are kept, and the counts say what was skipped and why."""
    import gzip

    root = tmp_path / "project"
    (root / "src" / "__pycache__").mkdir(parents=True)
    (root / ".git" / "objects" / "ab").mkdir(parents=True)
    (root / ".hidden-dir").mkdir()
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_bytes(b"print('main')\n" * 10)
    (root / "src" / "util.py").write_bytes(b"def util(): pass\n" * 10)
    (root / "README.md").write_bytes(b"# project\n" * 5)
    (root / "data.gz").write_bytes(gzip.compress(b"rows\n" * 100))
    (root / ".env").write_bytes(b"SECRET=1\n")
    (root / ".hidden-dir" / "notes.txt").write_bytes(b"n")
    (root / "src" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\x00" * 20)
    (root / "node_modules" / "pkg" / "index.js").write_bytes(b"js")
    (root / "node_modules" / "pkg" / "package.json").write_bytes(b"{}")
    for name in ("HEAD", "config", "objects/ab/cdef"):
        (root / ".git" / name).write_bytes(b"git")
    w = wl.dir_workload(root)
    assert [i.key for i in w.items] == [
        "dir/README.md",
        "dir/data.gz",
        "dir/src/main.py",
        "dir/src/util.py",
    ]
    assert w.corpus() == {
        "files": 4,
        "bytes": w.raw_bytes,
        "skipped": {"cache": 3, "hidden": 2, "vcs": 3},
        "compressed_files": 1,
    }
    everything = wl.dir_workload(root, include_hidden=True)
    assert len(everything.items) == 4 + 3 + 2 + 3
    assert everything.corpus()["skipped"] == {}
    capped = wl.dir_workload(root, max_bytes=200)
    assert capped.raw_bytes <= 200
    assert capped.corpus()["skipped"]["over-limit"] == 4 - len(capped.items)
    assert "skipped 3 cache, 2 hidden, 3 vcs" in w.selection.describe()
    assert "1 already compressed" in w.selection.describe()


# --- generate and names ----------------------------------------------------------------------


def test_generate_workload() -> None:
    w = wl.generate_workload("generate:json", requests=4, size=1000)
    assert w.name == "generate:json"
    assert w.items == []
    assert w.generated == ("json", 1000)
    assert w.requests == 4
    assert w.raw_bytes == 4000
    assert w.generate_args(2) == {"size": 1000, "kind": "json", "seed": 2}
    assert w.groups() == ["generate/0", "generate/1", "generate/2", "generate/3"]
    with pytest.raises(IndexError):
        w.generate_args(4)
    with pytest.raises(WorkloadError, match="unknown generate kind"):
        wl.generate_workload("generate:bogus")
    with pytest.raises(ValueError):
        wl.stdlib_workload(limit_bytes=50_000).generate_args(0)


def test_parse_workload() -> None:
    assert wl.parse_workload("stdlib", limit_bytes=50_000).name == "stdlib"
    w = wl.parse_workload("versioned", revisions=2, files=2)
    assert (w.name, len(w.items)) == ("versioned", 4)
    assert wl.parse_workload("generate:log", requests=3, size=10).generated == ("log", 10)
    assert wl.parse_workload("generate").generated == ("text", wl.DEFAULT_GENERATE_SIZE)


def test_parse_workload_dir_and_git(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    assert wl.parse_workload(f"dir:{tmp_path}").items[0].key == "dir/f"
    if shutil.which("git"):
        with pytest.raises(WorkloadError, match="not a git repository"):
            wl.parse_workload(f"git:{tmp_path}")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "unknown workload"),
        ("stdlib:x", "unknown workload"),
        ("git:", "needs a path"),
        ("dir:", "needs a path"),
        ("dir:/definitely/not/here", "not a directory"),
        ("generate:bogus", "unknown generate kind"),
    ],
)
def test_parse_workload_errors(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wl.parse_workload(name)
