"""The object store's ``delete``: one object removed, then the directories it leaves empty.

The rule (docs/protocol-decisions.md, "Store"):

* The key's directories are reached from the store's root one at a time, each opened relative
  to the one before without following a symlink (:func:`workers.store_dirs.open_chain`), so
  nothing outside the store is ever touched, whatever is renamed meanwhile. Only a regular
  file reached so is an object to delete, as only such a file is listed: nothing, a
  directory, a symlink (or a path through one) is "no object".
* The object is first renamed, inside its directory, to a temp name of ``put``'s kind
  (:data:`workers.store_temp.TEMP_NAME`). A rename is atomic, so exactly one file leaves the
  key, the one in place at that instant, even while a ``put`` of the same key renames its own
  file over it: the size reported is that file's, and the other file stays (the ``put`` came
  after). Then the temp name is unlinked. A worker killed in between leaves a temp file,
  which the next sweep removes; the put lock is held shared meanwhile, as a ``put`` holds it
  while its temp file exists.
* Then each parent directory left empty is removed, deepest first, up to and never including
  the root: ``rmdir`` fails on a directory that is not empty, so a directory a concurrent
  ``put`` has just written into stays, and the first that stays ends the climb. A ``put``
  whose directory goes between its ``mkdir`` and its temp file makes it again
  (:meth:`workers.store.ObjectStore.put`).
* The directory of the last removal is fsynced before ``delete`` is answered.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat

from workers.store_dirs import open_chain
from workers.store_temp import TMP_PREFIX, put_lock

#: What opening a key's directories fails with when the key names no object: a directory
#: missing, or a symlink or a file where a directory should be.
_NO_OBJECT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

log = logging.getLogger("zplex.store")


def remove_object(root: str, key: str) -> os.stat_result | None:
    """Remove the object ``key`` (a valid key) names in the store at ``root`` (resolved) and
    the directories it leaves empty; return the object's stat from before its removal, or
    None if the key names no object (the rule above)."""
    *directories, name = key.split("/")
    try:
        chain = open_chain(root, directories)
    except OSError as exc:
        if exc.errno in _NO_OBJECT:
            return None
        raise
    try:
        with put_lock(root):
            removed = _take(chain[-1], name)
            if removed is None:
                return None
            last = _remove_empty(chain, directories)
            os.fsync(chain[last])
            return removed
    finally:
        for fd in chain:
            os.close(fd)


def _take(dir_fd: int, name: str) -> os.stat_result | None:
    """Move the regular file ``name`` out of its directory ``dir_fd`` and unlink it; its stat
    (as it was under the key when it is the file first looked at), or None."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(before.st_mode):
        return None
    temp = f"{TMP_PREFIX}{secrets.token_hex(8)}"
    try:
        os.rename(name, temp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:  # another delete took it first
        return None
    taken = os.stat(temp, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(taken.st_mode):
        # The file went, and a put of a key under it made a directory there, between the
        # look and the rename: that directory goes back, and there was no object to delete.
        try:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            # Yet another put filled the name meanwhile: the directory cannot go back, and
            # its objects are out of sight (list, get and the sweep skip temp names) until
            # the operator moves it; say where it is.
            log.error(
                "delete of %r: a directory a concurrent put made under that name could not "
                "be put back and is kept as %r beside it (move it back by hand)",
                name,
                temp,
            )
            raise
        return None
    with contextlib.suppress(FileNotFoundError):  # an old one, swept meanwhile
        os.unlink(temp, dir_fd=dir_fd)
    return before if (before.st_dev, before.st_ino) == (taken.st_dev, taken.st_ino) else taken


def _remove_empty(chain: list[int], directories: list[str]) -> int:
    """Remove the directories of the key left empty, deepest first, never the root (the first
    of ``chain``, the descriptors of the root and of each of ``directories``); the index in
    ``chain`` of the directory where the last entry was removed."""
    last = len(directories)
    while last > 0:
        try:
            os.rmdir(directories[last - 1], dir_fd=chain[last - 1])
        except OSError:  # not empty (ENOTEMPTY, EEXIST), or already gone: the climb ends
            break
        last -= 1
    return last
