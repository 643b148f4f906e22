"""The ``dir:PATH`` workload: the regular files of any directory, in path order, grouped by
parent directory."""

from __future__ import annotations

from pathlib import Path

from bench.corpus_selection import Selection, walk_tree
from bench.workload_items import (
    DEFAULT_LIMIT_BYTES,
    Workload,
    WorkloadError,
    check_limit,
    is_safe_key,
    read_files,
    sort_key,
)


def dir_workload(
    path: Path | str,
    max_bytes: int | None = DEFAULT_LIMIT_BYTES,
    max_file_bytes: int | None = None,
    *,
    include_hidden: bool = False,
) -> Workload:
    """The regular files under ``path`` (symlinks, to files or directories, are not followed),
    sorted by relative path, without version-control, cache and hidden directories and hidden
    files unless ``include_hidden``; files over ``max_file_bytes`` (None: no cap), unreadable
    files and names that are not UTF-8 are skipped. Over ``max_bytes``, a sample spread across
    the tree. Keys ``dir/<relpath>``; group: the key's parent directory. The workload's
    ``selection`` counts what was kept and skipped, by reason."""
    check_limit("max_bytes", max_bytes)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WorkloadError(f"{root} is not a directory")
    selection = Selection()
    found = []
    for relpath, file_path, size in walk_tree(root, selection, include_hidden=include_hidden):
        if max_file_bytes is not None and size > max_file_bytes:
            selection.skip("too-large")
        elif not is_safe_key(f"dir/{relpath}"):
            selection.skip("unsafe-name")
        else:
            found.append((relpath, file_path, size))
    found.sort(key=lambda entry: sort_key(entry[0]))
    items = read_files(found, "dir", max_bytes, selection)
    if not items:
        raise WorkloadError(
            f"no readable regular files under {root} within the limits ({selection.describe()})"
        )
    return Workload(f"dir:{root}", items, selection=selection)
