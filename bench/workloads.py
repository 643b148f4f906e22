"""Request corpora for ``zplex bench``, and affinity placement of requests on streams.

A :class:`Workload` is an ordered list of :class:`Item` objects. The load generator stores each
item under its ``key`` (with ``put``) and then requests the keys in list order (with ``get``);
every policy replays the same items in the same order. ``group`` is the item's affinity key:
items of one group belong on one stream, so that the stream's compression context holds their
history (docs/design.md, "Choosing streams"). :func:`assign_streams` hashes groups onto streams.

Builders (all deterministic for a given machine and arguments):

- :func:`stdlib_workload` -- the ``.py`` files of the running Python's standard library, in path
  order (about 11 MiB on CPython 3.11 without the test suites), grouped by parent directory.
- :func:`versioned_workload` -- successive revisions of a fixed selection of standard library
  files, each revision a few seeded line edits away from the previous one; grouped by file.
- :func:`git_workload` -- every distinct blob of every path across a git repository's
  (first-parent) history, path-major, grouped by path.
- :func:`dir_workload` -- the regular files of any directory, grouped by parent directory.
- :func:`generate_workload` -- server-side synthetic data (``generate`` requests): the items list
  is empty; ``generated`` holds ``(kind, size)`` and ``generated_requests`` the request count.

:func:`parse_workload` maps the CLI names to these builders. Nothing here imports ``server/`` or
``workers/``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sysconfig
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

KiB = 1024
MiB = 1024 * 1024

#: Cap applied by :func:`parse_workload` when no ``limit_bytes`` is given: it keeps ``make bench``
#: (every policy replays the corpus) within about two minutes on two cores.
DEFAULT_LIMIT_BYTES = 16 * MiB
#: Files larger than this are skipped by the stdlib and dir builders (one huge file would
#: dominate a corpus of small objects).
DEFAULT_MAX_FILE_BYTES = 256 * KiB
#: versioned: 32 files x 16 revisions of 8-48 KiB standard library files is ~11 MiB.
DEFAULT_REVISIONS = 16
DEFAULT_FILES = 32
VERSIONED_MIN_FILE_BYTES = 8 * KiB
VERSIONED_MAX_FILE_BYTES = 48 * KiB
#: versioned: each revision makes 1 to this many line edits to the previous one.
DEFAULT_MAX_EDITS = 4
#: git: the most recent commits of the first-parent history that are replayed.
DEFAULT_MAX_COMMITS = 500
#: git: blobs larger than this are skipped (large binaries are not what streams are about).
DEFAULT_GIT_MAX_FILE_BYTES = 1 * MiB
#: generate: 256 requests of 32 KiB (8 MiB).
DEFAULT_GENERATE_REQUESTS = 256
DEFAULT_GENERATE_SIZE = 32 * KiB
#: The kinds the ``generate`` command accepts (docs/protocol.md section 4).
GENERATE_KINDS = ("text", "json", "log", "random", "zeros")
#: Length of the blob id in git keys: fixed, so keys do not depend on the repository's size.
GIT_SHORT_SHA = 12

# The object store's key rules (workers/store.py), mirrored: bench/ must not import workers/.
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
STORE_TMP_PREFIX = ".zplex-tmp-"

# Directories left out of the stdlib corpus: third-party packages, caches and test suites
# (the test suites would double the corpus and are not representative source).
_STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
)


class WorkloadError(ValueError):
    """A workload cannot be built: bad name or arguments, missing path, not a git repository,
    git not installed, empty corpus. A ``ValueError``, so the CLI can report any of them."""


def is_safe_key(key: str) -> bool:
    """True if ``key`` is a store key the server accepts: a relative POSIX path of UTF-8 text
    with no empty, ``.`` or ``..`` segment and no NUL (docs/protocol.md section 4), plus the object
    store's own rules, mirrored here so that a workload never holds a key the store refuses: no
    backslash or control character, at most 1024 bytes, segments of at most 255 bytes, none
    starting with the store's temporary-file prefix."""
    if not key or key.startswith("/") or "\\" in key:
        return False
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable file names
        return False
    if len(encoded) > MAX_KEY_BYTES:
        return False
    if any(unicodedata.category(ch) == "Cc" for ch in key):  # NUL included
        return False
    return all(
        segment not in ("", ".", "..")
        and len(segment.encode("utf-8")) <= MAX_SEGMENT_BYTES
        and not segment.startswith(STORE_TMP_PREFIX)
        for segment in key.split("/")
    )


