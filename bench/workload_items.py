"""What a workload is: an ordered list of :class:`Item` objects (or ``generate`` requests) in a
:class:`Workload`, the store's key rules every item obeys (:func:`is_safe_key`), and the
helpers and defaults the builders share.

The load generator stores each item under its ``key`` (with ``put``) and then requests the keys
in list order (with ``get``); every policy replays the same items in the same order. ``group``
is the item's affinity key: items of one group belong on one stream, so that the stream's
compression context holds their history (see :mod:`bench.affinity`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bench.corpus_selection import Selection, spread_sample

KiB = 1024
MiB = 1024 * 1024

#: Cap applied by :func:`parse_workload` when no ``limit_bytes`` is given: it keeps ``make bench``
#: (every policy replays the corpus) within about two minutes on two cores.
DEFAULT_LIMIT_BYTES = 16 * MiB
#: Files larger than this are skipped by the stdlib and dir builders (one huge file would
#: dominate a corpus of small objects).
DEFAULT_MAX_FILE_BYTES = 256 * KiB

# The object store's key rules (workers/store.py), mirrored: bench/ must not import workers/.
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
STORE_TMP_PREFIX = ".zplex-tmp-"


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
    #: What the builder kept and left out (see :class:`~bench.corpus_selection.Selection`).
    selection: Selection = field(default_factory=Selection, compare=False)

    def corpus(self) -> dict[str, object]:
        """The JSON's ``corpus``: ``{files, bytes, skipped: {reason: count},
        compressed_files}`` (a generated workload: its requests and bytes, nothing skipped)."""
        if self.generated is not None:
            return Selection(files=self.requests, total_bytes=self.raw_bytes).to_json()
        return self.selection.to_json()

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


def sort_key(relpath: str) -> tuple[str, ...]:
    """Path order: directory by directory (``a/b.py`` before ``a-b.py``'s siblings' children)."""
    return PurePosixPath(relpath).parts


def check_limit(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise WorkloadError(f"{name} must be >= 0, not {value}")


def parent_group(key: str) -> str:
    return str(PurePosixPath(key).parent)


def read_files(
    files: Sequence[tuple[str, Path, int]],
    prefix: str,
    limit_bytes: int | None,
    selection: Selection,
) -> list[Item]:
    """The items ``<prefix>/<relpath>`` (grouped by parent directory) of ``files``
    (``(relpath, path, size)``, in order): all of them if their bytes fit ``limit_bytes`` (None:
    no cap), else a sample spread across the whole order (:func:`spread_sample`). Every file
    kept or left out (over the limit, unreadable, not a safe key) is counted in ``selection``."""
    chosen = spread_sample([size for _relpath, _path, size in files], limit_bytes)
    selection.skip("over-limit", len(files) - len(chosen))
    items: list[Item] = []
    for index in chosen:
        relpath, path, _size = files[index]
        key = f"{prefix}/{relpath}"
        if not is_safe_key(key):
            selection.skip("unsafe-name")
            continue
        try:
            data = path.read_bytes()
        except OSError:
            selection.skip("unreadable")
            continue
        items.append(Item(key, data, parent_group(key)))
        selection.keep(data)
    return items
