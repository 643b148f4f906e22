"""Affinity placement: which stream an affinity group's requests go to (an unkeyed hash, the
same everywhere), and the cutting of oversized groups into runs so that streams stay balanced."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bench.workload_items import Item, Workload


def stream_index(group: str, n_streams: int) -> int:
    """The stream index in ``[0, n_streams)`` of an affinity group: an unkeyed BLAKE2b hash,
    the same on every run, machine and Python (never the salted built-in ``hash``)."""
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, not {n_streams}")
    digest = hashlib.blake2b(group.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_streams


def assign_groups(groups: Iterable[str], n_streams: int) -> list[int]:
    """The stream index of each group, in order (see :func:`stream_index`)."""
    cache: dict[str, int] = {}
    out = []
    for group in groups:
        index = cache.get(group)
        if index is None:
            index = cache[group] = stream_index(group, n_streams)
        out.append(index)
    return out


def assign_streams(items: Iterable[Item], n_streams: int) -> list[int]:
    """The stream index of each item, in order: all items of a group get the same index."""
    return assign_groups((item.group for item in items), n_streams)


def split_groups(workload: Workload, max_group_bytes: int) -> Workload:
    """A copy of ``workload`` whose oversized groups are cut into runs of consecutive items of at
    most ``max_group_bytes`` (groups ``<group>#1``, ``<group>#2``, ...; a group that fits keeps
    its name). Use it to balance streams when a few groups hold most of the bytes (the stdlib's
    top directory holds ~40% of it) while keeping neighbours together."""
    if max_group_bytes < 1:
        raise ValueError("max_group_bytes must be >= 1")
    totals: dict[str, int] = {}
    for item in workload.items:
        totals[item.group] = totals.get(item.group, 0) + len(item.data)
    state: dict[str, tuple[int, int]] = {}  # group -> (chunk number, bytes in chunk)
    items = []
    for item in workload.items:
        if totals[item.group] <= max_group_bytes:
            items.append(item)
            continue
        chunk, used = state.get(item.group, (1, 0))
        if used and used + len(item.data) > max_group_bytes:
            chunk, used = chunk + 1, 0
        state[item.group] = (chunk, used + len(item.data))
        items.append(Item(item.key, item.data, f"{item.group}#{chunk}"))
    return Workload(
        workload.name,
        items,
        workload.generated,
        workload.generated_requests,
        workload.selection,
    )