@dataclass(frozen=True)
class Item:
    """One object of a workload: stored under ``key``, requested back with ``get``."""

    key: str
    data: bytes
    group: str

    def __post_init__(self) -> None:
        if not is_safe_key(self.key):
            raise ValueError(f"unsafe store key {self.key!r}")


@dataclass
class Workload:
    """An ordered request corpus.

    For stored data, ``items`` lists the objects in request order and ``generated`` is None.
    For ``generate:KIND``, ``items`` is empty, ``generated`` is ``(kind, size)`` and
    ``generated_requests`` is the number of ``generate`` requests; request ``i`` uses the
    arguments of :meth:`generate_args` (seed ``i``, so that no two bodies are identical) and
    the group of :meth:`groups` (``generate/<i>``: no affinity, an even spread).
    """

    name: str
    items: list[Item]
    generated: tuple[str, int] | None = None
    generated_requests: int = 0
    #: Files the builder skipped (too large, unreadable, undecodable name, ...).
    skipped: int = field(default=0, compare=False)

    @property
    def requests(self) -> int:
        """Number of requests one replay of this workload makes."""
        if self.generated is not None:
            return self.generated_requests
        return len(self.items)

    @property
    def raw_bytes(self) -> int:
        """Total response body bytes of one replay (before compression)."""
        if self.generated is not None:
            return self.generated_requests * self.generated[1]
        return sum(len(item.data) for item in self.items)

    def groups(self) -> list[str]:
        """The affinity group of each request, in request order."""
        if self.generated is not None:
            return [f"generate/{i}" for i in range(self.generated_requests)]
        return [item.group for item in self.items]

    def generate_args(self, index: int) -> dict[str, object]:
        """The ``generate`` command arguments of request ``index`` (generated workloads only)."""
        if self.generated is None:
            raise ValueError(f"workload {self.name!r} is not generated")
        if not 0 <= index < self.generated_requests:
            raise IndexError(index)
        kind, size = self.generated
        return {"size": size, "kind": kind, "seed": index}


# --- affinity --------------------------------------------------------------------------------


