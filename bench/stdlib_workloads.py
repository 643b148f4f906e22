"""Workloads made of the running Python's standard library: ``stdlib`` (its ``.py`` files in
path order, grouped by parent directory) and ``versioned`` (successive revisions of a fixed
selection of its files, each revision a few seeded line edits away from the previous one,
grouped by file). Both are deterministic for a given Python and arguments."""

from __future__ import annotations

import hashlib
import os
import random
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from bench.corpus_selection import Selection
from bench.workload_items import (
    DEFAULT_MAX_FILE_BYTES,
    Item,
    KiB,
    Workload,
    WorkloadError,
    check_limit,
    read_files,
    sort_key,
)

#: versioned: 32 files x 16 revisions of 8-48 KiB standard library files is ~11 MiB.
DEFAULT_REVISIONS = 16
DEFAULT_FILES = 32
VERSIONED_MIN_FILE_BYTES = 8 * KiB
VERSIONED_MAX_FILE_BYTES = 48 * KiB
#: versioned: each revision makes 1 to this many line edits to the previous one.
DEFAULT_MAX_EDITS = 4

# Directories left out of the stdlib corpus: third-party packages, caches and test suites
# (the test suites would double the corpus and are not representative source).
_STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
)


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(max_file_bytes: int | None, selection: Selection) -> list[tuple[str, Path, int]]:
    """The stdlib ``.py`` files as sorted ``(relpath, path, size)``; those skipped are counted
    in ``selection``."""
    root = _stdlib_root()
    found: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked dirs
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
        for filename in filenames:
            if not filename.endswith(".py"):
                continue
            path = Path(dirpath, filename)
            try:
                st = path.lstat()
            except OSError:
                selection.skip("unreadable")
                continue
            if not path.is_file() or path.is_symlink():
                selection.skip("not-regular")
                continue
            if max_file_bytes is not None and st.st_size > max_file_bytes:
                selection.skip("too-large")
                continue
            found.append((path.relative_to(root).as_posix(), path, st.st_size))
    found.sort(key=lambda entry: sort_key(entry[0]))
    return found


# --- stdlib ----------------------------------------------------------------------------------


def stdlib_workload(
    limit_bytes: int | None = None, max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
) -> Workload:
    """The ``.py`` files of the running Python's standard library (``sysconfig`` ``stdlib``
    path), without site-packages, caches and test suites, sorted by path; files over
    ``max_file_bytes`` are skipped. ``limit_bytes`` (None: no cap) keeps, when they do not all
    fit, a sample spread across that order. Keys ``stdlib/<relpath>``; group: the key's parent
    directory."""
    check_limit("limit_bytes", limit_bytes)
    selection = Selection()
    files = _stdlib_files(max_file_bytes, selection)
    items = read_files(files, "stdlib", limit_bytes, selection)
    if not items:
        raise WorkloadError(
            f"no standard library .py files found under {_stdlib_root()} within the limits"
        )
    return Workload("stdlib", items, selection=selection)


# --- versioned -------------------------------------------------------------------------------

_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{2,}")
_NUMBER = re.compile(rb"\b\d+\b")


