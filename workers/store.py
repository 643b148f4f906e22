"""Object store: a directory of files addressed by relative POSIX keys (their rules and the
store's errors: :mod:`workers.store_keys`).

Error messages never contain filesystem paths, so they may be sent to a peer as they are.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import errno
import functools
import hashlib
import itertools
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from workers.store_delete import remove_object
from workers.store_dirs import DirectoryFds
from workers.store_keys import (
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    BadKey,
    BadRange,
    NotFound,
    StoreError,
    validate_key,
)
from workers.store_temp import TMP_PREFIX, put_lock
from workers.store_temp import sweep as sweep_temp_files

__all__ = [
    "DIGEST_PREFIX",
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "TMP_PREFIX",
    "BadKey",
    "BadRange",
    "NotFound",
    "ObjectStore",
    "StoreError",
    "digest",
    "validate_key",
]

DIGEST_PREFIX = "blake2b-256:"

_READ_CHUNK = 1 << 20
#: Whole-object digests remembered per store (about 200 bytes each).
DIGEST_CACHE_ENTRIES = 100_000
#: Keys of objects read, remembered as valid (at most MAX_KEY_BYTES each).
VALID_KEYS_ENTRIES = 16_384
#: Times a put makes its key's directories again when a delete removes one meanwhile.
PARENT_ATTEMPTS = 8

P = ParamSpec("P")
R = TypeVar("R")


def digest(data: bytes) -> str:
    """Return ``"blake2b-256:<hex>"`` of ``data``."""
    return DIGEST_PREFIX + hashlib.blake2b(data, digest_size=32).hexdigest()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _os_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn an unexpected OSError into a StoreError whose message has no path."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            raise StoreError(f"store I/O error: {exc.strerror or type(exc).__name__}") from exc

    return wrapper


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Objects stored as files under a root directory."""

    def __init__(
        self, root: str | Path, *, digest_cache: int = DIGEST_CACHE_ENTRIES, sweep: bool = True
    ) -> None:
        """Open (and create) the store; with ``sweep``, remove the temp files of puts that
        were killed mid-way (:meth:`sweep_temp_files`)."""
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        self.root: Path = path.resolve(strict=True)
        self._root_str = str(self.root)
        self._root_prefix = self._root_str.rstrip(os.sep) + os.sep
        # Digests of whole objects by file identity (device, inode, size, mtime, ctime): a
        # rewritten or replaced file never matches an old entry.
        self._digests: collections.OrderedDict[tuple[int, ...], str] = collections.OrderedDict()
        self._digest_cache = digest_cache
        self._dirs = DirectoryFds(self._root_str)
        #: Keys read before, known valid (validate_key depends on the key alone).
        self._valid_keys: set[str] = set()
        if sweep:
            self.sweep_temp_files()

    def path_for(self, key: object) -> Path:
        """Return the file path of ``key``; BadKey if invalid or it resolves outside the root."""
        return Path(self._path_str(key))

    def _path_str(self, key: object) -> str:
        """:meth:`path_for` as a string (no pathlib on the read path)."""
        valid = validate_key(key)
        path = self._root_prefix + valid
        if self._has_symlink(valid):
            try:
                resolved = os.path.realpath(path)
            except (OSError, RuntimeError):  # symlink loop
                raise BadKey("key cannot be resolved") from None
            if not resolved.startswith(self._root_prefix):
                raise BadKey("key resolves outside the store")
        return path

    def _has_symlink(self, key: str) -> bool:
        """Whether any existing component of the key below the (resolved) root is a
        symlink; only then is the full resolution needed."""
        current = self._root_str
        for segment in key.split("/"):
            current = current + os.sep + segment
            try:
                mode = os.lstat(current).st_mode
            except OSError:
                return False  # nothing exists below here: nothing to follow
            if stat.S_ISLNK(mode):
                return True
        return False

    @staticmethod
    def _identity(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _remember(self, identity: tuple[int, ...], object_digest: str) -> None:
        self._digests[identity] = object_digest
        self._digests.move_to_end(identity)
        while len(self._digests) > self._digest_cache:
            self._digests.popitem(last=False)

    def remember(self, identity: tuple[int, ...], object_digest: str) -> None:
        """Cache a whole object's digest under its file's identity (an ObjectReader's)."""
        self._remember(identity, object_digest)

    @_os_errors
    def get_with_digest(
        self, key: object, offset: int = 0, length: int | None = None
    ) -> tuple[bytes, int, str]:
        """Like :meth:`get`, plus the digest of the returned bytes (cached for whole
        objects, so a popular object is not hashed on every read)."""
        data, size, st = self._read(key, offset, length)
        if len(data) != size or st is None:
            return data, size, digest(data)
        identity = self._identity(st)
        cached = self._digests.get(identity)
        if cached is None:
            cached = digest(data)
        self._remember(identity, cached)
        return data, size, cached

    def _open_regular(self, key: object) -> tuple[int, int]:
        """Open the object for reading; return (fd, size)."""
        fd, st = self._open_stat(key)
        return fd, st.st_size

    def _open_stat(self, key: object) -> tuple[int, os.stat_result]:
        """Open the object for reading; return (fd, its stat). Through its directory's kept
        descriptor when no component is a symlink (no walk: :mod:`workers.store_dirs`), else
        by its full path, checked."""
        known = type(key) is str and key in self._valid_keys
        valid = key if known else validate_key(key)
        fd = self._dirs.open_file(valid)  # type: ignore[arg-type]  # a str: known or validated
        if fd is None:
            fd = self._open_path(key)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFound("no such object")
        if not known:  # objects' keys only, a bounded number of them
            if len(self._valid_keys) >= VALID_KEYS_ENTRIES:
                self._valid_keys.clear()
            self._valid_keys.add(valid)  # type: ignore[arg-type]
        return fd, st

    def _open_path(self, key: object) -> int:
        path = self._path_str(key)
        try:
            # O_NONBLOCK so that a FIFO does not block the open; no effect on regular files.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound("no such object") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadKey("key cannot be resolved") from None
            raise
        return fd

    @_os_errors
    def get(self, key: object, offset: int = 0, length: int | None = None) -> tuple[bytes, int]:
        """Return (bytes of the range, object size); the range is clipped to the object."""
        data, size, _st = self._read(key, offset, length)
        return data, size

    def _read(
        self, key: object, offset: int, length: int | None
    ) -> tuple[bytes, int, os.stat_result | None]:
        if not _is_int(offset) or offset < 0:
            raise BadRange("offset must be an integer >= 0")
        if length is not None and (not _is_int(length) or length < 0):
            raise BadRange("length must be an integer >= 0")
        fd, st = self._open_stat(key)
        size = st.st_size
        try:
            if offset >= size:
                return b"", size, None
            want = size - offset if length is None else min(length, size - offset)
            parts: list[bytes] = []
            pos = offset
            end = offset + want
            while pos < end:
                chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
                if not chunk:  # truncated while reading
                    break
                parts.append(chunk)
                pos += len(chunk)
            return b"".join(parts), size, st
        finally:
            os.close(fd)

    @_os_errors
    def reader(self, key: object, offset: int = 0, length: int | None = None) -> ObjectReader:
        """An open object (or a range of it) to read a chunk at a time; its digest is known
        when the whole object is asked for and its file's digest is cached."""
        if not _is_int(offset) or offset < 0:
            raise BadRange("offset must be an integer >= 0")
        if length is not None and (not _is_int(length) or length < 0):
            raise BadRange("length must be an integer >= 0")
        fd, st = self._open_stat(key)
        start = min(offset, st.st_size)
        size = st.st_size - start if length is None else min(length, st.st_size - start)
        whole = start == 0 and size == st.st_size
        identity = self._identity(st) if whole else None
        cached = self._digests.get(identity) if identity is not None else None
        return ObjectReader(self, fd, start, size, st.st_size, identity, cached)

    @_os_errors
    def size(self, key: object) -> int:
        """Return the size of the object in bytes."""
        fd, size = self._open_regular(key)
        os.close(fd)
        return size

    def _make_parents(self, parent: Path) -> None:
        """Create the missing directories between the root and ``parent``, durably
        (FileNotFoundError if a delete removes one meanwhile)."""
        rel = parent.relative_to(self.root)
        current = self.root
        for part in rel.parts:
            current = current / part
            try:
                current.mkdir()
            except FileExistsError:
                try:
                    if stat.S_ISDIR(os.stat(current).st_mode):
                        continue
                except FileNotFoundError:
                    if not current.is_symlink():
                        raise  # removed since it was found: made again
                raise BadKey("a parent of the key is an object") from None
            except NotADirectoryError:
                raise BadKey("a parent of the key is an object") from None
            _fsync_dir(current.parent)

    @_os_errors
    def put(self, key: object, data: bytes) -> tuple[int, str]:
        """Store ``data`` atomically and durably under ``key``; return (size, digest)."""
        path = self.path_for(key)
        if path.is_dir():
            raise BadKey("key names a directory")
        parent = path.parent
        view = memoryview(data).cast("B")
        object_digest = DIGEST_PREFIX + hashlib.blake2b(view, digest_size=32).hexdigest()
        with put_lock(self._root_str):
            fd, tmp, path = self._new_temp(key, parent)
            try:
                self._write_temp(fd, tmp, view, path)
                with contextlib.suppress(FileNotFoundError):  # deleted since: durably
                    _fsync_dir(parent)
                self._remember_if_in_place(fd, path, object_digest)
            finally:
                os.close(fd)
        return len(view), object_digest

    def _new_temp(self, key: object, parent: Path) -> tuple[int, Path, Path]:
        """Make the missing directories, then a temp file in ``parent`` (again if a delete
        removed an emptied directory between the two); its fd and path, and the key's path."""
        for _attempt in range(PARENT_ATTEMPTS):
            try:
                self._make_parents(parent)
                path = self.path_for(key)  # a new directory may change where it resolves
                fd, tmp = self._create_temp(parent)
            except FileNotFoundError:
                continue
            return fd, tmp, path
        raise StoreError("the key's directory was removed while the object was stored")

    @_os_errors
    def delete(self, key: object) -> int:
        """Remove the object under ``key`` and the directories it leaves empty; return its
        size. NotFound if it names no object (the rule of workers/store_delete.py)."""
        removed = remove_object(self._root_str, validate_key(key))
        if removed is None:
            raise NotFound("no such object")
        self._digests.pop(self._identity(removed), None)
        return removed.st_size

    @staticmethod
    def _create_temp(parent: Path) -> tuple[int, Path]:
        tmp = parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except NotADirectoryError:
            raise BadKey("a parent of the key is an object") from None

    @staticmethod
    def _write_temp(fd: int, tmp: Path, view: memoryview, path: Path) -> None:
        """Write, fsync and rename the temp file into place (removed if any step fails)."""
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
            os.fsync(fd)
            try:
                os.replace(tmp, path)
            except IsADirectoryError:
                raise BadKey("key names a directory") from None
            except OSError as exc:
                if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise BadKey("key names a directory") from None
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _remember_if_in_place(self, fd: int, path: Path, object_digest: str) -> None:
        """Cache the digest under the identity of the file this put wrote (its descriptor),
        and only if that file is still the one under the key: a concurrent put of the same
        key may have replaced it since the rename."""
        mine = os.fstat(fd)  # after the rename, which changes the file's ctime
        try:
            there = os.lstat(path)
        except FileNotFoundError:
            return
        if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
            self._remember(self._identity(mine), object_digest)

    @_os_errors
    def sweep_temp_files(self) -> int:
        """Remove the temp files of puts killed mid-way (the rule of workers/store_temp.py);
        return how many were removed."""
        return sweep_temp_files(self._root_str)

    @_os_errors
    def list(self, prefix: str = "", limit: int | None = None) -> list[tuple[str, int]]:
        """Return (key, size) of the objects whose key starts with ``prefix``, sorted by key.

        Only regular files with valid keys are listed; symlinks and temporary files are not.
        The walk yields keys in order and stops at ``limit``: it holds one directory's
        entries per level, never the whole listing.
        """
        if not isinstance(prefix, str):
            raise BadRange("prefix must be a string")
        if limit is not None and (not _is_int(limit) or limit < 0):
            raise BadRange("limit must be an integer >= 0")
        return list(itertools.islice(self._walk(self._root_str, "", prefix), limit))

    def _scan(self, directory: str) -> builtins.list[tuple[str, os.DirEntry[str]]]:
        """The entries of one directory as (sort name, entry), in key order: a directory
        sorts as its name plus "/", so that the keys under it come in order among its
        siblings (``a.txt`` < ``a/b`` < ``aa``)."""
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not e.name.startswith(TMP_PREFIX)]
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []
        named: builtins.list[tuple[str, os.DirEntry[str]]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except FileNotFoundError:
                continue
            named.append((entry.name + "/" if is_dir else entry.name, entry))
        named.sort(key=lambda pair: pair[0])
        return named

    def _walk(self, directory: str, rel: str, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of the objects under ``directory`` whose key starts with ``prefix``,
        in key order, one directory read at a time."""
        for name, entry in self._scan(directory):
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(entry.path, key, prefix)
                continue
            if not key.startswith(prefix):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                validate_key(key)
                size = entry.stat(follow_symlinks=False).st_size
            except (BadKey, FileNotFoundError):
                continue
            yield key, size


class ObjectReader:
    """``size`` bytes of an object from ``offset``, through the descriptor opened once (a
    ``put`` that replaces the object meanwhile does not change what is read). ``digest``:
    the cached digest of the whole object, or None. Close it once done."""

    def __init__(
        self,
        store: ObjectStore,
        fd: int,
        offset: int,
        size: int,
        object_size: int,
        identity: tuple[int, ...] | None,
        digest: str | None,
    ) -> None:
        self._store = store
        self._fd: int | None = fd
        self.offset = offset
        self.size = size
        self.object_size = object_size
        self._identity = identity
        self.digest = digest

    def chunks(self, chunk_bytes: int = _READ_CHUNK) -> Iterator[bytes]:
        """The bytes, ``chunk_bytes`` at a time (fewer in all if the file was truncated);
        StoreError on an I/O error or once closed."""
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            if self._fd is None:
                raise StoreError("the object was closed")
            try:
                chunk = os.pread(self._fd, min(chunk_bytes, end - pos), pos)
            except OSError as exc:
                raise StoreError(f"store I/O error: {exc.strerror or 'read'}") from exc
            if not chunk:  # truncated while reading
                return
            pos += len(chunk)
            yield chunk

    def remember(self, object_digest: str) -> None:
        """The digest of the whole object, found by reading it (or the cached one, used
        again): cached for the next reads, unless the file changed since it was opened."""
        if self._identity is None or self._fd is None:
            return
        if object_digest != self.digest:
            try:
                changed = ObjectStore._identity(os.fstat(self._fd)) != self._identity
            except OSError:
                return
            if changed:
                return
        self._store.remember(self._identity, object_digest)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
