"""Response bodies too large to hold at once: produced a chunk at a time.

A :class:`ChunkedBody` is a body of known size with a source that makes it a chunk at a
time, as often as asked (a file read through one open descriptor, or ``generate`` run
again: its output is deterministic). The response header carries the body's digest
(docs/protocol.md section 4) and goes first, so when the digest is wanted and not known
already (the store caches whole objects' digests), a first pass over the source computes
it, a chunk per :meth:`ChunkedBody.digest_step`; the worker then sends the body in a second
pass (:meth:`ChunkedBody.chunks`). Neither pass holds more than a chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from workers.store import DIGEST_PREFIX

#: Bodies up to this size are built whole, hashed and compressed at once (the cheapest way
#: for the many small responses); larger ones are chunked.
CHUNKED_ABOVE_BYTES = 1 << 20
#: Bytes of a chunked body made (read, generated) at a time: what one step of a response
#: feeds the stream's compressor.
BODY_CHUNK_BYTES = 256 * 1024


class BodyChanged(Exception):
    """The source did not make ``size`` bytes (a file truncated while it was read)."""


class ChunkedBody:
    """A body of ``size`` bytes, made by ``source()`` (a fresh pass a chunk at a time each
    call). ``header`` is complete once :attr:`ready`: with ``digest`` wanted and not given,
    only after the digest pass (``on_digest`` is told the digest found). ``close`` lets go
    of the source (an open file), once."""

    def __init__(
        self,
        header: dict[str, Any],
        size: int,
        source: Callable[[], Iterator[bytes]],
        *,
        digest: str | None = None,
        want_digest: bool = True,
        on_digest: Callable[[str], None] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.header = header
        self.size = size
        self._source = source
        self._on_digest = on_digest
        self._close = close
        self._hashing: Iterator[bytes] | None = None
        self._hash: Any = None
        self._hashed = 0
        if want_digest and digest is None:
            self.ready = False
        else:
            if want_digest:
                header["digest"] = digest
            self.ready = True

    def digest_step(self) -> None:
        """Hash the body's next chunk; after the last, the header has the digest and the
        body is :attr:`ready`. BodyChanged if the source's size is not ``size``."""
        if self.ready:
            return
        if self._hashing is None:
            self._hashing = self._source()
            self._hash = hashlib.blake2b(digest_size=32)
        chunk = next(self._hashing, None)
        if chunk is not None:
            self._hash.update(chunk)
            self._hashed += len(chunk)
            if self._hashed <= self.size:
                return
        if self._hashed != self.size:
            raise BodyChanged("the body changed while it was read")
        found = DIGEST_PREFIX + self._hash.hexdigest()
        self._hashing = self._hash = None
        self.header["digest"] = found
        self.ready = True
        if self._on_digest is not None:
            self._on_digest(found)

    def chunks(self) -> Iterator[bytes]:
        """The body, a chunk at a time (BodyChanged if the source makes another size)."""
        sent = 0
        for chunk in self._source():
            sent += len(chunk)
            if sent > self.size:
                break
            yield chunk
        if sent != self.size:
            raise BodyChanged("the body changed while it was sent")

    def close(self) -> None:
        close, self._close = self._close, None
        self._hashing = None
        if close is not None:
            close()