def _line_ending(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return b"\r\n"
    return b"\n"


def _indent(line: bytes) -> bytes:
    return line[: len(line) - len(line.lstrip(b" \t"))]


def _modify_line(line: bytes, rng: random.Random, words: Sequence[bytes], rev: int) -> bytes:
    body = line.rstrip(b"\r\n")
    end = line[len(body) :] or b"\n"
    choice = rng.random()
    numbers = list(_NUMBER.finditer(body))
    names = list(_IDENTIFIER.finditer(body))
    if choice < 0.35 and numbers:
        m = numbers[rng.randrange(len(numbers))]
        new = str(int(m.group()) + rng.randint(1, 9)).encode()
        return body[: m.start()] + new + body[m.end() :] + end
    if choice < 0.75 and names and words:
        m = names[rng.randrange(len(names))]
        new = words[rng.randrange(len(words))]
        return body[: m.start()] + new + body[m.end() :] + end
    word = words[rng.randrange(len(words))] if words else b"value"
    return body + b"  # r" + str(rev).encode() + b": " + word + end


def _new_line(lines: Sequence[bytes], at: int, rng: random.Random, words: Sequence[bytes]) -> bytes:
    near = lines[min(max(at - 1, 0), len(lines) - 1)] if lines else b"\n"  # the line above
    indent, end = _indent(near), _line_ending(near)
    a = words[rng.randrange(len(words))] if words else b"value"
    b = words[rng.randrange(len(words))] if words else b"other"
    form = rng.randrange(3)
    if form == 0:
        return indent + a + b" = " + b + b"(" + str(rng.randint(0, 99)).encode() + b")" + end
    if form == 1:
        return indent + b"# " + a + b" " + b + b" " + str(rng.randint(0, 999)).encode() + end
    return indent + b"if " + a + b" is None:" + end + indent + b"    " + a + b" = " + b + end


def _revise(
    lines: list[bytes], rng: random.Random, words: Sequence[bytes], rev: int, max_edits: int
) -> None:
    """Apply one to ``max_edits`` small edits (insert, delete or modify a line) to ``lines`` in
    place. Edits cluster around one spot, like a real change."""
    before = list(lines)
    spot = rng.randrange(max(1, len(lines)))
    for _ in range(rng.randint(1, max_edits)):
        at = max(0, min(len(lines), spot + rng.randint(-20, 20)))
        op = rng.random()
        if op < 0.35 or len(lines) < 8:
            lines.insert(at, _new_line(lines, at, rng, words))
        elif op < 0.55:
            del lines[min(at, len(lines) - 1) : min(at, len(lines) - 1) + rng.randint(1, 3)]
        else:
            i = min(at, len(lines) - 1)
            lines[i] = _modify_line(lines[i], rng, words, rev)
    if lines == before:  # every revision differs from the one before it
        lines.append(b"# revision " + str(rev).encode() + b"\n")


def _file_rng(seed: int, relpath: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}:{relpath}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def versioned_files(files: int = DEFAULT_FILES) -> list[str]:
    """The stdlib relpaths :func:`versioned_workload` revises: ``files`` files of 8-48 KiB,
    evenly spaced over the sorted list of such files (a fixed selection for a given Python)."""
    if files < 1:
        raise WorkloadError(f"files must be >= 1, not {files}")
    candidates = _stdlib_files(VERSIONED_MAX_FILE_BYTES, Selection())
    eligible = [rel for rel, _path, size in candidates if size >= VERSIONED_MIN_FILE_BYTES]
    if not eligible:
        raise WorkloadError("no standard library files of 8-48 KiB to build revisions from")
    count = min(files, len(eligible))
    return [eligible[i * len(eligible) // count] for i in range(count)]


def versioned_workload(
    revisions: int = DEFAULT_REVISIONS,
    files: int = DEFAULT_FILES,
    seed: int = 0,
    limit_bytes: int | None = None,
    max_edits: int = DEFAULT_MAX_EDITS,
) -> Workload:
    """Deterministic successive revisions of a fixed, sorted selection of stdlib files
    (:func:`versioned_files`). Revision 0 is the file as installed; revision ``r`` is revision
    ``r - 1`` with one to ``max_edits`` seeded line edits (insert, delete, modify) near one
    spot (raise ``max_edits`` for revisions further apart: with the default, one context
    compresses this corpus ~50:1 against ~3.6:1 for one frame per response). Item
    order: for each file in path order, rev0, rev1, ... consecutively. Keys
    ``versioned/<relpath>@<rev>``; group: ``relpath``. ``limit_bytes`` (None: no cap) keeps the
    longest prefix of that order that fits."""
    if revisions < 1:
        raise WorkloadError(f"revisions must be >= 1, not {revisions}")
    if max_edits < 1:
        raise WorkloadError(f"max_edits must be >= 1, not {max_edits}")
    check_limit("limit_bytes", limit_bytes)
    root = _stdlib_root()
    items: list[Item] = []
    total = 0
    chosen = versioned_files(files)
    for relpath in chosen:
        lines = (root / relpath).read_bytes().splitlines(keepends=True)
        words = sorted(set(_IDENTIFIER.findall(b"".join(lines))))
        rng = _file_rng(seed, relpath)
        for rev in range(revisions):
            if rev:
                _revise(lines, rng, words, rev, max_edits)
            data = b"".join(lines)
            if limit_bytes is not None and total + len(data) > limit_bytes:
                break
            items.append(Item(f"versioned/{relpath}@{rev}", data, relpath))
            total += len(data)
        else:
            continue
        break
    if not items:
        raise WorkloadError("versioned workload is empty within the limits")
    selection = Selection()
    for item in items:
        selection.keep(item.data)
    selection.skip("over-limit", len(chosen) * revisions - len(items))
    return Workload("versioned", items, selection=selection)
