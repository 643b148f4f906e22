"""``--cleanup``: which objects a run puts into a ``--connect`` server's store, and their
removal at the end of the run, whatever ended it (its end, Ctrl-C, a failure), with the
``delete`` extension of a server started with ``zplex serve --allow-delete``. Only the keys
the store lacked before the run are removed: an object the store held (with other bytes, so
put again) stays."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

from bench.client import AsyncClient, Client, ConnectionLost, Response, ServerError
from bench.config import BenchFailure
from bench.passes import error_code
from bench.server_process import Endpoint

#: Deletes sent before their answers are read, spread over this many streams (workers).
DELETE_WINDOW = 64
DELETE_STREAMS = 4


class PutLedger:
    """The keys a run put that the store lacked before it, in the order they were sent:
    those acknowledged, and those whose put ended without saying it stored nothing (no
    answer, Ctrl-C, ``worker-lost``): maybe stored. A put answered with another error stored
    nothing (a put is atomic), unless an earlier put of the run stored that key (two
    workloads may share a key: ``--dir a --dir b``)."""

    def __init__(self) -> None:
        self.sent: dict[str, None] = {}  # an ordered set
        self.acknowledged: set[str] = set()
        #: Keys the store held before the run: never removed.
        self.kept: set[str] = set()

    def keep(self, keys: Iterable[str]) -> None:
        """Keys a workload's listing found held (with other bytes): the store's own unless
        this run put them."""
        self.kept.update(key for key in keys if key not in self.sent)

    def sending(self, key: str) -> None:
        if key not in self.kept:
            self.sent[key] = None

    def answered(self, key: str, error: BaseException | None) -> None:
        """A put's answer: ``error`` None when it was acknowledged."""
        if key not in self.sent:
            return
        if error is None:
            self.acknowledged.add(key)
        elif (
            isinstance(error, ServerError)
            and error.code != "worker-lost"
            and key not in self.acknowledged
        ):
            del self.sent[key]


@dataclasses.dataclass
class Cleanup:
    """What ``--cleanup`` removed (``metadata.cleanup`` in the JSON)."""

    deleted: int = 0
    bytes: int = 0
    #: Objects not removed, by error code.
    failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: Objects the run put again under keys the store held before it: left in place.
    kept: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "bytes": self.bytes,
            "failed": dict(self.failed),
            "kept": self.kept,
        }

    def describe(self, where: str) -> list[str]:
        """What was removed from the store of ``where``, in lines."""
        store = f"the store of {where}"
        if self.deleted or self.failed:
            megabytes = self.bytes / 1e6
            lines = [
                f"removed {self.deleted:,} objects ({megabytes:,.1f} MB) this run put into {store}"
            ]
        else:
            lines = [f"this run put no object into {store}: nothing to remove"]
        if self.failed:
            codes = ", ".join(f"{code}: {n:,}" for code, n in self.failed.most_common())
            lines.append(f"could not remove {self.failed.total():,} objects ({codes})")
        if self.kept:
            lines.append(
                f"kept {self.kept:,} objects this run put again: their keys were in {store} "
                "before the run"
            )
        return lines

    def count(self, outcome: Response | ServerError, maybe_stored: bool) -> None:
        if isinstance(outcome, Response):
            self.deleted += 1
            self.bytes += int(outcome.header.get("size", 0))
        elif not (maybe_stored and outcome.code == "not-found"):
            self.failed[outcome.code] += 1


async def check_delete_offered(client: AsyncClient, endpoint: Endpoint) -> None:
    """:class:`BenchFailure` unless the server's capabilities list ``delete``: asked before any
    put, so that a run that could not clean up puts nothing."""
    try:
        capabilities = (await client.capabilities()).header
    except ServerError as exc:
        raise BenchFailure(
            f"the server at {endpoint} does not answer capabilities: {exc}"
        ) from None
    if "delete" not in (capabilities.get("commands") or {}):
        raise BenchFailure(
            f"--cleanup: the server at {endpoint} does not offer delete; start it with "
            "zplex serve --allow-delete (nothing was put into its store)"
        )


def remove_objects(
    cleanup: Cleanup, ledger: PutLedger, endpoint: Endpoint, token: str | None, timeout_s: float
) -> None:
    """Delete every key of ``ledger`` from the server's store, counting into ``cleanup`` (on
    Ctrl-C, the keys left count as ``interrupted``, and KeyboardInterrupt goes on)."""
    cleanup.kept = len(ledger.kept)
    keys = list(ledger.sent)
    done = 0
    if not keys:
        return
    try:
        with Client.connect(
            endpoint.host,
            endpoint.port,
            encodings=("identity",),
            level=None,
            token=token,
            timeout=timeout_s,
        ) as client:
            while done < len(keys):
                batch = keys[done : done + DELETE_WINDOW]
                items = [
                    ("delete", {"key": key}, None, 1 + 2 * (n % DELETE_STREAMS))
                    for n, key in enumerate(batch)
                ]
                outcomes = client.pipeline(items, timeout_s)
                for key, outcome in zip(batch, outcomes, strict=True):
                    cleanup.count(outcome, maybe_stored=key not in ledger.acknowledged)
                done += len(batch)
    except (OSError, TimeoutError, ConnectionLost, ServerError) as exc:
        cleanup.failed[error_code(exc)] += len(keys) - done
    except KeyboardInterrupt:
        cleanup.failed["interrupted"] += len(keys) - done
        raise
