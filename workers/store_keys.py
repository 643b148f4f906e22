"""The object store's keys (what makes a valid one) and the errors the store raises. Error
messages never contain filesystem paths, so they may be sent to a peer as they are."""

from __future__ import annotations

import re

from workers.store_temp import TMP_PREFIX

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255

#: Unicode category Cc: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class StoreError(Exception):
    """Base class of the store's errors."""


class BadKey(StoreError):
    """The key is malformed or names something that cannot be an object."""


class BadRange(StoreError):
    """An offset, length, prefix or limit argument is invalid."""


class NotFound(StoreError):
    """No object exists under the key."""


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise BadKey."""
    if not isinstance(key, str):
        raise BadKey("key must be a string")
    if not key:
        raise BadKey("key is empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadKey("key is not valid UTF-8 text") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise BadKey(f"key is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise BadKey("key contains a NUL byte")
    if "\\" in key:
        raise BadKey("key contains a backslash")
    if _CONTROL.search(key):
        raise BadKey("key contains a control character")
    if key.startswith("/"):
        raise BadKey("key is an absolute path")
    for segment in key.split("/"):
        if not segment:
            raise BadKey("key has an empty path segment")
        if segment in (".", ".."):
            raise BadKey(f"key has a {segment!r} path segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise BadKey(f"key has a path segment longer than {MAX_SEGMENT_BYTES} bytes")
        if segment.startswith(TMP_PREFIX):
            raise BadKey(f"key has a path segment starting with {TMP_PREFIX!r}")
    return key
