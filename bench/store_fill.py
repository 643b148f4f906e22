"""Set-up traffic of a bench run: putting a workload's objects into the server's store, finding
the ones it already holds, and fetching the bodies of ``generate`` requests once (all on
``identity`` connections, so the set-up costs no compression)."""

from __future__ import annotations

import asyncio
import collections
import functools
import time

from bench.cleanup import PutLedger
from bench.client import ConnectionLost, Response, ServerError, body_digest
from bench.config import BenchFailure, describe_error
from bench.corpus import Corpus, Request
from bench.display import Display
from bench.passes import Connector, error_code
from bench.workloads import Workload

#: Requests in flight while filling the store.
FILL_WINDOW = 32
#: Seconds the puts in flight get to be answered when the run is interrupted (Ctrl-C,
#: SIGTERM) while it fills a ``--connect`` server's store: the server runs a put it has
#: whole even once the connection closes, so a put still queued on a worker could land
#: after ``--cleanup``'s delete of its key; answered, each is known stored or not.
SETTLE_S = 5.0


async def put_objects(
    corpus: Corpus,
    missing: list[int],
    connect: Connector,
    display: Display,
    *,
    where: str,
    timeout_s: float,
    ledger: PutLedger | None = None,
) -> None:
    """Put the objects ``missing`` (indexes into the corpus's workload) with ``connect``'s
    connections, each one sent and answered noted in ``ledger`` (for ``--cleanup``; when
    cancelled, the puts in flight are then given :data:`SETTLE_S` to be answered before the
    connection closes); :class:`BenchFailure` if any put fails."""
    items = corpus.workload.items
    display.start(f"{corpus.name}: filling the store", len(missing))
    started = time.monotonic()
    try:
        client = await connect()
    except (OSError, TimeoutError, ServerError, ConnectionLost) as exc:
        raise BenchFailure(f"cannot connect to {where}: {describe_error(exc)}") from None
    window = asyncio.Semaphore(FILL_WINDOW)
    failures: list[str] = []
    done = 0

    def settled(index: int, future: asyncio.Future[Response]) -> None:
        nonlocal done
        window.release()
        done += 1
        if future.cancelled():
            failures.append("cancelled")
            return
        exc = future.exception()
        if ledger is not None:
            ledger.answered(items[index].key, exc)
        if exc is not None:
            failures.append(error_code(exc))
            return
        if future.result().header.get("digest") != corpus.requests[index].digest:
            failures.append("content-mismatch")

    futures: list[asyncio.Future[Response]] = []
    try:
        for n, index in enumerate(missing):
            item = items[index]
            await window.acquire()
            if failures:
                window.release()
                break
            if ledger is not None:
                ledger.sending(item.key)
            future = client.send("put", {"key": item.key}, item.data, stream=1 + 2 * (n % 4))
            future.add_done_callback(functools.partial(settled, index))
            futures.append(future)
            await client.drain()
            display.update(done, "")
        if futures:
            _done, pending = await asyncio.wait(futures, timeout=timeout_s)
            for future in pending:
                future.cancel()
    except asyncio.CancelledError:
        unanswered = [future for future in futures if not future.done()]
        if ledger is not None and unanswered:
            await asyncio.wait(unanswered, timeout=min(SETTLE_S, timeout_s))
        raise
    finally:
        await client.close()
    if failures:
        code = collections.Counter(failures).most_common(1)[0][0]
        hint = " (wrong --token?)" if code == "forbidden" else ""
        raise BenchFailure(
            f"filling the store for {corpus.name} failed: {len(failures)} put(s), e.g. {code}{hint}"
        )
    display.finish(
        f"{corpus.name}: stored {len(missing):,} objects in {time.monotonic() - started:.1f} s"
    )


async def missing_objects(corpus: Corpus, connect: Connector) -> tuple[list[int], list[int]]:
    """Indexes of the objects the server's store lacks or holds with another size, and of
    those among them that it holds (with another size)."""
    items = corpus.workload.items
    tops = {item.key.split("/", 1)[0] for item in items}
    prefix = f"{tops.pop()}/" if len(tops) == 1 else ""
    client = await connect()
    try:
        response = await client.request("list", {"prefix": prefix} if prefix else None)
    except ServerError as exc:
        raise BenchFailure(f"cannot list the server's store: {exc}") from None
    finally:
        await client.close()
    held = {str(k): int(s) for k, s in response.header.get("keys", [])}
    missing = [i for i, item in enumerate(items) if held.get(item.key) != len(item.data)]
    return missing, [i for i in missing if items[i].key in held]


async def fetch_generated(workload: Workload, connect: Connector, display: Display) -> Corpus:
    """Fetch each ``generate`` body once (identity) for the references and the digests."""
    n = workload.requests
    display.start(f"{workload.name}: fetching the reference bodies", n)
    client = await connect()
    bodies: list[bytes] = []
    try:
        for start in range(0, n, FILL_WINDOW):
            futures = [
                client.send("generate", workload.generate_args(i), stream=1)
                for i in range(start, min(n, start + FILL_WINDOW))
            ]
            for future in futures:
                try:
                    response = await client.wait(future)
                except (ServerError, ConnectionLost, TimeoutError) as exc:
                    _forget(futures)
                    raise BenchFailure(_generate_failed(workload, exc)) from None
                if not response.verify_digest():
                    _forget(futures)
                    raise BenchFailure("generate: the body does not match its digest")
                bodies.append(response.body)
            display.update(len(bodies), "")
    finally:
        await client.close()
    groups = workload.groups()
    requests = [
        Request("generate", workload.generate_args(i), groups[i], len(body), body_digest(body))
        for i, body in enumerate(bodies)
    ]
    display.finish(f"{workload.name}: fetched {n:,} reference bodies")
    return Corpus(workload.name, workload, requests, bodies)


def _generate_failed(workload: Workload, exc: BaseException) -> str:
    """Why fetching a ``generate`` body failed; a size the server refuses names the flag."""
    reason = f"generate failed: {describe_error(exc)}"
    if isinstance(exc, ServerError) and exc.code == "bad-request" and workload.generated:
        reason += (
            f"; --generate-size is {workload.generated[1]:,} bytes (the server's largest "
            "generate is its --max-generate-bytes, 256 MiB by default)"
        )
    return reason


def _forget(futures: list[asyncio.Future[Response]]) -> None:
    """Answers no longer wanted: the pending cancelled, the failed ones' errors taken (never
    logged as "exception was never retrieved")."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
