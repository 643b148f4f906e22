"""The scaling projection over every role: for a core count, the split of the cores between
fronts, workers (and clients, when they share the host) that carries the most, from the
measured CPU seconds per GB of each role.

Pure arithmetic. A role of ``n`` processes, each a core, carries ``n / cost`` GB/s; a split
carries the least of its roles, and that role is its ``bound``. :func:`best_split` tries every
split of whole cores (at least one process per role) and keeps the fastest; among equals, the
one with the most workers (then the fewest fronts), so spare cores go to compression. A cost
of 0 means that role never limits; a missing cost (None) makes the projection unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, TypedDict

from bench.stats import DEFAULT_CORES

Role = Literal["front", "workers", "client"]


class SplitRow(TypedDict):
    """The best split of ``cores``: processes per role (``clients`` 0 when they run
    elsewhere), the GB/s it carries and the role that bounds it."""

    cores: int
    fronts: int
    workers: int
    clients: int
    gb_per_s: float | None
    bound: Role | None


def _capacity(processes: int, cost: float) -> float:
    return processes / cost if cost > 0 else math.inf


def best_split(
    cores: int,
    front: float | None,
    workers: float | None,
    client: float | None = None,
    *,
    with_clients: bool = False,
) -> SplitRow:
    """The split of ``cores`` between fronts and workers (and, ``with_clients``, client
    processes at ``client`` CPU s/GB: the load generator on the same host) that maximises
    throughput; :class:`ValueError` if there are fewer cores than roles."""
    roles = 3 if with_clients else 2
    if cores < roles:
        raise ValueError(f"a projection needs at least {roles} cores (one per role): {cores}")
    unknown: SplitRow = {
        "cores": cores,
        "fronts": 1,
        "workers": cores - roles + 1,
        "clients": 1 if with_clients else 0,
        "gb_per_s": None,
        "bound": None,
    }
    if front is None or workers is None or (with_clients and client is None):
        return unknown
    best: tuple[float, int, int, int, Role] | None = None
    for fronts in range(1, cores - roles + 2):
        client_counts = range(1, cores - fronts) if with_clients else range(0, 1)
        for clients in client_counts:
            n_workers = cores - fronts - clients
            caps: list[tuple[float, Role]] = [
                (_capacity(n_workers, workers), "workers"),
                (_capacity(fronts, front), "front"),
            ]
            if client is not None and with_clients:
                caps.append((_capacity(clients, client), "client"))
            gbps, bound = min(caps, key=lambda cap: cap[0])  # ties: the first, workers
            key = (gbps, n_workers, -fronts, clients, bound)
            if best is None or key[:3] > best[:3]:
                best = key
    assert best is not None
    gbps, n_workers, neg_fronts, clients, bound = best
    if math.isinf(gbps):
        return unknown
    return {
        "cores": cores,
        "fronts": -neg_fronts,
        "workers": n_workers,
        "clients": clients,
        "gb_per_s": gbps,
        "bound": bound,
    }


def split_projection(
    front: float | None,
    workers: float | None,
    client: float | None = None,
    cores: Iterable[int] = DEFAULT_CORES,
    *,
    with_clients: bool = False,
) -> list[SplitRow]:
    """:func:`best_split` for each core count."""
    return [best_split(n, front, workers, client, with_clients=with_clients) for n in cores]
