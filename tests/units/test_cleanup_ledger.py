"""``--cleanup``'s bookkeeping (bench/cleanup.py), without processes: which keys a run may
remove (only those the store lacked, each put acknowledged or of unknown outcome), how the
answers to its deletes count, and what it says. End to end: tests/system/test_bench_cleanup.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from bench.cleanup import Cleanup, PutLedger, check_delete_offered
from bench.client import ConnectionLost, Response, ServerError
from bench.config import BenchError
from bench.server_process import Endpoint


def deleted(size: int) -> Response:
    return Response(1, 1, {"status": "ok", "size": size}, b"", 0, 0, 0.0)


def test_the_ledger_holds_the_keys_a_put_may_have_stored_and_never_the_stores_own() -> None:
    ledger = PutLedger()
    ledger.keep(["held/before"])
    for key in ("ok", "refused", "lost-worker", "no-answer", "cancelled", "held/before"):
        ledger.sending(key)
    ledger.answered("ok", None)
    ledger.answered("refused", ServerError("bad-request", "key names a directory"))
    ledger.answered("lost-worker", ServerError("worker-lost", "the worker died"))
    ledger.answered("no-answer", ConnectionLost("closed"))
    ledger.answered("held/before", None)
    assert list(ledger.sent) == ["ok", "lost-worker", "no-answer", "cancelled"]
    assert ledger.acknowledged == {"ok"}


def test_answers_to_the_deletes_are_counted() -> None:
    cleanup = Cleanup()
    cleanup.count(deleted(10), maybe_stored=False)
    cleanup.count(deleted(5), maybe_stored=True)
    cleanup.count(ServerError("not-found", "no object"), maybe_stored=True)  # never stored
    cleanup.count(ServerError("not-found", "no object"), maybe_stored=False)  # gone already
    cleanup.count(ServerError("forbidden", "write permission"), maybe_stored=True)
    assert cleanup.to_json() == {
        "deleted": 2,
        "bytes": 15,
        "failed": {"not-found": 1, "forbidden": 1},
        "kept": 0,
    }


def test_what_it_says() -> None:
    assert Cleanup(deleted=312, bytes=15_900_000).describe("h:1") == [
        "removed 312 objects (15.9 MB) this run put into the store of h:1"
    ]
    assert Cleanup().describe("h:1") == [
        "this run put no object into the store of h:1: nothing to remove"
    ]
    failed = Cleanup(deleted=1, bytes=1, kept=2)
    failed.failed.update({"connection-lost": 3})
    assert failed.describe("h:1")[1:] == [
        "could not remove 3 objects (connection-lost: 3)",
        "kept 2 objects this run put again: their keys were in the store of h:1 before the run",
    ]


@pytest.mark.parametrize(
    ("commands", "offered"), [({"put": {}}, False), ({"put": {}, "delete": {}}, True)]
)
def test_delete_must_be_offered(commands: dict[str, object], offered: bool) -> None:
    async def capabilities() -> SimpleNamespace:
        return SimpleNamespace(header={"status": "ok", "commands": commands})

    client = SimpleNamespace(capabilities=capabilities)
    check = check_delete_offered(client, Endpoint("h", 1))  # type: ignore[arg-type]
    if offered:
        asyncio.run(check)
        return
    with pytest.raises(BenchError, match="start it with zplex serve --allow-delete"):
        asyncio.run(check)


def test_a_key_this_run_put_stays_in_the_ledger_when_a_later_workload_puts_it_again() -> None:
    """Two workloads with one key (``--dir a --dir b``, both ``dir/x``): the first put it
    into a store that lacked it; the second finds it there with its own size, puts its bytes
    over it and is refused. The key is still this run's, to remove, and not one kept."""
    ledger = PutLedger()
    ledger.sending("dir/x")
    ledger.answered("dir/x", None)
    ledger.keep(["dir/x"])  # the second workload's listing: held, with another size
    ledger.sending("dir/x")
    ledger.answered("dir/x", ServerError("overloaded", "too many requests in flight"))
    assert list(ledger.sent) == ["dir/x"]
    assert ledger.kept == set()
