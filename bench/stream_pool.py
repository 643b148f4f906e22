"""Stream placement for clients: :class:`StreamPool` maps an affinity key (a file's path, a
table's name) onto a fixed set of client streams, so related objects share one server
compression context."""

from __future__ import annotations

from bench.affinity import stream_index


class StreamPool:
    """``n_streams`` odd client stream ids from ``first`` (1, 3, 5, ...); an affinity key maps
    to one of them by :func:`bench.affinity.stream_index` (an unkeyed BLAKE2b hash), stable
    across runs and processes, and the same index the bench's ``stream`` policy gives a group
    over as many streams."""

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
        return self.streams[stream_index(key, len(self.streams))]

    __call__ = stream_for
