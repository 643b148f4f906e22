"""The ``dir:PATH`` workload: the regular files of any directory, in path order, grouped by
parent directory."""

from __future__ import annotations

import os
from pathlib import Path

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
) -> Workload:
    """All regular files under ``path`` (symlinks, to files or directories, are not followed),
    sorted by relative path; files over ``max_file_bytes`` (None: no cap), unreadable files and
    names that are not UTF-8 are skipped. ``max_bytes`` keeps the longest prefix that fits.
    Keys ``dir/<relpath>``; group: the key's parent directory."""
    check_limit("max_bytes", max_bytes)
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
    found.sort(key=lambda entry: sort_key(entry[0]))
    items, unread = read_files(found, "dir", max_bytes)
    skipped += unread
    if not items:
        raise WorkloadError(f"no readable regular files under {root} within the limits")
    return Workload(f"dir:{root}", items, skipped=skipped)
