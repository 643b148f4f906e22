"""A workload ready to replay: its requests (one pass, in order), their expected answers and
bodies, and the placement of each request on a (connection, stream) under each policy.

Groups larger than ``max(1 MiB, corpus / (c * s))`` are cut into runs of consecutive objects
(:func:`bench.workloads.split_groups`) so that one directory holding 40% of the corpus cannot
leave the other streams idle; the same groups serve every policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench import stats
from bench.client import body_digest
from bench.config import POLICY_CONTEXT, BenchConfig, BenchError
from bench.workloads import (
    DEFAULT_GENERATE_REQUESTS,
    Workload,
    WorkloadError,
    parse_workload,
    split_groups,
    stream_index,
)

#: Smallest group size :func:`split_groups` cuts to.
MIN_GROUP_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One request of a pass: what to send and what the answer must be."""

    name: str
    args: dict[str, Any]
    group: str
    size: int | None
    digest: str | None


@dataclasses.dataclass
class Corpus:
    """A workload ready to replay: its requests (one pass, in order) and their bodies."""

    name: str
    workload: Workload
    requests: list[Request]
    bodies: list[bytes]
    ideal_cache: dict[tuple[int, ...], int] = dataclasses.field(default_factory=dict)
    inprocess: dict[str, float | None] = dataclasses.field(default_factory=dict)
    #: generate: the workers' CPU per GB of making (and hashing, framing) the data, measured
    #: during the set-up fetch; subtracted from every phase's workers' CPU.
    generation_cpu_s_per_gb: float | None = None

    @property
    def raw_bytes(self) -> int:
        return sum(len(b) for b in self.bodies)

    def compute_references(self, config: BenchConfig, repeat: int) -> None:
        """The in-process references of the run's figures: the CPU per GB of compressing
        the bodies in one quiet process with each context the policies use (the best of
        ``repeat`` passes; small match tables where every worker context has them), and
        the wire bytes of one ideal context over them all."""
        c = config
        for context in sorted({POLICY_CONTEXT[p] for p in c.policies}):
            if c.encoding == "identity":
                self.inprocess[context] = None
                continue
            small = stats.reference_small_tables(c.small_tables_from, context, c.encoding)
            self.inprocess[context] = stats.inprocess_cpu_s_per_gb(
                self.bodies,
                c.level,
                context=context,
                encoding=c.encoding,
                repeat=repeat,
                small_tables=small,
            )
        self.ideal_wire_bytes(tuple(range(len(self.requests))), c.level, c.encoding)

    def placement(self, policy: str, connections: int, streams: int) -> list[tuple[int, int]]:
        """``(connection index, client stream id)`` of each request under ``policy``."""
        slots: dict[str, tuple[int, int]] = {}
        out = []
        for request in self.requests:
            where = slots.get(request.group)
            if where is None:
                if policy == "connection":
                    where = (stream_index(request.group, connections), 1)
                else:
                    slot = stream_index(request.group, connections * streams)
                    where = (slot % connections, 1 + 2 * (slot // connections))
                slots[request.group] = where
            out.append(where)
        return out

    def ideal_wire_bytes(self, indexes: tuple[int, ...], level: int, encoding: str) -> int:
        """One in-process stream over the bodies of ``indexes`` (in order), cached."""
        cached = self.ideal_cache.get(indexes)
        if cached is None:
            bodies = [self.bodies[i] for i in indexes]
            cached = self.ideal_cache[indexes] = stats.ideal_wire_bytes(
                bodies, level, encoding=encoding
            )
        return cached


def build_workload(name: str, config: BenchConfig) -> Workload:
    kwargs: dict[str, Any] = {"seed": config.seed, "include_hidden": config.include_hidden}
    if config.limit_bytes is not None:
        kwargs["limit_bytes"] = config.limit_bytes
    if config.revisions is not None:
        kwargs["revisions"] = config.revisions
    if config.files is not None:
        kwargs["files"] = config.files
    if config.generate_size is not None:
        kwargs["size"] = config.generate_size
    if config.requests is not None:  # a generate pass need not be longer than the run
        kwargs["requests"] = min(config.requests, DEFAULT_GENERATE_REQUESTS)
    try:
        return parse_workload(name, **kwargs)
    except WorkloadError as exc:
        raise BenchError(str(exc)) from None


def corpus_from(workload: Workload, config: BenchConfig) -> Corpus:
    """The requests of a stored workload (bodies known here), groups split for balance."""
    total_streams = config.connections * config.streams
    split = split_groups(
        workload, max(MIN_GROUP_BYTES, -(-workload.raw_bytes // max(1, total_streams)))
    )
    requests = [
        Request("get", {"key": item.key}, item.group, len(item.data), body_digest(item.data))
        for item in split.items
    ]
    return Corpus(workload.name, split, requests, [item.data for item in split.items])
