"""Request corpora for ``zplex bench``: the workloads by their command-line names.

A :class:`Workload` is an ordered list of :class:`Item` objects (:mod:`bench.workload_items`);
its groups are placed on streams by :mod:`bench.affinity`. Builders (all deterministic for a
given machine and arguments):

- :func:`stdlib_workload` -- the ``.py`` files of the running Python's standard library, in path
  order (about 11 MiB on CPython 3.11 without the test suites), grouped by parent directory.
- :func:`versioned_workload` -- successive revisions of a fixed selection of standard library
  files, each revision a few seeded line edits away from the previous one; grouped by file
  (both in :mod:`bench.stdlib_workloads`).
- :func:`git_workload` -- every distinct blob of every path across a git repository's
  (first-parent) history, path-major, grouped by path (:mod:`bench.git_workload`).
- :func:`dir_workload` -- the regular files of any directory, grouped by parent directory
  (:mod:`bench.dir_workload`).
- :func:`generate_workload` -- server-side synthetic data (``generate`` requests): the items list
  is empty; ``generated`` holds ``(kind, size)`` and ``generated_requests`` the request count.

:func:`parse_workload` maps the CLI names to these builders. Nothing here imports ``server/`` or
``workers/``.
"""

from __future__ import annotations

from pathlib import Path

from bench.affinity import assign_groups, assign_streams, split_groups, stream_index
from bench.dir_workload import dir_workload
from bench.git_workload import DEFAULT_MAX_COMMITS, git_workload
from bench.stdlib_workloads import (
    DEFAULT_FILES,
    DEFAULT_REVISIONS,
    stdlib_workload,
    versioned_files,
    versioned_workload,
)
from bench.workload_items import (
    DEFAULT_LIMIT_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    Item,
    KiB,
    Workload,
    WorkloadError,
    is_safe_key,
)

__all__ = [
    "DEFAULT_GENERATE_REQUESTS",
    "DEFAULT_GENERATE_SIZE",
    "DEFAULT_LIMIT_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "GENERATE_KINDS",
    "WORKLOAD_NAMES",
    "Item",
    "Workload",
    "WorkloadError",
    "assign_groups",
    "assign_streams",
    "dir_workload",
    "generate_workload",
    "git_workload",
    "is_safe_key",
    "parse_workload",
    "split_groups",
    "stdlib_workload",
    "stream_index",
    "versioned_files",
    "versioned_workload",
]

#: generate: 256 requests of 32 KiB (8 MiB).
DEFAULT_GENERATE_REQUESTS = 256
DEFAULT_GENERATE_SIZE = 32 * KiB
#: The kinds the ``generate`` command accepts (docs/protocol.md section 4).
GENERATE_KINDS = ("text", "json", "log", "random", "zeros")


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
    include_hidden: bool = False,
) -> Workload:
    """Build the workload a CLI name designates: ``stdlib``, ``versioned``, ``git:PATH``,
    ``dir:PATH`` or ``generate:KIND``. ``limit_bytes`` caps the raw bytes of stored corpora
    (default :data:`DEFAULT_LIMIT_BYTES`), ``include_hidden`` keeps a directory's hidden,
    version-control and cache folders; ``generate`` uses ``requests`` and ``size`` instead.
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
        return dir_workload(Path(arg), max_bytes=limit, include_hidden=include_hidden)
    if kind == "generate":
        return generate_workload(f"generate:{arg}", requests=requests, size=size)
    raise WorkloadError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOAD_NAMES)}")
