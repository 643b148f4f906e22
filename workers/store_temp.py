"""The temp files of the object store's ``put``: their names, the lock that puts share, and
the sweep that removes the temp files of puts killed mid-way.

The rule (docs/protocol-decisions.md, "Store"): a temp file is a regular file named
TMP_PREFIX + 16 hex digits (TEMP_NAME) inside the store; nothing else is ever removed. Every
put holds a shared lock on the store's LOCK_NAME file from before it creates its temp file
until after it has renamed it into place (a killed process's locks are released by the
kernel). A sweep that gets that lock exclusively therefore knows that no temp file has a live
writer, and removes them all: the case at server start. While puts are running (e.g. a
replaced worker opening the store beside live ones), it removes only the temp files left
unmodified for SWEEP_MIN_AGE_S.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator

TMP_PREFIX = ".zplex-tmp-"
#: The temp files of ``put``: TMP_PREFIX and 16 hex digits, in the directory of the key.
TEMP_NAME = re.compile(re.escape(TMP_PREFIX) + "[0-9a-f]{16}")
#: At the store's root; never a valid key (it starts with TMP_PREFIX).
LOCK_NAME = TMP_PREFIX + "lock"
#: A temp file left unmodified this long is abandoned even while other puts run.
SWEEP_MIN_AGE_S = 600.0

_OPEN_LOCK = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def put_lock(root: str) -> Iterator[None]:
    """The shared lock a put holds while its temp file exists."""
    fd = os.open(os.path.join(root, LOCK_NAME), _OPEN_LOCK, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def sweep(root: str, *, now: float | None = None) -> int:
    """Remove the abandoned temp files under ``root`` (the rule above); return how many."""
    found = list(_temp_files(root))
    if not found:
        return 0
    try:
        lock = os.open(os.path.join(root, LOCK_NAME), _OPEN_LOCK, 0o666)
    except OSError:  # e.g. a read-only store: nothing can be removed either
        return 0
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            idle = True  # no put is running: every temp file found is abandoned
        except BlockingIOError:
            idle = False
        now = time.time() if now is None else now
        return sum(
            _remove(path, st) for path, st in found if idle or now - st.st_mtime >= SWEEP_MIN_AGE_S
        )
    finally:
        os.close(lock)


def _temp_files(root: str) -> Iterator[tuple[str, os.stat_result]]:
    for directory, _dirs, files in os.walk(root):  # symlinks are not followed
        for name in files:
            if not TEMP_NAME.fullmatch(name):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _remove(path: str, st: os.stat_result) -> int:
    """Unlink ``path`` if it is still the file that was found (and may be removed)."""
    try:
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            return 0
        os.unlink(path)
    except OSError:  # gone already, or not ours to remove: left for the next sweep
        return 0
    return 1