def stream_index(group: str, n_streams: int) -> int:
    """The stream index in ``[0, n_streams)`` of an affinity group: an unkeyed BLAKE2b hash,
    the same on every run, machine and Python (never the salted built-in ``hash``)."""
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, not {n_streams}")
    digest = hashlib.blake2b(group.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_streams


def assign_groups(groups: Iterable[str], n_streams: int) -> list[int]:
    """The stream index of each group, in order (see :func:`stream_index`)."""
    cache: dict[str, int] = {}
    out = []
    for group in groups:
        index = cache.get(group)
        if index is None:
            index = cache[group] = stream_index(group, n_streams)
        out.append(index)
    return out


def assign_streams(items: Iterable[Item], n_streams: int) -> list[int]:
    """The stream index of each item, in order: all items of a group get the same index."""
    return assign_groups((item.group for item in items), n_streams)


def split_groups(workload: Workload, max_group_bytes: int) -> Workload:
    """A copy of ``workload`` whose oversized groups are cut into runs of consecutive items of at
    most ``max_group_bytes`` (groups ``<group>#1``, ``<group>#2``, ...; a group that fits keeps
    its name). Use it to balance streams when a few groups hold most of the bytes (the stdlib's
    top directory holds ~40% of it) while keeping neighbours together."""
    if max_group_bytes < 1:
        raise ValueError("max_group_bytes must be >= 1")
    totals: dict[str, int] = {}
    for item in workload.items:
        totals[item.group] = totals.get(item.group, 0) + len(item.data)
    state: dict[str, tuple[int, int]] = {}  # group -> (chunk number, bytes in chunk)
    items = []
    for item in workload.items:
        if totals[item.group] <= max_group_bytes:
            items.append(item)
            continue
        chunk, used = state.get(item.group, (1, 0))
        if used and used + len(item.data) > max_group_bytes:
            chunk, used = chunk + 1, 0
        state[item.group] = (chunk, used + len(item.data))
        items.append(Item(item.key, item.data, f"{item.group}#{chunk}"))
    return Workload(
        workload.name,
        items,
        workload.generated,
        workload.generated_requests,
        workload.skipped,
    )


# --- helpers ---------------------------------------------------------------------------------


def _sort_key(relpath: str) -> tuple[str, ...]:
    """Path order: directory by directory (``a/b.py`` before ``a-b.py``'s siblings' children)."""
    return PurePosixPath(relpath).parts


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise WorkloadError(f"{name} must be >= 0, not {value}")


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(max_file_bytes: int | None) -> tuple[list[tuple[str, Path, int]], int]:
    """The stdlib ``.py`` files as sorted ``(relpath, path, size)``, and how many were skipped."""
    root = _stdlib_root()
    found: list[tuple[str, Path, int]] = []
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked dirs
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
        for filename in filenames:
            if not filename.endswith(".py"):
                continue
            path = Path(dirpath, filename)
            try:
                st = path.lstat()
            except OSError:
                skipped += 1
                continue
            if not path.is_file() or path.is_symlink():
                continue
            if max_file_bytes is not None and st.st_size > max_file_bytes:
                skipped += 1
                continue
            found.append((path.relative_to(root).as_posix(), path, st.st_size))
    found.sort(key=lambda entry: _sort_key(entry[0]))
    return found, skipped


def _parent_group(key: str) -> str:
    return str(PurePosixPath(key).parent)


# --- stdlib ----------------------------------------------------------------------------------


def stdlib_workload(
    limit_bytes: int | None = None, max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
) -> Workload:
    """The ``.py`` files of the running Python's standard library (``sysconfig`` ``stdlib``
    path), without site-packages, caches and test suites, sorted by path; files over
    ``max_file_bytes`` are skipped. ``limit_bytes`` (None: no cap) keeps the longest prefix of
    that order that fits. Keys ``stdlib/<relpath>``; group: the key's parent directory."""
    _check_limit("limit_bytes", limit_bytes)
    files, skipped = _stdlib_files(max_file_bytes)
    items: list[Item] = []
    total = 0
    for relpath, path, size in files:
        if limit_bytes is not None and total + size > limit_bytes:
            break
        try:
            data = path.read_bytes()
        except OSError:
            skipped += 1
            continue
        if limit_bytes is not None and total + len(data) > limit_bytes:
            break
        key = f"stdlib/{relpath}"
        if not is_safe_key(key):
            skipped += 1
            continue
        items.append(Item(key, data, _parent_group(key)))
        total += len(data)
    if not items:
        raise WorkloadError(
            f"no standard library .py files found under {_stdlib_root()} within the limits"
        )
    return Workload("stdlib", items, skipped=skipped)


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
    candidates, _ = _stdlib_files(VERSIONED_MAX_FILE_BYTES)
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
    _check_limit("limit_bytes", limit_bytes)
    root = _stdlib_root()
    items: list[Item] = []
    total = 0
    for relpath in versioned_files(files):
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
    return Workload("versioned", items)


# --- git -------------------------------------------------------------------------------------


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
    Regular files only (no symlinks, no submodules); blobs over ``max_file_bytes`` skipped;
    ``max_bytes`` keeps the longest prefix that fits. Keys ``git/<path>@<blob sha[:12]>``;
    group: the path. Raises :class:`WorkloadError` if git is missing, ``repo`` is not a git
    repository or has no commits."""
    if max_commits < 1:
        raise WorkloadError(f"max_commits must be >= 1, not {max_commits}")
    _check_limit("max_bytes", max_bytes)
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
    ordered = [
        (file_path, sha)
        for file_path in sorted(blobs, key=_sort_key)
        if is_safe_key(f"git/{file_path}")
        for sha in blobs[file_path]
    ]
    skipped = sum(len(v) for v in blobs.values()) - len(ordered)
    sizes = _blob_sizes(path, sorted({sha for _, sha in ordered}))
    chosen: list[tuple[str, str]] = []
    total = 0
    for file_path, sha in ordered:
        size = sizes.get(sha)
        if size is None or (max_file_bytes is not None and size > max_file_bytes):
            skipped += 1
            continue
        if max_bytes is not None and total + size > max_bytes:
            break
        chosen.append((file_path, sha))
        total += size
    contents = _blob_contents(path, sorted({sha for _, sha in chosen}))
    items = [
        Item(f"git/{file_path}@{sha[:GIT_SHORT_SHA]}", contents[sha], file_path)
        for file_path, sha in chosen
    ]
    if not items:
        raise WorkloadError(f"git repository {path} has no file content within the limits")
    return Workload(f"git:{path}", items, skipped=skipped)


# --- dir -------------------------------------------------------------------------------------


def dir_workload(
    path: Path | str,
    max_bytes: int | None = DEFAULT_LIMIT_BYTES,
    max_file_bytes: int | None = None,
) -> Workload:
    """All regular files under ``path`` (symlinks, to files or directories, are not followed),
    sorted by relative path; files over ``max_file_bytes`` (None: no cap), unreadable files and
    names that are not UTF-8 are skipped. ``max_bytes`` keeps the longest prefix that fits.
    Keys ``dir/<relpath>``; group: the key's parent directory."""
    _check_limit("max_bytes", max_bytes)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WorkloadError(f"{root} is not a directory")
    found: list[tuple[str, Path, int]] = []
    skipped = 0
    for dirpath, _dirnames, filenames in os.walk(root):  # does not follow symlinked dirs
        for filename in filenames:
            file_path = Path(dirpath, filename)
            try:
                if file_path.is_symlink() or not file_path.is_file():
                    continue
                size = file_path.lstat().st_size
            except OSError:
                skipped += 1
                continue
            relpath = file_path.relative_to(root).as_posix()
            if not is_safe_key(f"dir/{relpath}") or (
                max_file_bytes is not None and size > max_file_bytes
            ):
                skipped += 1
                continue
            found.append((relpath, file_path, size))
    found.sort(key=lambda entry: _sort_key(entry[0]))
    items: list[Item] = []
    total = 0
    for relpath, file_path, size in found:
        if max_bytes is not None and total + size > max_bytes:
            break
        try:
            data = file_path.read_bytes()
        except OSError:
            skipped += 1
            continue
        if max_bytes is not None and total + len(data) > max_bytes:
            break
        key = f"dir/{relpath}"
        items.append(Item(key, data, _parent_group(key)))
        total += len(data)
    if not items:
        raise WorkloadError(f"no readable regular files under {root} within the limits")
    return Workload(f"dir:{root}", items, skipped=skipped)


# --- generate --------------------------------------------------------------------------------


def generate_workload(
    spec: str = "generate:text",
    requests: int = DEFAULT_GENERATE_REQUESTS,
    size: int = DEFAULT_GENERATE_SIZE,
) -> Workload:
    """``requests`` server-side ``generate`` requests of ``size`` bytes of kind ``KIND`` (from
    ``spec`` = ``generate:KIND``). No items: see :class:`Workload`."""
    prefix, _, kind = spec.partition(":")
    if prefix != "generate":
        raise WorkloadError(f"not a generate workload: {spec!r} (use generate:KIND)")
    kind = kind or "text"
    if kind not in GENERATE_KINDS:
        raise WorkloadError(
            f"unknown generate kind {kind!r}: expected one of {', '.join(GENERATE_KINDS)}"
        )
    if requests < 1:
        raise WorkloadError(f"requests must be >= 1, not {requests}")
    if size < 0:
        raise WorkloadError(f"size must be >= 0, not {size}")
    return Workload(f"generate:{kind}", [], generated=(kind, size), generated_requests=requests)


# --- CLI names -------------------------------------------------------------------------------

WORKLOAD_NAMES = ("stdlib", "versioned", "git:PATH", "dir:PATH", "generate:KIND")


def parse_workload(
    name: str,
    *,
    limit_bytes: int | None = None,
    seed: int = 0,
    revisions: int = DEFAULT_REVISIONS,
    files: int = DEFAULT_FILES,
    max_commits: int = DEFAULT_MAX_COMMITS,
    requests: int = DEFAULT_GENERATE_REQUESTS,
    size: int = DEFAULT_GENERATE_SIZE,
) -> Workload:
    """Build the workload a CLI name designates: ``stdlib``, ``versioned``, ``git:PATH``,
    ``dir:PATH`` or ``generate:KIND``. ``limit_bytes`` caps the raw bytes of stored corpora
    (default :data:`DEFAULT_LIMIT_BYTES`); ``generate`` uses ``requests`` and ``size`` instead.
    Raises :class:`WorkloadError` (a ``ValueError``) for an unknown name, a missing path or a
    corpus that cannot be built."""
    limit = DEFAULT_LIMIT_BYTES if limit_bytes is None else limit_bytes
    kind, sep, arg = name.strip().partition(":")
    if kind == "stdlib" and not sep:
        return stdlib_workload(limit_bytes=limit)
    if kind == "versioned" and not sep:
        return versioned_workload(revisions=revisions, files=files, seed=seed, limit_bytes=limit)
    if kind in ("git", "dir"):
        if not arg:
            raise WorkloadError(f"workload {name!r} needs a path: {kind}:PATH")
        if kind == "git":
            return git_workload(Path(arg), max_commits=max_commits, max_bytes=limit)
        return dir_workload(Path(arg), max_bytes=limit)
    if kind == "generate":
        return generate_workload(f"generate:{arg}", requests=requests, size=size)
    raise WorkloadError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOAD_NAMES)}")
