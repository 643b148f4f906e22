"""Which files a stored workload measures, and the account of that choice.

A directory tree holds more than the data a user means: version-control metadata, caches,
hidden files. :func:`walk_tree` leaves those out (``include_hidden`` keeps them) and counts
every file it leaves out by reason; :func:`spread_sample` keeps a corpus over ``--limit`` by
sampling across the whole order instead of cutting it at a prefix; :func:`is_compressed` tells
files that are already compressed by their magic number. :class:`Selection` is the account a
workload carries into the JSON (``corpus``) and the progress line.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Directories of version-control systems.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".pijul"})
#: Directories of caches, build tools and environments: generated, not the user's data.
CACHE_DIRS = frozenset(
    {
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".venv",
        "node_modules",
        ".cache",
        ".gradle",
        ".idea",
        ".vscode",
    }
)

#: Reasons a file is left out of a corpus (the keys of ``corpus.skipped`` in the JSON).
SKIP_REASONS = (
    "vcs",  # inside a version-control directory
    "cache",  # inside a cache or environment directory
    "hidden",  # a hidden file, or inside a hidden directory
    "not-regular",  # a symlink, device, socket or fifo
    "too-large",  # over the per-file cap
    "unreadable",  # could not be read (permissions, vanished)
    "unsafe-name",  # not a key the store accepts (not UTF-8, too long, ...)
    "over-limit",  # left out so that the corpus fits --limit
)

#: Leading bytes of formats that are already compressed.
COMPRESSED_MAGIC = (
    b"\x1f\x8b",  # gzip
    b"\x28\xb5\x2f\xfd",  # zstd
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x5d\x00\x00",  # lzma
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"PK\x03\x04",  # zip, jar, docx, ...
    b"7z\xbc\xaf\x27\x1c",  # 7-zip
    b"\x89PNG\r\n\x1a\n",  # png
    b"\xff\xd8\xff",  # jpeg
    b"GIF8",  # gif
    b"RIFF",  # webp, avi, wav (mostly compressed payloads)
    b"\x00\x00\x00\x18ftyp",  # mp4
    b"\x00\x00\x00\x20ftyp",
    b"OggS",  # ogg
    b"ID3",  # mp3
    b"%PDF",  # pdf (compressed streams)
)


def is_compressed(data: bytes) -> bool:
    """Whether ``data`` starts with the magic number of a compressed format."""
    return data.startswith(COMPRESSED_MAGIC)


@dataclass
class Selection:
    """What a workload kept and left out: ``files`` and ``total_bytes`` kept, ``skipped`` files by
    reason, ``compressed_files`` among those kept; ``extra`` holds builder-specific figures
    (``git``: ``commits`` replayed and ``commits_total``)."""

    files: int = 0
    total_bytes: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    compressed_files: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        if count > 0:
            self.skipped[reason] += count

    def keep(self, data: bytes) -> None:
        self.files += 1
        self.total_bytes += len(data)
        self.compressed_files += is_compressed(data)

    def to_json(self) -> dict[str, Any]:
        """``{files, bytes, skipped: {reason: count}, compressed_files, ...extra}``."""
        return {
            "files": self.files,
            "bytes": self.total_bytes,
            "skipped": dict(sorted(self.skipped.items())),
            "compressed_files": self.compressed_files,
            **self.extra,
        }

    def describe(self) -> str:
        """One line for people: kept, skipped by reason, compressed."""
        text = f"{self.files:,} files, {self.total_bytes / 1e6:,.1f} MB kept"
        if self.skipped:
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.skipped.items()))
            text += f"; skipped {reasons}"
        if self.compressed_files:
            text += f"; {self.compressed_files:,} already compressed"
        if "commits" in self.extra:
            commits, total = self.extra["commits"], self.extra.get("commits_total")
            text += f"; the last {commits:,} of {total:,} commits"
        return text


def _dir_reason(name: str) -> str | None:
    """Why a directory is left out (None: walk it)."""
    if name in VCS_DIRS:
        return "vcs"
    if name in CACHE_DIRS:
        return "cache"
    if name.startswith("."):
        return "hidden"
    return None


def _count_files(top: str) -> int:
    return sum(len(filenames) for _dirpath, _dirnames, filenames in os.walk(top))


def walk_tree(
    root: Path, selection: Selection, *, include_hidden: bool = False
) -> list[tuple[str, Path, int]]:
    """The regular files under ``root`` as ``(relpath, path, size)`` in directory order, without
    (unless ``include_hidden``) version-control, cache and hidden directories and hidden files;
    every file left out is counted in ``selection`` by reason. Symlinks are not followed."""
    found: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if not include_hidden:
            kept_dirs = []
            for name in dirnames:
                reason = _dir_reason(name)
                if reason is None:
                    kept_dirs.append(name)
                else:
                    selection.skip(reason, _count_files(os.path.join(dirpath, name)))
            dirnames[:] = kept_dirs
        for filename in filenames:
            if not include_hidden and filename.startswith("."):
                selection.skip("hidden")
                continue
            file_path = Path(dirpath, filename)
            try:
                if file_path.is_symlink() or not file_path.is_file():
                    selection.skip("not-regular")
                    continue
                size = file_path.lstat().st_size
            except OSError:
                selection.skip("unreadable")
                continue
            found.append((file_path.relative_to(root).as_posix(), file_path, size))
    return found


def spread_sample(sizes: Sequence[int], limit: int | None) -> list[int]:
    """Indexes of the entries to keep so that their sizes sum to at most ``limit``: all of them
    if they fit, else a systematic sample spread evenly over the whole order (an entry is kept
    when the bytes kept stay within ``limit``'s share of the bytes seen so far), so a
    corpus over the limit still represents its whole tree, not its first directories.
    Deterministic: the same sizes give the same sample."""
    total = sum(sizes)
    if limit is None or total <= limit:
        return list(range(len(sizes)))
    kept: list[int] = []
    kept_bytes = 0
    seen = 0
    for index, size in enumerate(sizes):
        seen += size
        # Kept when the entry's midpoint falls within the share of the bytes seen so far, so
        # large entries are not passed over more often than small ones.
        if kept_bytes + size <= limit and kept_bytes + size / 2 <= limit * seen / total:
            kept.append(index)
            kept_bytes += size
    return kept
