"""The runner of ``zplex bench``: the set-up and the measured phases of a load test.

For each workload the runner fills the server's store (``put``, once), computes the in-process
references, then runs every context policy as its own phase: a warm-up on throw-away
connections, then the measured run on fresh ones, sampling CPU and memory around it. The
figures go through :mod:`bench.results` (derivations), :mod:`bench.stats` (arithmetic) and
:mod:`bench.report` (tables, plots).

Context policies (every policy replays the same requests, in the same order within each
affinity group):

``stream``
    The design under test: ``-c`` connections of ``-s`` streams each, context ``stream``. Each
    request goes to the stream its affinity group hashes to (:func:`bench.workloads.stream_index`
    over the ``c * s`` streams), so related objects (a directory's files, a file's revisions)
    share one long-lived compression context.
``connection``
    Context ``stream``, but one stream per connection: groups hash onto the ``-c`` connections.
    A connection's whole traffic shares one context (one worker per connection).
``request``
    Context ``request`` (a fresh compressed unit per response, the HTTP/2 and gRPC model), with
    the same stream placement as ``stream``.
``frame``
    Context ``frame`` (every frame an independent unit), the same placement as ``stream``.

The requests and their placement are :mod:`bench.corpus`; the passes, load models and
verification :mod:`bench.passes`; CPU and memory :mod:`bench.cpu`; the whole run with its
server, sweep and output :mod:`bench.main`.

Measurements, per phase (after the warm-up):

- bytes: ``raw`` is the bytes of the response bodies, ``wire`` every byte of the responses'
  frames (8-byte frame headers, the MessagePack response header and stream-settings frames
  included); only successful responses count. ``ratio = raw / wire``.
- ``ratio_vs_ideal``: wire bytes over one in-process zstd (or zlib) stream of the same bodies,
  same level and window, flushed per body, computed per pass (each pass starts fresh).
- CPU: front and workers from psutil (user + system, all threads) when the server runs on this
  host (the pids come from the server's ``stats``), else from the ``stats`` counters; client:
  ``getrusage`` of this process (:mod:`bench.cpu`). ``worker_efficiency`` divides the CPU per
  GB of in-process single-core compression of the same bodies with the policy's context
  (:func:`bench.stats.inprocess_cpu_s_per_gb`) by the workers' CPU per GB (``null`` for
  ``identity``). For ``generate:KIND`` the workers' CPU of making the data is measured apart
  (while the set-up fetches each body once, uncompressed) and subtracted, so the workers' CPU
  is compression's (``generation_cpu_s_per_gb`` records what was subtracted). A phase too
  short for CPU figures reports none (null), with a warning (:mod:`bench.phase_checks`).
  ``front_overhead`` is front CPU per GB over the workers'.
- peak RSS, memory per stream and other load: see :mod:`bench.cpu`.
- latency: an HDR histogram of every successful request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from typing import Any

import psutil

from bench import chaos, connect_failure, phase_checks, results, stats
from bench.chaos_driver import make_driver
from bench.cleanup import PutLedger, check_delete_offered
from bench.client import AsyncClient, ConnectionLost, ServerError
from bench.client_processes import ClientProcesses
from bench.config import POLICY_CONTEXT, BenchConfig, BenchError, BenchFailure
from bench.corpus import Corpus, build_workload, corpus_from
from bench.cpu import (
    MONITOR_STREAMS,
    SAMPLE_PERIOD_S,
    CpuProbe,
    Monitor,
    Samples,
    client_cpu_s,
    connections_delta,
    cpu_delta,
    host_busy_s,
    is_loopback,
    other_load,
    small_tables_delta,
)
from bench.display import Display
from bench.passes import Tally
from bench.phase_outcome import PhaseOutcome, run_result
from bench.repeats import median_index, spread_of
from bench.server_limits import check_limits
from bench.server_process import Endpoint, ServerProcess
from bench.store_fill import fetch_generated, missing_objects, put_objects
from bench.workloads import Workload

#: Display refresh period (progress and the plain-text heartbeat).
REFRESH_S = 0.2
#: In-process reference passes (the best is kept).
INPROCESS_REPEAT = 2


class Runner:
    """Runs the whole bench on one event loop; the caller owns the server processes list
    (``servers``) and stops them whatever happens."""

    def __init__(self, config: BenchConfig, display: Display) -> None:
        self.config = config
        self.display = display
        self.servers: list[ServerProcess] = []
        self.token = config.token
        self.endpoint: Endpoint | None = None
        self.monitor: Monitor | None = None
        self.probe = CpuProbe(local=True)
        self.server_info: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.workloads: dict[str, Workload] = {}
        self.corpora: dict[str, Corpus] = {}
        self.phases: list[PhaseOutcome] = []
        self.warnings: list[str] = []
        #: Objects put into a --connect server's store, per workload (they stay there,
        #: unless --cleanup).
        self.put_objects: dict[str, int] = {}
        #: The keys put into a --connect server's store, for --cleanup.
        self.ledger = PutLedger()

    # -- set-up ------------------------------------------------------------------------

    def build_workloads(self) -> None:
        """Build every workload first: a bad name or path fails before any server starts."""
        for name in self.config.workloads:
            if name not in self.workloads:
                self.workloads[name] = build_workload(name, self.config)

    def start_server(self, workers: int, fronts: int | None = None) -> Endpoint:
        if self.token is None:
            self.token = secrets.token_urlsafe(24)
        server = ServerProcess(workers, self.token, fronts, self.config.small_tables_from)
        self.servers.append(server)
        with_fronts = f" and {fronts} fronts" if fronts is not None else ""
        self.display.info(f"starting a server with {workers} workers{with_fronts}")
        server.start()
        return server.endpoint

    async def attach(self, endpoint: Endpoint, spawned: bool) -> None:
        """Open the monitor connection, read the server's settings and check the limits."""
        self.endpoint = endpoint
        handshake = min(self.config.timeout_s, connect_failure.HANDSHAKE_TIMEOUT_S)
        self.monitor = Monitor(endpoint, self.config.timeout_s, handshake)
        try:
            client = await self.monitor.connect()
        except connect_failure.CONNECT_ERRORS as exc:
            reason = connect_failure.describe_connect_failure(str(endpoint), exc, handshake)
            raise BenchFailure(reason) from None
        settings = client.server_settings
        self.limits = dict(settings.limits)
        if self.config.cleanup:
            await check_delete_offered(client, endpoint)
        try:
            header = await self.monitor.stats()
        except ServerError as exc:
            raise BenchFailure(f"the server at {endpoint} does not answer stats: {exc}") from None
        front = header.get("front") or {}
        front_pid = int(front.get("pid", 0))
        local = spawned or (is_loopback(endpoint.host) and psutil.pid_exists(front_pid))
        self.probe = CpuProbe(local)
        info = {
            "mode": "spawned" if spawned else "connect",
            "address": str(endpoint),
            "server": settings.server,
            "workers": len(header.get("workers") or []) or settings.workers,
            "limits": self.limits,
            "cpu_source": self.probe.source,
            "fronts": len(header.get("fronts") or []) or 1,
            "pids": {
                "front": front_pid,
                "fronts": [int(f.get("pid", 0)) for f in header.get("fronts") or []],
                "workers": [int(w.get("pid", 0)) for w in header.get("workers") or []],
            },
        }
        if not self.server_info:  # the main server's (a sweep's servers come later)
            self.server_info = info
        if self.config.encoding not in settings.encodings:
            raise BenchError(
                f"the server does not offer encoding {self.config.encoding!r} "
                f"(it offers {', '.join(settings.encodings)})"
            )
        check_limits(self.config, self.limits)

    async def prepare(self, name: str) -> Corpus:
        """Build the workload, make sure the store holds it, compute the references."""
        corpus = self.corpora.get(name)
        if corpus is not None:
            return corpus
        started = time.monotonic()
        workload = self.workloads.get(name) or build_workload(name, self.config)
        if workload.generated is not None:
            corpus = await self._fetch_generated(workload)
        else:
            corpus = corpus_from(workload, self.config)
            await self.fill(corpus)
        corpus.compute_references(self.config, INPROCESS_REPEAT)
        self.corpora[name] = corpus
        groups = len({r.group for r in corpus.requests})
        self.display.info(
            f"workload {corpus.name}: {len(corpus.requests):,} objects, "
            f"{corpus.raw_bytes / 1e6:,.1f} MB, {groups:,} groups "
            f"(ready in {time.monotonic() - started:.1f} s)"
        )
        if workload.generated is None:
            self.display.info(f"workload {corpus.name}: {workload.selection.describe()}")
        return corpus

    async def _fetch_generated(self, workload: Workload) -> Corpus:
        """Fetch the generated bodies once (identity), measuring the workers' CPU meanwhile:
        what making (and hashing, framing) the data costs, subtracted from the workers' CPU
        of every phase of this workload so that it counts compression alone."""
        assert self.monitor is not None
        before = self.probe.snapshot(await self.monitor.stats())
        corpus = await fetch_generated(workload, self._setup_connector(), self.display)
        after = self.probe.snapshot(await self.monitor.stats())
        _front, workers_cpu, same = cpu_delta(before, after)
        if same and corpus.raw_bytes:
            corpus.generation_cpu_s_per_gb = workers_cpu / corpus.raw_bytes * 1e9
        return corpus

    async def _connect(
        self, *, context: str, token: str | None = None, identity: bool = False
    ) -> AsyncClient:
        """A connection with the bench's encoding (or ``identity``, for set-up traffic)."""
        assert self.endpoint is not None
        c = self.config
        plain = identity or c.encoding == "identity"
        return await AsyncClient.connect(
            self.endpoint.host,
            self.endpoint.port,
            encodings=("identity",) if plain else (c.encoding,),
            level=None if plain else c.level,
            context=context,
            token=token,
            timeout=c.timeout_s,
        )

    async def fill(self, corpus: Corpus) -> None:
        """Put the corpus's objects the store lacks (all of them in a fresh store)."""
        items = corpus.workload.items
        missing = list(range(len(items)))
        spawned = bool(self.servers)
        if not spawned:
            missing, replaced = await missing_objects(corpus, self._setup_connector())
            self.ledger.keep(items[i].key for i in replaced)
            if missing and self.token is None:
                raise BenchError(
                    f"the server's store lacks {len(missing):,} of the {len(items):,} objects "
                    f"of workload {corpus.name}: pass --token to put them"
                )
        if not missing:
            return
        await put_objects(
            corpus,
            missing,
            self._setup_connector(token=self.token),
            self.display,
            where=str(self.endpoint),
            timeout_s=self.config.timeout_s,
            ledger=None if spawned else self.ledger,
        )
        if not spawned:
            self.put_objects[corpus.name] = len(missing)
            prefix = items[0].key.split("/", 1)[0]
            if not self.config.cleanup:  # (else the end of the run says what it removed)
                self.warnings.append(
                    f"put {len(missing):,} objects of workload {corpus.name} under {prefix}/ "
                    f"into the store of {self.endpoint}; they stay there for the next run "
                    "(--cleanup removes them, with a server started with --allow-delete)"
                )

    def _setup_connector(self, token: str | None = None) -> functools.partial[Any]:
        """Connections for set-up traffic (``identity``, context ``stream``)."""
        return functools.partial(self._connect, context="stream", token=token, identity=True)

    # -- phases ------------------------------------------------------------------------

    async def _passes_with_progress(
        self,
        corpus: Corpus,
        policy: str,
        tally: Tally,
        *,
        duration: float | None,
        stop_at: float | None,
        total: float | None,
        samples: Samples | None = None,
        clients: ClientProcesses | None = None,
    ) -> int:
        """:meth:`PassDriver.run_passes` with the display refreshed every :data:`REFRESH_S`
        (and, with ``samples``, a ``stats`` snapshot every :data:`SAMPLE_PERIOD_S`); with
        ``clients``, the measured passes of :class:`ClientProcesses` instead."""
        c = self.config
        t0 = time.monotonic()
        passes = 0

        def on_pass(n: int) -> None:
            nonlocal passes
            passes = n

        async def refresh() -> None:
            assert self.monitor is not None
            next_stats = t0 + SAMPLE_PERIOD_S
            while True:
                await asyncio.sleep(REFRESH_S)
                elapsed = time.monotonic() - t0
                done = float(tally.attempted) if c.requests is not None else elapsed
                mbps = tally.raw / elapsed / 1e6 if elapsed > 0 else 0.0
                errors = sum(tally.errors.values())
                self.display.update(
                    min(done, total) if total else done,
                    f"pass {passes}  {tally.ok:,} ok  {errors:,} err  {mbps:,.1f} MB/s",
                )
                if samples is not None and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + SAMPLE_PERIOD_S
                    with contextlib.suppress(ServerError, ConnectionLost, OSError, TimeoutError):
                        samples.add(await self.monitor.stats(), MONITOR_STREAMS)

        refresher = asyncio.create_task(refresh())
        try:
            if clients is not None:
                await clients.run(tally, on_pass)
            else:
                driver = make_driver(c, self.limits, self._connect)
                await driver.run_passes(
                    corpus, policy, tally, duration=duration, stop_at=stop_at, on_pass=on_pass
                )
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        return passes

    async def run_phase(
        self, corpus: Corpus, policy: str, *, record: bool = True, note: str = ""
    ) -> PhaseOutcome:
        """Warm up, then measure one policy on one workload (in ``--clients`` processes when
        there are several)."""
        count = self.config.client_processes
        if count == 1:
            return await self._run_phase(corpus, policy, record, note, None)
        assert self.endpoint is not None
        clients = ClientProcesses(self.config, self.limits, self.endpoint, count)
        try:
            return await self._run_phase(corpus, policy, record, note, clients)
        finally:
            await clients.close()

    async def _warm_up(
        self, corpus: Corpus, policy: str, label: str, clients: ClientProcesses | None
    ) -> None:
        c = self.config
        warm = Tally()
        if clients is not None:
            self.display.start(f"{label}: {clients.count} client processes warm up", None)
            warm.errors = await clients.start(corpus, policy)
        elif c.warmup_s > 0:
            self.display.start(f"{label}: warm-up", c.warmup_s)
            await self._passes_with_progress(
                corpus,
                policy,
                warm,
                duration=None,
                stop_at=time.monotonic() + c.warmup_s,
                total=None if c.requests is not None else c.warmup_s,
            )
        if warm.errors:
            self.warnings.append(
                f"{label}: warm-up errors {dict(warm.errors)} (not counted in the results)"
            )

    async def _run_phase(
        self,
        corpus: Corpus,
        policy: str,
        record: bool,
        note: str,
        clients: ClientProcesses | None,
    ) -> PhaseOutcome:
        c = self.config
        assert self.monitor is not None
        label = f"{corpus.name} / {policy}{note}"
        await self._warm_up(corpus, policy, label, clients)
        duration = c.effective_duration_s
        total = float(c.requests) if c.requests is not None else duration
        self.display.start(label, total)
        tally = Tally()
        samples = Samples()
        header = await self.monitor.stats()
        samples.add(header, MONITOR_STREAMS)
        cpu_before = self.probe.snapshot(header)
        client_before = client_cpu_s()
        host_before = host_busy_s()
        killer = self._killer()
        t0 = time.monotonic()
        try:
            passes = await self._passes_with_progress(
                corpus,
                policy,
                tally,
                duration=duration,
                stop_at=None,
                total=total,
                samples=samples,
                clients=clients,
            )
        finally:
            kills = await killer.stop() if killer is not None else 0
        elapsed = time.monotonic() - t0
        client_cpu = client_cpu_s() - client_before
        if clients is not None:
            client_cpu += clients.cpu_s
            samples.client_rss = max(samples.client_rss or 0, clients.max_rss)
        host_cpu = host_busy_s() - host_before
        header = await self.monitor.stats()
        cpu_after = self.probe.snapshot(header)
        samples.add(header, MONITOR_STREAMS)
        front_cpu, workers_cpu, same_workers = cpu_delta(cpu_before, cpu_after)
        if killer is not None:  # the killed processes' CPU went with them
            front_cpu = None
            self.warnings.append(
                f"{label}: --chaos killed {kills} processes: no server CPU figures"
            )
        elif not same_workers:
            self.warnings.append(f"{label}: a worker restarted; its CPU is partly missing")
        other = share = None
        if self.probe.local and front_cpu is not None and elapsed > 0:
            other, share = other_load(host_cpu, front_cpu, workers_cpu, client_cpu, elapsed)
        cpu: dict[str, float | None] = {
            "front": front_cpu,
            "workers": workers_cpu if killer is None else None,
            "client": client_cpu,
        }
        short = phase_checks.too_short_for_cpu(label, elapsed, cpu)
        generation = corpus.generation_cpu_s_per_gb
        if generation is not None and cpu["workers"] is not None:
            # Count compression alone (see _fetch_generated).
            cpu["workers"] = max(0.0, cpu["workers"] - generation * tally.raw / 1e9)
        run = run_result(self.config, corpus, policy, tally, elapsed, cpu, samples)
        run.generation_cpu_s_per_gb = generation
        if killer is not None:
            run.chaos = chaos.chaos_figures(kills, tally.chaos)
        if corpus.workload.generated is not None and generation is None:
            # The workers' CPU still includes making the data: no fair comparison.
            run.worker_efficiency = run.server_efficiency = None
        processes = clients.count if clients is not None else 1
        utilisation = client_cpu / elapsed / processes if elapsed > 0 else None
        warnings = [
            short,
            # A phase too short for CPU figures has none to be noisy.
            phase_checks.busy_host(label, share) if share is not None and not short else None,
            phase_checks.client_bound(label, utilisation),
            phase_checks.rate_not_reached(label, run, c.rate),
            self._few_streams(label, corpus, policy),
            phase_checks.unlike_tables(
                label,
                small_tables_delta(cpu_before, cpu_after),
                stats.reference_small_tables(
                    c.small_tables_from, POLICY_CONTEXT[policy], c.encoding
                ),
            ),
        ]
        self.warnings += [warning for warning in warnings if warning]
        run.target_rate = c.rate
        outcome = PhaseOutcome(
            run,
            passes,
            tally.attempted,
            utilisation,
            same_workers,
            samples.max_rss,
            other,
            connections_delta(cpu_before, cpu_after),
            processes,
        )
        self.display.finish(outcome.summary(label))
        if record:
            self.phases.append(outcome)
        return outcome

    def _few_streams(self, label: str, corpus: Corpus, policy: str) -> str | None:
        """The streams the whole workload's placement uses, against those the policy offers
        (under ``stream`` and ``connection``, where a stream's context is the point)."""
        c = self.config
        if policy not in ("stream", "connection"):
            return None
        placement = corpus.placement(policy, c.connections, c.streams)
        offered = c.connections if policy == "connection" else c.connections * c.streams
        groups = len({request.group for request in corpus.requests})
        return phase_checks.few_streams(label, len(set(placement)), offered, groups)

    def _killer(self) -> chaos.Killer | None:
        """--chaos: the killer of the measured phase, started (None without --chaos)."""
        c = self.config
        if c.chaos_s is None or not self.servers:
            return None
        killer = chaos.Killer(self.servers[-1], c.chaos_s, c.chaos_fronts, c.seed)
        killer.start()
        return killer

    async def run_workloads(self) -> list[results.RunResult]:
        """Every policy on every workload (``--repeat N``: N measured runs of each, the
        median one reported with the spread). Each finished phase is in ``phases`` at once,
        so an interrupted run still has them."""
        runs: list[results.RunResult] = []
        repeat = self.config.repeat
        for name in self.config.workloads:
            corpus = await self.prepare(name)
            for policy in self.config.policies:
                outcomes = []
                for n in range(repeat):
                    note = f" (run {n + 1} of {repeat})" if repeat > 1 else ""
                    outcomes.append(await self.run_phase(corpus, policy, record=False, note=note))
                outcome = outcomes[median_index([o.run for o in outcomes])]
                outcome.run.repeats = spread_of([o.run for o in outcomes]) if repeat > 1 else None
                self.phases.append(outcome)
                runs.append(outcome.run)
        return runs

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
            self.monitor = None
