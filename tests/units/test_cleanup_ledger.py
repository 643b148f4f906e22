"""``--cleanup``'s bookkeeping (bench/cleanup.py), without processes: which keys a run may
remove (only those the store lacked, each put acknowledged or of unknown outcome), how the
answers to its deletes count, and what it says. End to end: tests/system/test_bench_cleanup.py."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest

from bench.cleanup import Cleanup, PutLedger, check_delete_offered
from bench.client import ConnectionLost, Response, ServerError, body_digest
from bench.config import BenchError
from bench.corpus import Corpus, Request
from bench.display import PlainDisplay
from bench.server_process import Endpoint
from bench.store_fill import put_objects
from bench.workloads import Item, Workload


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


class _SlowStore:
    """A connection whose puts are answered only once the test says so; it notes, when it
    is closed, which puts were still unanswered."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Response]] = []
        self.unanswered_at_close: int | None = None

    async def connect(self) -> _SlowStore:
        return self

    def send(
        self, name: str, args: dict[str, str], data: bytes, stream: int
    ) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def drain(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        self.unanswered_at_close = sum(not f.done() for f in self.futures)
        for future in self.futures:
            if not future.done():
                future.set_exception(ConnectionLost("closed by the client"))

    def answer_all(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(Response(1, 1, {"status": "ok"}, b"", 0, 0, 0.0))


def test_ctrl_c_while_filling_lets_the_puts_in_flight_be_answered_before_closing() -> None:
    """Ctrl-C (the run's task cancelled) while puts are in flight: were the connection closed
    at once, the server could still store those objects after --cleanup's deletes; the fill
    waits for their answers (a few seconds at most), so that every delete comes after."""
    items = [Item(f"dir/{n}.txt", b"x" * (n + 1), "dir") for n in range(5)]
    requests = [
        Request("get", {"key": i.key}, i.group, len(i.data), body_digest(i.data)) for i in items
    ]
    corpus = Corpus("dir:x", Workload("dir:x", items), requests, [i.data for i in items])
    store = _SlowStore()
    ledger = PutLedger()

    async def scenario() -> None:
        fill = asyncio.create_task(
            put_objects(
                corpus,
                list(range(len(items))),
                store.connect,
                PlainDisplay(io.StringIO()),
                where="h:1",
                timeout_s=30.0,
                ledger=ledger,
            )
        )
        while len(store.futures) < len(items):
            await asyncio.sleep(0)
        fill.cancel()  # Ctrl-C
        await asyncio.sleep(0.05)
        store.answer_all()  # the server answers the puts it had
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(fill, 5)

    asyncio.run(scenario())
    assert store.unanswered_at_close == 0
    assert ledger.acknowledged == {item.key for item in items}
