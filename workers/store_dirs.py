"""The store's fast way to open an object: through a descriptor of its directory.

Opening ``root/a/b/name`` safely means checking that no component is a symlink leading out
of the store: a walk of ``lstat`` calls per request. Here each directory is reached once from
the root, one component at a time, each opened relative to the one before without following
a symlink (``O_NOFOLLOW``), and its descriptor is kept; an object is then opened relative to
its directory's descriptor, again without following a symlink. Nothing reached this way can
be outside the store, whatever is renamed meanwhile. A descriptor is used for
:data:`DIR_FD_TTL_S` at most (a directory replaced from outside the server is seen within
that time: the store's own puts never replace a directory, and one its ``delete`` removed
was empty, so nothing is found in it and the store takes the full path) and at most
:data:`MAX_DIR_FDS` are kept. When a component is a symlink or missing,
:meth:`DirectoryFds.open_file` says None and the store takes its full path (which allows
symlinks that stay inside the store). The store's ``delete`` reaches an object's directories
the same way (:func:`open_chain`), and never takes a full path.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Sequence

#: How long a directory's descriptor is used before the directory is reached again.
DIR_FD_TTL_S = 1.0
#: Directory descriptors kept (least recently reached dropped first).
MAX_DIR_FDS = 256

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK so that a FIFO does not block the open; no effect on regular files.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | _CLOEXEC


class DirectoryFds:
    """Descriptors of the directories under ``root`` (a resolved path), by relative path."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._fds: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    def open_file(self, key: str) -> int | None:
        """A descriptor of the file ``key`` (a valid key) names, reached with no symlink
        followed; None if a component is a symlink, missing or cannot be opened."""
        directory, _, name = key.rpartition("/")
        dir_fd = self._directory(directory)
        if dir_fd is None:
            return None
        try:
            return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None

    def _directory(self, rel: str) -> int | None:
        now = time.monotonic()
        entry = self._fds.get(rel)
        if entry is not None:
            if now - entry[1] < DIR_FD_TTL_S:
                return entry[0]
            del self._fds[rel]
            os.close(entry[0])
        fd = self._reach(rel)
        if fd is not None:
            self._fds[rel] = (fd, now)
            while len(self._fds) > MAX_DIR_FDS:
                os.close(self._fds.popitem(last=False)[1][0])
        return fd

    def _reach(self, rel: str) -> int | None:
        try:
            *above, fd = open_chain(self.root, rel.split("/") if rel else ())
        except OSError:
            return None
        for outer in above:
            os.close(outer)
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1][0])

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


def open_chain(root: str, segments: Sequence[str]) -> list[int]:
    """Descriptors of ``root`` and of each directory ``segments`` lead to, in order, each
    opened relative to the one before without following a symlink. OSError if one cannot be
    (ENOENT: missing; ELOOP or ENOTDIR: a symlink or a file in the way), nothing left open."""
    fds = [os.open(root, _DIR_FLAGS)]
    try:
        for segment in segments:
            fds.append(os.open(segment, _DIR_FLAGS, dir_fd=fds[-1]))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds
