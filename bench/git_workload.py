"""The ``git:PATH`` workload: every distinct blob of every path across a git repository's
(first-parent) history, path-major, grouped by path (read with the ``git`` command)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.corpus_selection import Selection, spread_sample
from bench.workload_items import (
    DEFAULT_LIMIT_BYTES,
    Item,
    MiB,
    Workload,
    WorkloadError,
    check_limit,
    is_safe_key,
    sort_key,
)

#: git: the most recent commits of the first-parent history that are replayed.
DEFAULT_MAX_COMMITS = 500
#: git: blobs larger than this are skipped (large binaries are not what streams are about).
DEFAULT_GIT_MAX_FILE_BYTES = 1 * MiB
#: Length of the blob id in git keys: fixed, so keys do not depend on the repository's size.
GIT_SHORT_SHA = 12


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    git = shutil.which("git")
    if git is None:
        raise WorkloadError("git is not installed (no 'git' on PATH)")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        proc = subprocess.run(
            [git, "-C", str(repo), "-c", "log.showSignature=false", *args],
            input=stdin,
            capture_output=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        raise WorkloadError(f"cannot run git: {exc}") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit status {proc.returncode}"
        raise WorkloadError(f"git {args[0]} failed in {repo}: {detail}")
    return proc.stdout


_NULL_SHA = "0" * 40
_FILE_MODES = frozenset({"100644", "100755"})  # no symlinks (120000), no submodules (160000)


def _parse_ls_tree(out: bytes) -> Iterator[tuple[str, str]]:
    """``(path, blob)`` of regular files from ``git ls-tree -r -z``."""
    for record in out.split(b"\x00"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, _type, sha = meta.decode("ascii").split(" ")
        if mode in _FILE_MODES:
            yield path.decode("utf-8", "surrogateescape"), sha


def _parse_raw_log(out: bytes) -> Iterator[tuple[str, str]]:
    """``(path, new blob)`` of added or modified regular files, in log order, from
    ``git log --format=%x01%H --raw -z --no-renames --no-abbrev``: records are
    ``\\x01<sha>\\n`` then ``:<mode> <mode> <sha> <sha> <status>\\0<path>\\0`` entries, read
    sequentially so that no path byte is ever taken for a separator."""
    pos, end = 0, len(out)
    while pos < end:
        byte = out[pos]
        if byte == 0x01:
            newline = out.index(b"\n", pos)
            pos = newline + 1
        elif byte == ord(":"):
            meta_end = out.index(b"\x00", pos)
            path_end = out.index(b"\x00", meta_end + 1)
            fields = out[pos + 1 : meta_end].decode("ascii").split(" ")
            path = out[meta_end + 1 : path_end]
            pos = path_end + 1
            new_mode, new_sha = fields[1], fields[3]
            if new_mode in _FILE_MODES and new_sha != _NULL_SHA:
                yield path.decode("utf-8", "surrogateescape"), new_sha
        else:  # NUL or newline between records
            pos += 1


def _blob_sizes(repo: Path, shas: Sequence[str]) -> dict[str, int]:
    if not shas:
        return {}
    out = _git(repo, "cat-file", "--batch-check", stdin="".join(s + "\n" for s in shas).encode())
    sizes = {}
    for line in out.decode("ascii").splitlines():
        sha, kind, size = line.split(" ")
        if kind == "blob":
            sizes[sha] = int(size)
    return sizes


def _blob_contents(repo: Path, shas: Sequence[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    out = _git(repo, "cat-file", "--batch", stdin="".join(s + "\n" for s in shas).encode())
    contents: dict[str, bytes] = {}
    pos = 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        sha, _kind, size_text = out[pos:header_end].decode("ascii").split(" ")
        size = int(size_text)
        contents[sha] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1  # content, then a newline
    return contents


def git_workload(
    repo: Path | str,
    max_commits: int = DEFAULT_MAX_COMMITS,
    max_bytes: int | None = DEFAULT_LIMIT_BYTES,
    max_file_bytes: int | None = DEFAULT_GIT_MAX_FILE_BYTES,
) -> Workload:
    """Replay a git repository's history: the ``max_commits`` most recent commits of HEAD's
    first-parent history (merges count as their diff against the first parent), oldest first.
    Every path starts with its blob at the oldest of those commits, then each distinct blob a
    later commit gave it. Order: path-major (paths sorted), each path's blobs in commit order.
    A subdirectory of a repository replays the files under it only. Regular files only (no
    symlinks, no submodules); blobs over ``max_file_bytes`` skipped;
    over ``max_bytes``, whole paths are sampled across the tree (:func:`spread_sample`). Keys
    ``git/<path>@<blob sha[:12]>``; group: the path. The workload's ``selection`` counts what
    was skipped and the commits replayed (of how many). Raises :class:`WorkloadError` if git
    is missing, ``repo`` is not a git repository or has no commits."""
    if max_commits < 1:
        raise WorkloadError(f"max_commits must be >= 1, not {max_commits}")
    check_limit("max_bytes", max_bytes)
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise WorkloadError(f"{path} is not a directory")
    if shutil.which("git") is None:
        raise WorkloadError("git is not installed (no 'git' on PATH)")
    try:
        _git(path, "rev-parse", "--git-dir")
    except WorkloadError as exc:
        raise WorkloadError(f"{path} is not a git repository ({exc})") from None
    try:
        head = _git(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except WorkloadError:
        raise WorkloadError(f"git repository {path} has no commits") from None
    commits = _git(
        path, "rev-list", "--first-parent", f"--max-count={max_commits}", head.decode().strip()
    ).split()
    oldest = commits[-1].decode("ascii")
    # Per path, its blobs in order of first appearance: base tree, then each commit's changes.
    blobs: dict[str, list[str]] = {}
    for file_path, sha in _parse_ls_tree(_git(path, "ls-tree", "-r", "-z", "--full-tree", oldest)):
        blobs.setdefault(file_path, []).append(sha)
    if len(commits) > 1:
        log = _git(
            path,
            "log",
            "--reverse",
            "--first-parent",
            "-m",
            "--format=format:%x01%H",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            f"{oldest}..{commits[0].decode('ascii')}",
        )
        for file_path, sha in _parse_raw_log(log):
            seen = blobs.setdefault(file_path, [])
            if sha not in seen:
                seen.append(sha)
    # A subdirectory of a repository: the histories of the files under it.
    under = _git(path, "rev-parse", "--show-prefix").decode().strip()
    blobs = {file_path: shas for file_path, shas in blobs.items() if file_path.startswith(under)}
    selection = Selection()
    total_commits = int(_git(path, "rev-list", "--first-parent", "--count", head.decode().strip()))
    selection.extra = {"commits": len(commits), "commits_total": total_commits}
    paths = sorted(blobs, key=sort_key)
    safe = [file_path for file_path in paths if is_safe_key(f"git/{file_path}")]
    selection.skip(
        "unsafe-name", sum(len(blobs[p]) for p in paths) - sum(len(blobs[p]) for p in safe)
    )
    sizes = _blob_sizes(path, sorted({sha for p in safe for sha in blobs[p]}))
    # Per path, the blobs that fit the per-file cap; over the limit, whole paths are sampled
    # across the tree (a path's revisions stay together: they are what a context is for).
    revisions: list[tuple[str, list[str]]] = []
    for file_path in safe:
        fitting = []
        for sha in blobs[file_path]:
            size = sizes.get(sha)
            if size is None or (max_file_bytes is not None and size > max_file_bytes):
                selection.skip("too-large")
            else:
                fitting.append(sha)
        if fitting:
            revisions.append((file_path, fitting))
    path_bytes = [sum(sizes[sha] for sha in shas) for _file_path, shas in revisions]
    kept = spread_sample(path_bytes, max_bytes)
    kept_set = set(kept)
    selection.skip(
        "over-limit",
        sum(len(shas) for i, (_p, shas) in enumerate(revisions) if i not in kept_set),
    )
    chosen = [(revisions[i][0], sha) for i in kept for sha in revisions[i][1]]
    contents = _blob_contents(path, sorted({sha for _, sha in chosen}))
    items = [
        Item(f"git/{file_path}@{sha[:GIT_SHORT_SHA]}", contents[sha], file_path)
        for file_path, sha in chosen
    ]
    for item in items:
        selection.keep(item.data)
    if not items:
        where = f"git repository {path}" if not under else f"{path} (in its git repository)"
        raise WorkloadError(f"{where} has no file content within the limits")
    return Workload(f"git:{path}", items, selection=selection)
