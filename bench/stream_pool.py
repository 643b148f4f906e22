"""Stream placement for clients: :class:`StreamPool` maps an affinity key (a file's path, a
table's name) onto a fixed set of client streams, so related objects share one server
compression context."""

from __future__ import annotations

import zlib


class StreamPool:
    """``n_streams`` odd client stream ids from ``first`` (1, 3, 5, ...); an affinity key maps
    to one of them by ``zlib.crc32`` of its UTF-8 bytes, stable across runs and processes."""

    def __init__(self, n_streams: int, first: int = 1) -> None:
        if n_streams < 1:
            raise ValueError("a stream pool needs at least one stream")
        if first % 2 == 0 or first < 1:
            raise ValueError(f"client streams have odd ids, not {first}")
        last = first + 2 * (n_streams - 1)
        if last > 255:
            raise ValueError(f"{n_streams} streams from {first} go past stream id 255")
        self.streams: tuple[int, ...] = tuple(range(first, last + 1, 2))

    def __len__(self) -> int:
        return len(self.streams)

    def stream_for(self, key: str) -> int:
        return self.streams[zlib.crc32(key.encode("utf-8")) % len(self.streams)]

    __call__ = stream_for
