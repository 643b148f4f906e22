"""``zplex bench``: the orchestration of a load test.

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

Groups larger than ``max(1 MiB, corpus / (c * s))`` are cut into runs of consecutive objects
(:func:`bench.workloads.split_groups`) so that one directory holding 40% of the corpus cannot
leave the other streams idle; the same groups serve every policy.

Passes. One replay of the workload is a *pass*; every pass uses fresh connections, so every
pass starts with fresh contexts (a context that saw the corpus once would compress its replay
to almost nothing). ``-n N`` runs exactly the first N requests of the endless cycle of passes
(the last pass may be a prefix); ``-d D`` starts passes until D seconds have elapsed and never
cuts one short, so every policy serves whole passes of the same requests (``-d`` may overrun by
up to one pass). Without either, ``-d`` :data:`DEFAULT_DURATION_S`.

Load models. Closed (default): each stream keeps ``--window`` requests outstanding and latency
runs from a request's send to its last frame. Open (``--rate R``): request ``k`` of the phase
is due at ``t0 + k / R`` whatever the server's state, passes may overlap, a stream never has
more than the server's ``max_inflight_per_stream`` outstanding (later requests wait in the
client), and latency runs from the *intended* send time, so queueing in the client counts and
there is no coordinated omission.

Verification. The client decodes every response: a body whose BLAKE2b digest differs from the
header's (``digest-mismatch``), whose size is not the object's (``size-mismatch``) or whose
digest is not the stored object's (``content-mismatch``) is an error, as are error-responses
(by their code), a lost connection (``connection-lost``), a failed connect (``connect-failed``)
and a request unanswered within ``--timeout`` (``timeout``). Decoding and hashing cost client
CPU, and are reported as such.

Measurements, per phase (after the warm-up):

- bytes: ``raw`` is the bytes of the response bodies, ``wire`` every byte of the responses'
  frames (8-byte frame headers, the MessagePack response header and stream-settings frames
  included); only successful responses count. ``ratio = raw / wire``.
- ``ratio_vs_ideal``: wire bytes over one in-process zstd (or zlib) stream of the same bodies,
  same level and window, flushed per body, computed per pass (each pass starts fresh).
- CPU: front and workers from psutil (user + system, all threads) when the server runs on this
  host (the pids come from the server's ``stats``), else from the ``stats`` counters; client:
  ``getrusage`` of this process. Sampled right before the first pass and after the last.
  ``worker_efficiency`` divides the CPU per GB of in-process single-core compression of the
  same bodies with the policy's context (:func:`bench.stats.inprocess_cpu_s_per_gb`) by the
  workers' CPU per GB (``null`` for ``generate:KIND``, whose worker CPU includes making the
  data, and for ``identity``); ``front_overhead`` is front CPU per GB over the workers'. A
  phase of a few milliseconds can fall between two clock ticks (psutil reads 10 ms ticks):
  give CPU figures a few seconds (``-d``).
- peak RSS: the largest RSS seen in the ``stats`` snapshots taken every
  :data:`SAMPLE_PERIOD_S` during the phase (and at its start and end); the client's from psutil.
- memory per stream: the workers' ``context_bytes`` (the compression contexts' own accounting)
  over the number of streams open, from the same snapshots, the largest value seen; ``null``
  when no snapshot fell inside a pass. The monitor's own (identity, context-free) stream is
  left out.
- latency: an HDR histogram of every successful request.
- other load: the host's busy CPU during the phase (``psutil.cpu_times``) minus the bench's own
  processes; above :data:`OTHER_LOAD_WARNING` of the host, a warning says the CPU figures are
  noisy. On a host with fewer cores than processes (2 cores: front, workers and the client),
  every role's CPU per GB also includes the cost of sharing cores (context switches, caches).

The scaling projection comes from the ``stream`` run's per-role costs
(:func:`bench.results.project_runs`). ``--sweep-workers`` restarts the server with each worker
count that fits the host (``workers + 1 <= cores``) and measures the ``stream`` policy for real.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import ipaddress
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import psutil
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from bench import report, results, stats
from bench.client import AsyncClient, ConnectionLost, Response, ServerError, body_digest
from bench.tools import parse_address
from bench.workloads import (
    DEFAULT_GENERATE_REQUESTS,
    Workload,
    WorkloadError,
    parse_workload,
    split_groups,
    stream_index,
)

POLICIES = results.POLICIES
#: The server context each policy asks for.
POLICY_CONTEXT: dict[str, stats.Context] = {
    "frame": "frame",
    "request": "request",
    "stream": "stream",
    "connection": "stream",
}
ENCODINGS = ("zstd-8mb", "zlib", "identity")
DEFAULT_WORKLOADS = ("stdlib", "versioned")
#: Measured seconds per policy when neither ``-n`` nor ``-d`` is given: with the default
#: corpora (~11 MB each) that is about 20 passes per policy, and ``make bench`` (2 workloads x
#: 4 policies) stays within about two minutes on two cores.
DEFAULT_DURATION_S = 5.0
DEFAULT_WARMUP_S = 0.5
DEFAULT_CONNECTIONS = 2
DEFAULT_STREAMS = 4
#: Requests outstanding per stream in the closed model: enough to keep a worker busy while
#: the previous response travels.
DEFAULT_WINDOW = 4
DEFAULT_TIMEOUT_S = 60.0
#: Smallest group size :func:`split_groups` cuts to.
MIN_GROUP_BYTES = 1 << 20
#: Seconds between ``stats`` snapshots during a phase.
SAMPLE_PERIOD_S = 0.5
#: Streams the monitor connection holds open on the server (left out of memory per stream).
MONITOR_STREAMS = 1
#: Display refresh period (progress and the plain-text heartbeat).
REFRESH_S = 0.2
#: Passes in flight at once in the open model (bounds the client's memory if the server lags).
MAX_OPEN_PASSES = 8
#: Requests in flight while filling the store.
FILL_WINDOW = 32
#: Seconds to wait for a started server's ready file.
SERVER_READY_TIMEOUT_S = 60.0
#: Longest TMPDIR handed to a started server: it creates ``zplex-XXXXXXXX/workers`` there, an
#: ipc socket path that must fit ``sun_path`` (107 bytes).
MAX_SERVER_TMPDIR = 80
#: Seconds between SIGTERM and SIGKILL when stopping the server.
SERVER_STOP_DEADLINE_S = 10.0
#: After this long without exiting, the workers of a server that was sent SIGTERM get one too.
SERVER_STOP_NUDGE_S = 1.5
#: In-process reference passes (the best is kept).
INPROCESS_REPEAT = 2
#: Warn when other processes took more than this share of the host's CPU during a phase.
OTHER_LOAD_WARNING = 0.10
#: Warn when the client used more than this fraction of a core: throughput may be client-bound.
CLIENT_BOUND_UTILISATION = 0.9


class BenchError(Exception):
    """Bad arguments or environment (exit status 2): the message says what to fix."""


# --- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Every knob of a ``zplex bench`` run (see ``zplex bench --help``)."""

    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    policies: tuple[str, ...] = POLICIES
    encoding: str = "zstd-8mb"
    level: int = 3
    connections: int = DEFAULT_CONNECTIONS
    streams: int = DEFAULT_STREAMS
    requests: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    warmup_s: float = DEFAULT_WARMUP_S
    window: int = DEFAULT_WINDOW
    workers: int | None = None
    connect: tuple[str, int] | None = None
    token: str | None = None
    limit_bytes: int | None = None
    revisions: int | None = None
    files: int | None = None
    generate_size: int | None = None
    seed: int = 0
    max_error_rate: float = 0.0
    sweep_workers: tuple[int, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    json_path: Path | None = None
    report_dir: Path | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.workloads:
            raise BenchError("no workload to run")
        if not self.policies:
            raise BenchError("no policy to run")
        for policy in self.policies:
            if policy not in POLICIES:
                raise BenchError(f"unknown policy {policy!r}: expected {', '.join(POLICIES)}")
        if len(set(self.policies)) != len(self.policies):
            raise BenchError("a policy is listed twice")
        if self.encoding not in ENCODINGS:
            raise BenchError(f"unknown encoding {self.encoding!r}: expected {', '.join(ENCODINGS)}")
        if self.encoding == "zstd-8mb" and not 1 <= self.level <= 22:
            raise BenchError(f"zstd level must be in [1, 22], not {self.level}")
        if self.encoding == "zlib" and not 0 <= self.level <= 9:
            raise BenchError(f"zlib level must be in [0, 9], not {self.level}")
        if self.connections < 1:
            raise BenchError("-c needs at least one connection")
        if not 1 <= self.streams <= 128:
            raise BenchError("-s must be in [1, 128] (client streams have odd ids up to 255)")
        if self.requests is not None and self.requests < 1:
            raise BenchError("-n must be at least 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise BenchError("-d must be positive")
        if self.requests is not None and self.duration_s is not None:
            raise BenchError("-n and -d are exclusive")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise BenchError("--rate must be a positive number of requests per second")
        if self.warmup_s < 0:
            raise BenchError("--warmup must be >= 0")
        if self.window < 1:
            raise BenchError("--window must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise BenchError("--workers must be at least 1")
        if self.connect is not None and (self.workers is not None or self.sweep_workers):
            raise BenchError("--workers and --sweep-workers need the server bench starts itself")
        if any(w < 1 for w in self.sweep_workers):
            raise BenchError("--sweep-workers takes worker counts >= 1")
        if not 0 <= self.max_error_rate <= 1:
            raise BenchError("--max-error-rate is a fraction in [0, 1]")
        if not self.timeout_s > 0:
            raise BenchError("--timeout must be positive")

    @property
    def effective_duration_s(self) -> float | None:
        if self.requests is None and self.duration_s is None:
            return DEFAULT_DURATION_S
        return self.duration_s

    def describe(self) -> dict[str, Any]:
        """The configuration as stored in the JSON metadata."""
        return {
            "workloads": list(self.workloads),
            "policies": list(self.policies),
            "encoding": self.encoding,
            "level": self.level if self.encoding != "identity" else None,
            "connections": self.connections,
            "streams_per_connection": self.streams,
            "requests": self.requests,
            "duration_s": self.effective_duration_s,
            "rate": self.rate,
            "model": "open" if self.rate is not None else "closed",
            "warmup_s": self.warmup_s,
            "window": self.window,
            "workers": self.workers,
            "connect": f"{self.connect[0]}:{self.connect[1]}" if self.connect else None,
            "limit_bytes": self.limit_bytes,
            "max_error_rate": self.max_error_rate,
            "sweep_workers": list(self.sweep_workers),
            "timeout_s": self.timeout_s,
        }


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --- progress display ------------------------------------------------------------------------


class Display(Protocol):
    def info(self, message: str) -> None: ...

    def start(self, label: str, total: float | None) -> None: ...

    def update(self, completed: float, detail: str) -> None: ...

    def finish(self, summary: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Plain lines (for logs and pipes): one when a phase starts, one when it ends."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def info(self, message: str) -> None:
        print(f"zplex bench: {message}", file=self.stream, flush=True)

    def start(self, label: str, total: float | None) -> None:
        self.info(f"{label} ...")

    def update(self, completed: float, detail: str) -> None:
        pass

    def finish(self, summary: str) -> None:
        self.info(summary)

    def close(self) -> None:
        pass


class RichDisplay:
    """A transient rich progress bar per phase on a terminal; phase summaries stay."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.progress.start()

    def info(self, message: str) -> None:
        self.progress.console.print(Text(message, style="dim"))

    def start(self, label: str, total: float | None) -> None:
        self._drop()
        self.task = self.progress.add_task(label, total=total, detail="")

    def update(self, completed: float, detail: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=completed, detail=detail)

    def finish(self, summary: str) -> None:
        self._drop()
        self.progress.console.print(Text(summary, style="dim"))

    def _drop(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def close(self) -> None:
        self._drop()
        self.progress.stop()


def make_display(stream: IO[str]) -> Display:
    if stream.isatty():
        return RichDisplay(Console(file=stream))
    return PlainDisplay(stream)


# --- the server process ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class ServerProcess:
    """A ``zplex serve`` subprocess with a temporary store, always stopped by :meth:`stop`:
    SIGTERM, then (see :data:`SERVER_STOP_NUDGE_S`) SIGTERM to its workers too, then SIGKILL to
    whatever is left at :data:`SERVER_STOP_DEADLINE_S`; the temporary directory goes with it
    (the server's own temporary files too: its ``TMPDIR`` points inside)."""

    def __init__(self, workers: int, token: str) -> None:
        self.workers = workers
        self.token = token
        self.directory = Path(tempfile.mkdtemp(prefix="zplex-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self._children: list[psutil.Process] = []
        self._log: IO[bytes] | None = None
        self._extra_dirs: list[Path] = []

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> None:
        ready_file = self.directory / "ready.json"
        tmp = self._server_tmpdir()
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            str(self.workers),
            "--store",
            str(self.directory / "store"),
            "--ready-file",
            str(ready_file),
        ]
        env = dict(os.environ, ZPLEX_WRITE_TOKEN=self.token)
        if tmp is not None:
            env["TMPDIR"] = str(tmp)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if ready_file.exists():
                with contextlib.suppress(OSError, ValueError):
                    self.ready = json.loads(ready_file.read_text())
                    break
            if self.proc.poll() is not None:
                raise BenchError(
                    f"the server exited with status {self.proc.returncode} before it was "
                    f"ready: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the server was not ready within {SERVER_READY_TIMEOUT_S} s")
            time.sleep(0.02)
        self._remember_children()

    def _server_tmpdir(self) -> Path | None:
        """A ``TMPDIR`` for the server that goes with it, short enough for the ZeroMQ ipc
        socket it creates there (``sun_path`` holds 107 bytes); None if there is none."""
        inside = self.directory / "tmp"
        if len(str(inside)) <= MAX_SERVER_TMPDIR:
            inside.mkdir()
            return inside
        if os.path.isdir("/tmp"):
            self._extra_dirs.append(Path(tempfile.mkdtemp(prefix="zplex-bench-", dir="/tmp")))
            return self._extra_dirs[-1]
        return None

    def _remember_children(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if all(child.pid != known.pid for known in self._children):
                    self._children.append(child)

    @property
    def endpoint(self) -> Endpoint:
        host, port = self.ready["tcp"]
        return Endpoint(str(host), int(port))

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def pids(self) -> list[int]:
        """The server's processes still alive (zombies count as gone)."""
        procs = list(self._children)
        if self.proc is not None:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(self.proc.pid))
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
        return alive

    def stop(self) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                self._remember_children()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(SERVER_STOP_NUDGE_S)
                except subprocess.TimeoutExpired:
                    # A front that waits for its workers: end them the way the front would.
                    self._remember_children()
                    self._signal_children(signal.SIGTERM)
                    try:
                        proc.wait(SERVER_STOP_DEADLINE_S - SERVER_STOP_NUDGE_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            self._signal_children(signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                psutil.wait_procs(self._children, timeout=5)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            for directory in (self.directory, *self._extra_dirs):
                shutil.rmtree(directory, ignore_errors=True)

    def _signal_children(self, sig: signal.Signals) -> None:
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.send_signal(sig)


# --- requests and placement ------------------------------------------------------------------


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

    @property
    def raw_bytes(self) -> int:
        return sum(len(b) for b in self.bodies)

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
    kwargs: dict[str, Any] = {"seed": config.seed}
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


# --- per-phase accounting --------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the requests of one phase (or warm-up) produced."""

    latency: stats.LatencyRecorder = dataclasses.field(default_factory=stats.LatencyRecorder)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    ok: int = 0
    raw: int = 0
    wire: int = 0
    #: Per pass, the request indexes answered correctly (for the ideal of exactly those).
    answered: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def attempted(self) -> int:
        return self.ok + sum(self.errors.values())

    def error(self, code: str, count: int = 1) -> None:
        if count > 0:
            self.errors[code] += count


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        return exc.code
    if isinstance(exc, ConnectionLost):
        return "connection-lost"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connect-failed"
    return "client-error"


def check_response(response: Response, request: Request) -> str | None:
    """The error code of a wrong answer, or None if it is right."""
    if request.size is not None and len(response.body) != request.size:
        return "size-mismatch"
    verified = response.verify_digest()
    if verified is None:
        return "digest-missing"
    if not verified:
        return "digest-mismatch"
    if request.digest is not None and response.header.get("digest") != request.digest:
        return "content-mismatch"
    return None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Open model: request ``k`` of the phase is due at ``t0 + k / rate``."""

    t0: float
    rate: float

    def due(self, k: int) -> float:
        return self.t0 + k / self.rate


async def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# --- server probing --------------------------------------------------------------------------


class Monitor:
    """A side connection (identity encoding, one stream) that asks for ``stats``; it
    reconnects if the server dropped it (e.g. after an idle timeout)."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.client: AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> AsyncClient:
        if self.client is None or self.client.closed or self.client.goaway is not None:
            if self.client is not None:
                await self.client.close()
            self.client = await AsyncClient.connect(
                self.endpoint.host,
                self.endpoint.port,
                encodings=("identity",),
                level=None,
                timeout=self.timeout,
            )
        return self.client

    async def stats(self) -> dict[str, Any]:
        async with self._lock:
            for attempt in (1, 2):
                client = await self.connect()
                try:
                    response = await client.request("stats", timeout=self.timeout)
                    return response.header
                except ConnectionLost:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CpuProbe:
    """CPU seconds (user + system) of the front and the workers: psutil when the server runs
    here, else the counters of ``stats``."""

    def __init__(self, local: bool) -> None:
        self.local = local
        self._procs: dict[int, psutil.Process] = {}

    @property
    def source(self) -> str:
        return "psutil" if self.local else "stats"

    def _cpu(self, pid: int, entry: dict[str, Any]) -> float:
        if self.local:
            try:
                proc = self._procs.get(pid)
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                times = proc.cpu_times()
                return float(times.user + times.system)
            except psutil.Error:
                pass
        return float(entry.get("cpu_user", 0.0)) + float(entry.get("cpu_system", 0.0))

    def snapshot(self, header: dict[str, Any]) -> dict[str, Any]:
        """``{"front": (pid, seconds), "workers": {pid: seconds}}`` from a stats header."""
        front = header.get("front") or {}
        workers = header.get("workers") or []
        return {
            "front": (int(front.get("pid", 0)), self._cpu(int(front.get("pid", 0)), front)),
            "workers": {int(w["pid"]): self._cpu(int(w["pid"]), w) for w in workers},
        }


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[float | None, float, bool]:
    """(front seconds, workers seconds, same worker processes) between two snapshots."""
    front: float | None = None
    if before["front"][0] == after["front"][0]:
        front = after["front"][1] - before["front"][1]
    workers = sum(
        after["workers"][pid] - seconds
        for pid, seconds in before["workers"].items()
        if pid in after["workers"]
    )
    return front, workers, set(before["workers"]) == set(after["workers"])


def host_busy_s() -> float:
    """CPU seconds every core of this host spent busy (not idle, iowait or stolen)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    total = sum(getattr(times, name) for name in times._fields if not name.startswith("guest"))
    return float(total - idle)


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Samples:
    """Peaks seen in the stats snapshots of one phase."""

    front_rss: int | None = None
    worker_rss: dict[int, int] = dataclasses.field(default_factory=dict)
    client_rss: int | None = None
    memory_per_stream: float | None = None
    max_rss: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, header: dict[str, Any], monitor_streams: int) -> None:
        front = header.get("front") or {}
        if "rss" in front:
            self.front_rss = max(self.front_rss or 0, int(front["rss"]))
        streams = context = 0
        for worker in header.get("workers") or []:
            pid = int(worker.get("pid", 0))
            if "rss" in worker:
                self.worker_rss[pid] = max(self.worker_rss.get(pid, 0), int(worker["rss"]))
            streams += int(worker.get("streams", 0))
            context += int(worker.get("context_bytes", 0))
        streams -= monitor_streams
        if streams > 0 and context > 0:
            per_stream = context / streams
            self.memory_per_stream = max(self.memory_per_stream or 0.0, per_stream)
        self.max_rss = {
            "front": front.get("max_rss"),
            "workers": [w.get("max_rss") for w in header.get("workers") or []],
        }
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process().memory_info().rss
            self.client_rss = max(self.client_rss or 0, rss)


# --- phases ----------------------------------------------------------------------------------


@dataclasses.dataclass
class PhaseOutcome:
    run: results.RunResult
    passes: int
    attempted: int
    client_utilisation: float | None
    same_workers: bool
    max_rss: dict[str, Any]
    #: CPU seconds the rest of the host used during the phase (None if not measured here).
    other_cpu_s: float | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "workload": self.run.workload,
            "policy": self.run.policy,
            "passes": self.passes,
            "requests_attempted": self.attempted,
            "client_cpu_utilisation": self.client_utilisation,
            "worker_restarts_during_phase": not self.same_workers,
            "lifetime_max_rss": self.max_rss,
            "other_processes_cpu_s": self.other_cpu_s,
        }


@dataclasses.dataclass(frozen=True)
class PassPlan:
    """The requests of one pass (``indexes`` into the corpus), per (connection, stream)."""

    number: int
    first: int  # phase-wide sequence number of the pass's first request
    slots: dict[tuple[int, int], list[int]]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.slots.values())


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

    # -- set-up ------------------------------------------------------------------------

    def build_workloads(self) -> None:
        """Build every workload first: a bad name or path fails before any server starts."""
        for name in self.config.workloads:
            if name not in self.workloads:
                self.workloads[name] = build_workload(name, self.config)

    def start_server(self, workers: int) -> Endpoint:
        if self.token is None:
            self.token = secrets.token_urlsafe(24)
        server = ServerProcess(workers, self.token)
        self.servers.append(server)
        self.display.info(f"starting a server with {workers} workers")
        server.start()
        return server.endpoint

    async def attach(self, endpoint: Endpoint, spawned: bool) -> None:
        """Open the monitor connection, read the server's settings and check the limits."""
        self.endpoint = endpoint
        self.monitor = Monitor(endpoint, self.config.timeout_s)
        try:
            client = await self.monitor.connect()
        except (OSError, TimeoutError, ServerError, ConnectionLost) as exc:
            raise BenchError(f"cannot connect to {endpoint}: {_describe(exc)}") from None
        settings = client.server_settings
        self.limits = dict(settings.limits)
        try:
            header = await self.monitor.stats()
        except ServerError as exc:
            raise BenchError(f"the server at {endpoint} does not answer stats: {exc}") from None
        front = header.get("front") or {}
        front_pid = int(front.get("pid", 0))
        local = spawned or (_is_loopback(endpoint.host) and psutil.pid_exists(front_pid))
        self.probe = CpuProbe(local)
        info = {
            "mode": "spawned" if spawned else "connect",
            "address": str(endpoint),
            "server": settings.server,
            "workers": len(header.get("workers") or []) or settings.workers,
            "limits": self.limits,
            "cpu_source": self.probe.source,
            "pids": {
                "front": front_pid,
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
        self._check_limits()

    def _check_limits(self) -> None:
        c = self.config
        max_streams = int(self.limits.get("max_streams", 64))
        per_stream = int(self.limits.get("max_inflight_per_stream", 32))
        per_conn = int(self.limits.get("max_inflight", 256))
        max_level = self.limits.get("max_level")
        if c.encoding != "identity" and isinstance(max_level, int) and c.level > max_level:
            raise BenchError(f"--level {c.level} exceeds the server's max_level ({max_level})")
        if c.streams > max_streams:
            raise BenchError(f"-s {c.streams} exceeds the server's max_streams ({max_streams})")
        if c.rate is None and c.window > per_stream:
            raise BenchError(
                f"--window {c.window} exceeds the server's max_inflight_per_stream ({per_stream})"
            )
        if c.rate is None and c.window * c.streams > per_conn:
            raise BenchError(
                f"--window x -s = {c.window * c.streams} exceeds the server's max_inflight "
                f"({per_conn}) per connection"
            )

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
        self._references(corpus)
        self.corpora[name] = corpus
        groups = len({r.group for r in corpus.requests})
        self.display.info(
            f"workload {corpus.name}: {len(corpus.requests):,} objects, "
            f"{corpus.raw_bytes / 1e6:,.1f} MB, {groups:,} groups "
            f"(ready in {time.monotonic() - started:.1f} s)"
        )
        return corpus

    def _references(self, corpus: Corpus) -> None:
        c = self.config
        level = c.level
        contexts = {POLICY_CONTEXT[p] for p in c.policies}
        for context in sorted(contexts):
            if c.encoding == "identity":
                corpus.inprocess[context] = None
                continue
            corpus.inprocess[context] = stats.inprocess_cpu_s_per_gb(
                corpus.bodies, level, context=context, encoding=c.encoding, repeat=INPROCESS_REPEAT
            )
        corpus.ideal_wire_bytes(tuple(range(len(corpus.requests))), level, c.encoding)

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
            missing = await self._missing(corpus)
            if missing and self.token is None:
                raise BenchError(
                    f"the server's store lacks {len(missing):,} of the {len(items):,} objects "
                    f"of workload {corpus.name}: pass --token to put them"
                )
        if not missing:
            return
        self.display.start(f"{corpus.name}: filling the store", len(missing))
        started = time.monotonic()
        try:
            client = await self._connect(context="stream", token=self.token, identity=True)
        except (OSError, TimeoutError, ServerError, ConnectionLost) as exc:
            raise BenchError(f"cannot connect to {self.endpoint}: {_describe(exc)}") from None
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
            if exc is not None:
                failures.append(error_code(exc))
                return
            if future.result().header.get("digest") != corpus.requests[index].digest:
                failures.append("content-mismatch")

        try:
            futures = []
            for n, index in enumerate(missing):
                item = items[index]
                await window.acquire()
                if failures:
                    window.release()
                    break
                future = client.send("put", {"key": item.key}, item.data, stream=1 + 2 * (n % 4))
                future.add_done_callback(functools.partial(settled, index))
                futures.append(future)
                await client.drain()
                self.display.update(done, "")
            if futures:
                _done, pending = await asyncio.wait(futures, timeout=self.config.timeout_s)
                for future in pending:
                    future.cancel()
        finally:
            await client.close()
        if failures:
            code = collections.Counter(failures).most_common(1)[0][0]
            hint = " (wrong --token?)" if code == "forbidden" else ""
            raise BenchError(
                f"filling the store for {corpus.name} failed: {len(failures)} put(s), "
                f"e.g. {code}{hint}"
            )
        self.display.finish(
            f"{corpus.name}: stored {len(missing):,} objects in {time.monotonic() - started:.1f} s"
        )

    async def _missing(self, corpus: Corpus) -> list[int]:
        """Indexes of the objects the server's store lacks (or holds with another size)."""
        items = corpus.workload.items
        tops = {item.key.split("/", 1)[0] for item in items}
        prefix = f"{tops.pop()}/" if len(tops) == 1 else ""
        client = await self._connect(context="stream", identity=True)
        try:
            response = await client.request("list", {"prefix": prefix} if prefix else None)
        except ServerError as exc:
            raise BenchError(f"cannot list the server's store: {exc}") from None
        finally:
            await client.close()
        held = {str(k): int(s) for k, s in response.header.get("keys", [])}
        return [i for i, item in enumerate(items) if held.get(item.key) != len(item.data)]

    async def _fetch_generated(self, workload: Workload) -> Corpus:
        """Fetch each ``generate`` body once (identity) for the references and the digests."""
        n = workload.requests
        self.display.start(f"{workload.name}: fetching the reference bodies", n)
        client = await self._connect(context="stream", identity=True)
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
                        raise BenchError(f"generate failed: {_describe(exc)}") from None
                    if not response.verify_digest():
                        raise BenchError("generate: the body does not match its digest")
                    bodies.append(response.body)
                self.display.update(len(bodies), "")
        finally:
            await client.close()
        groups = workload.groups()
        requests = [
            Request("generate", workload.generate_args(i), groups[i], len(body), body_digest(body))
            for i, body in enumerate(bodies)
        ]
        self.display.finish(f"{workload.name}: fetched {n:,} reference bodies")
        return Corpus(workload.name, workload, requests, bodies)

    # -- passes ------------------------------------------------------------------------

    def _plans(self, corpus: Corpus, policy: str) -> Iterator[PassPlan]:
        """The passes of a phase: endless for ``-d``, ``-n`` requests in all otherwise."""
        c = self.config
        placement = corpus.placement(policy, c.connections, c.streams)
        length = len(corpus.requests)
        remaining = c.requests
        number = 0
        while remaining is None or remaining > 0:
            count = length if remaining is None else min(length, remaining)
            slots: dict[tuple[int, int], list[int]] = {}
            for index in range(count):
                slots.setdefault(placement[index], []).append(index)
            yield PassPlan(number, number * length, slots)
            number += 1
            if remaining is not None:
                remaining -= count

    async def _run_pass(
        self,
        corpus: Corpus,
        policy: str,
        plan: PassPlan,
        tally: Tally,
        stop_at: float | None,
        schedule: Schedule | None,
    ) -> None:
        context = POLICY_CONTEXT[policy]
        conn_ids = sorted({conn for conn, _stream in plan.slots})
        if schedule is not None:
            await sleep_until(schedule.due(plan.first))
        outcomes = await asyncio.gather(
            *(self._connect(context=context) for _ in conn_ids), return_exceptions=True
        )
        clients: dict[int, AsyncClient] = {}
        try:
            for conn, outcome in zip(conn_ids, outcomes, strict=True):
                if isinstance(outcome, AsyncClient):
                    clients[conn] = outcome
                elif isinstance(outcome, Exception):
                    lost = sum(len(v) for (cn, _s), v in plan.slots.items() if cn == conn)
                    tally.error(error_code(outcome), lost)
                else:
                    raise outcome
            await asyncio.gather(
                *(
                    self._drive_stream(
                        corpus, clients[conn], stream, indexes, plan, tally, stop_at, schedule
                    )
                    for (conn, stream), indexes in plan.slots.items()
                    if conn in clients
                )
            )
        finally:
            await asyncio.gather(*(client.close() for client in clients.values()))

    async def _drive_stream(
        self,
        corpus: Corpus,
        client: AsyncClient,
        stream: int,
        indexes: list[int],
        plan: PassPlan,
        tally: Tally,
        stop_at: float | None,
        schedule: Schedule | None,
    ) -> None:
        """Send one stream's requests in order: at most ``window`` outstanding (closed model)
        or at their due times (open model, within the server's per-stream limit)."""
        c = self.config
        if schedule is None:
            capacity = c.window
        else:
            capacity = int(self.limits.get("max_inflight_per_stream", 32))
            capacity = min(capacity, max(1, int(self.limits.get("max_inflight", 256)) // c.streams))
        window = asyncio.Semaphore(capacity)
        answered = tally.answered.setdefault(plan.number, [])
        futures: list[asyncio.Future[Response]] = []

        def settled(
            index: int, due: float | None, sent: float, future: asyncio.Future[Response]
        ) -> None:
            window.release()
            if future.cancelled():
                tally.error("timeout")
                return
            exc = future.exception()
            if exc is not None:
                tally.error(error_code(exc))
                return
            response = future.result()
            code = check_response(response, corpus.requests[index])
            if code is not None:
                tally.error(code)
                return
            latency = response.latency_s if due is None else sent - due + response.latency_s
            tally.latency.record_s(max(0.0, latency))
            tally.ok += 1
            tally.raw += len(response.body)
            tally.wire += response.wire_bytes
            answered.append(index)

        for position, index in enumerate(indexes):
            due = schedule.due(plan.first + index) if schedule is not None else None
            if due is not None:
                await sleep_until(due)
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            try:
                await asyncio.wait_for(window.acquire(), c.timeout_s)
            except TimeoutError:
                tally.error("timeout", len(indexes) - position)
                break
            request = corpus.requests[index]
            sent = time.monotonic()
            try:
                future = client.send(request.name, request.args, stream=stream)
            except (ServerError, ConnectionLost) as exc:
                window.release()
                tally.error(error_code(exc), len(indexes) - position)
                break
            future.add_done_callback(functools.partial(settled, index, due, sent))
            futures.append(future)
        if futures:
            _done, pending = await asyncio.wait(futures, timeout=c.timeout_s)
            for future in pending:
                future.cancel()

    async def _run_passes(
        self,
        corpus: Corpus,
        policy: str,
        tally: Tally,
        *,
        duration: float | None,
        stop_at: float | None,
        on_pass: Callable[[int], None],
    ) -> int:
        """Run passes until the plans end, or (``duration``) passes started after it, or
        (``stop_at``, warm-up) requests after it; returns the number of passes started."""
        c = self.config
        t0 = time.monotonic()
        schedule = Schedule(t0, c.rate) if c.rate is not None else None
        plans = self._plans(corpus, policy)
        started = 0
        if schedule is None:
            for plan in plans:
                if started and duration is not None and time.monotonic() - t0 >= duration:
                    break
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                started += 1
                on_pass(started)
                await self._run_pass(corpus, policy, plan, tally, stop_at, None)
            return started
        in_flight = asyncio.Semaphore(MAX_OPEN_PASSES)
        tasks: list[asyncio.Task[None]] = []

        async def one(plan: PassPlan) -> None:
            try:
                await self._run_pass(corpus, policy, plan, tally, stop_at, schedule)
            finally:
                in_flight.release()

        try:
            for plan in plans:
                begins = schedule.due(plan.first)
                if started and duration is not None and begins - t0 >= duration:
                    break
                if stop_at is not None and begins >= stop_at:
                    break
                await in_flight.acquire()
                started += 1
                tasks.append(asyncio.create_task(one(plan)))
                on_pass(started)
                # Do not run ahead: the next pass is created when it is nearly due.
                await sleep_until(schedule.due(plan.first + plan.size) - 0.05)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return started

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
    ) -> int:
        """:meth:`_run_passes` with the display refreshed every :data:`REFRESH_S` (and, with
        ``samples``, a ``stats`` snapshot every :data:`SAMPLE_PERIOD_S`)."""
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
            await self._run_passes(
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
        """Warm up, then measure one policy on one workload."""
        c = self.config
        assert self.monitor is not None
        label = f"{corpus.name} / {policy}{note}"
        if c.warmup_s > 0:
            self.display.start(f"{label}: warm-up", c.warmup_s)
            warm = Tally()
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
        t0 = time.monotonic()
        passes = await self._passes_with_progress(
            corpus, policy, tally, duration=duration, stop_at=None, total=total, samples=samples
        )
        elapsed = time.monotonic() - t0
        client_cpu = client_cpu_s() - client_before
        host_cpu = host_busy_s() - host_before
        header = await self.monitor.stats()
        cpu_after = self.probe.snapshot(header)
        samples.add(header, MONITOR_STREAMS)
        front_cpu, workers_cpu, same_workers = cpu_delta(cpu_before, cpu_after)
        if not same_workers:
            self.warnings.append(f"{label}: a worker restarted; its CPU is partly missing")
        run = self._run_result(
            corpus, policy, tally, elapsed, front_cpu, workers_cpu, client_cpu, samples
        )
        if corpus.workload.generated is not None:
            # The workers' CPU includes making the data: no fair comparison with compression.
            run.worker_efficiency = None
        utilisation = client_cpu / elapsed if elapsed > 0 else None
        if utilisation is not None and utilisation > CLIENT_BOUND_UTILISATION:
            self.warnings.append(
                f"{label}: the client used {utilisation:.0%} of a core; throughput may be "
                "bound by the load generator"
            )
        other = None
        if self.probe.local and front_cpu is not None and elapsed > 0:
            # What the rest of the host ran meanwhile: CPU our processes did not get.
            other = max(0.0, host_cpu - front_cpu - workers_cpu - client_cpu)
            share = other / (elapsed * (psutil.cpu_count() or 1))
            if share > OTHER_LOAD_WARNING:
                self.warnings.append(
                    f"{label}: other processes used {share:.0%} of the host's CPU during the "
                    "phase; its CPU figures are noisy (run again on a quiet host)"
                )
        outcome = PhaseOutcome(
            run, passes, tally.attempted, utilisation, same_workers, samples.max_rss, other
        )
        self.display.finish(_phase_summary(label, outcome))
        if record:
            self.phases.append(outcome)
        return outcome

    def _run_result(
        self,
        corpus: Corpus,
        policy: str,
        tally: Tally,
        elapsed: float,
        front_cpu: float | None,
        workers_cpu: float,
        client_cpu: float,
        samples: Samples,
    ) -> results.RunResult:
        c = self.config
        ideal = 0
        for indexes in tally.answered.values():
            if indexes:
                ideal += corpus.ideal_wire_bytes(tuple(sorted(indexes)), c.level, c.encoding)
        used = {
            where for where in corpus.placement(policy, c.connections, c.streams)[: tally.attempted]
        }
        each_worker = sorted(samples.worker_rss.values(), reverse=True)
        return results.RunResult.from_measurements(
            workload=corpus.name,
            policy=policy,
            encoding=c.encoding,
            level=c.level if c.encoding != "identity" else None,
            streams=len(used) or 1,
            connections=len({conn for conn, _stream in used}) or 1,
            requests=tally.ok,
            duration_s=elapsed,
            raw_bytes=tally.raw,
            wire_bytes=tally.wire,
            cpu_seconds={"front": front_cpu, "workers": workers_cpu, "client": client_cpu},
            latency=tally.latency,
            errors=dict(tally.errors),
            peak_rss={"front": samples.front_rss, "client": samples.client_rss},
            peak_rss_each_worker=each_worker or None,
            memory_per_stream=samples.memory_per_stream,
            ideal_wire_bytes=ideal if tally.ok else None,
            inprocess_cpu_s_per_gb=corpus.inprocess.get(POLICY_CONTEXT[policy]),
        )

    async def run_workloads(self) -> list[results.RunResult]:
        runs: list[results.RunResult] = []
        for name in self.config.workloads:
            corpus = await self.prepare(name)
            for policy in self.config.policies:
                runs.append((await self.run_phase(corpus, policy)).run)
        return runs

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
            self.monitor = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _phase_summary(label: str, outcome: PhaseOutcome) -> str:
    run = outcome.run
    ratio = f"{run.ratio:.2f}" if run.ratio is not None else "-"
    mbps = f"{run.raw_mb_per_s:,.1f}" if run.raw_mb_per_s is not None else "-"
    return (
        f"{label}: {outcome.passes} pass(es), {run.requests:,} requests in "
        f"{run.duration_s:.1f} s, {mbps} MB/s raw, ratio {ratio}, {run.error_count:,} errors"
    )


# --- the whole bench -------------------------------------------------------------------------


@dataclasses.dataclass
class SweepPoint:
    workers: int
    runs: list[results.RunResult]

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "runs": [run.to_json() for run in self.runs]}


@dataclasses.dataclass
class BenchOutcome:
    result: results.BenchResult
    sweep: list[SweepPoint]
    skipped_sweep: list[int]
    warnings: list[str]

    @property
    def error_rate(self) -> float:
        runs = list(self.result.runs) + [run for point in self.sweep for run in point.runs]
        errors = sum(run.error_count for run in runs)
        attempted = errors + sum(run.requests for run in runs)
        return errors / attempted if attempted else 0.0

    def to_json(self) -> dict[str, Any]:
        data = self.result.to_json()
        data["sweep"] = [point.to_json() for point in self.sweep]
        data["warnings"] = list(self.warnings)
        return data


async def _bench(config: BenchConfig, runner: Runner) -> BenchOutcome:
    wall = time.monotonic()
    spawned = config.connect is None
    workers = config.workers or default_workers()
    runner.build_workloads()
    try:
        if spawned:
            endpoint = runner.start_server(workers)
        else:
            assert config.connect is not None
            endpoint = Endpoint(*config.connect)
        await runner.attach(endpoint, spawned)
        runs = await runner.run_workloads()
        results.fill_ratio_vs_request(runs)
        projected = "stream" if "stream" in config.policies else config.policies[0]
        projection = results.project_runs(runs, projected)
        await runner.close()
        if spawned:
            runner.servers[-1].stop()
        sweep, skipped = await _sweep(config, runner)
    finally:
        await runner.close()
    metadata = results.collect_metadata(config.describe())
    metadata["server"] = runner.server_info
    metadata["workloads"] = [
        {
            "name": corpus.name,
            "objects": len(corpus.requests),
            "raw_bytes_per_pass": corpus.raw_bytes,
            "groups": len({r.group for r in corpus.requests}),
            "skipped_files": corpus.workload.skipped,
            "inprocess_cpu_s_per_gb": corpus.inprocess,
        }
        for corpus in runner.corpora.values()
    ]
    metadata["phases"] = [phase.metadata() for phase in runner.phases]
    metadata["wall_time_s"] = time.monotonic() - wall
    result = results.BenchResult(metadata, runs, projection)
    return BenchOutcome(result, sweep, skipped, runner.warnings)


async def _sweep(config: BenchConfig, runner: Runner) -> tuple[list[SweepPoint], list[int]]:
    """``--sweep-workers``: the ``stream`` policy with each worker count the host can hold."""
    if not config.sweep_workers:
        return [], []
    cores = default_workers()
    points: list[SweepPoint] = []
    skipped: list[int] = []
    for workers in config.sweep_workers:
        if workers + 1 > cores:
            skipped.append(workers)
            continue
        endpoint = runner.start_server(workers)
        await runner.attach(endpoint, spawned=True)
        point = SweepPoint(workers, [])
        for name in config.workloads:
            corpus = runner.corpora[name]
            await runner.fill(corpus)
            outcome = await runner.run_phase(
                corpus, "stream", record=False, note=f" ({workers} workers)"
            )
            point.runs.append(outcome.run)
        points.append(point)
        await runner.close()
        runner.servers[-1].stop()
    return points, skipped


def _sweep_table(outcome: BenchOutcome) -> Table:
    table = Table(
        title=Text("worker sweep (stream policy, measured)", style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in ("workload", "workers", "raw MB/s", "req/s", "front s/GB", "workers s/GB"):
        table.add_column(header, justify="left" if header == "workload" else "right")
    table.add_column("projected MB/s", justify="right")
    base = {p.workload: p for p in outcome.result.projection}
    for point in outcome.sweep:
        for run in point.runs:
            projection = base.get(run.workload)
            projected = None
            if projection is not None:
                rows = stats.scaling_projection(
                    projection.front_cpu_s_per_gb,
                    projection.workers_cpu_s_per_gb,
                    [point.workers + 1],
                )
                gbps = rows[0]["gb_per_s"]
                projected = gbps * 1000 if gbps is not None else None
            table.add_row(
                run.workload,
                str(point.workers),
                _num(run.raw_mb_per_s, ",.1f"),
                _num(run.requests_per_s, ",.0f"),
                _num(run.cpu_s_per_gb.front, ".2f"),
                _num(run.cpu_s_per_gb.workers, ".2f"),
                _num(projected, ",.1f"),
            )
    return table


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_json(outcome: BenchOutcome, path: Path) -> None:
    text = json.dumps(outcome.to_json(), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def run_bench(
    config: BenchConfig, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run the bench and print its tables; returns the exit status (0 fine, 1 errors above
    ``--max-error-rate``, 2 bad arguments or environment, 130/143 interrupted)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    display = make_display(err)
    runner = Runner(config, display)
    interrupted: list[int] = []

    async def main() -> BenchOutcome:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def on_sigterm() -> None:
            interrupted.append(143)
            task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await _bench(config, runner)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        try:
            outcome = asyncio.run(main())
        finally:
            display.close()
            for server in runner.servers:
                server.stop()
    except BenchError as exc:
        print(f"zplex bench: {exc}", file=err)
        return 2
    except asyncio.CancelledError:
        print("zplex bench: interrupted", file=err)
        return interrupted[0] if interrupted else 130
    except KeyboardInterrupt:
        print("zplex bench: interrupted", file=err)
        return 130
    # Files first: they must exist even if the table output goes to a closed pipe.
    if config.json_path is not None:
        write_json(outcome, config.json_path)
        print(f"zplex bench: wrote {config.json_path}", file=err)
    if config.report_dir is not None:
        written = report.write_report(outcome.result, config.report_dir)
        print(f"zplex bench: wrote {written[-1]} and {len(written) - 1} plots", file=err)
    for warning in outcome.warnings:
        print(f"zplex bench: warning: {warning}", file=err)
    console = Console(file=out, width=_table_width(out))
    report.render_tables(outcome.result, console)
    if outcome.sweep:
        console.print()
        console.print(_sweep_table(outcome))
    if outcome.skipped_sweep:
        console.print(
            Text(
                f"sweep: skipped {', '.join(map(str, outcome.skipped_sweep))} workers "
                f"(needs workers + 1 cores; this host has {default_workers()})",
                style="dim",
            )
        )
    rate = outcome.error_rate
    if rate > config.max_error_rate:
        print(
            f"zplex bench: error rate {rate:.2%} exceeds --max-error-rate "
            f"{config.max_error_rate:.2%}",
            file=err,
        )
        return 1
    return 0


def _table_width(stream: IO[str]) -> int | None:
    """The terminal's width, or a width that fits every column when writing to a file."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 200


def parse_sizes(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (:class:`BenchError` for anything else)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"expected comma-separated integers, not {text!r}") from None
    if not values:
        raise BenchError(f"expected comma-separated integers, not {text!r}")
    return values


_MULTIPLIERS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_bytes(text: str) -> int:
    """``"512K"``, ``"16M"``, ``"1.5G"`` (binary units, an optional ``B``/``iB``) or bytes."""
    value = text.strip().upper()
    for unit in ("IB", "B"):
        if value.endswith(unit) and len(value) > len(unit):
            value = value[: -len(unit)]
            break
    multiplier = 1
    if value[-1:] in _MULTIPLIERS:
        multiplier = _MULTIPLIERS[value[-1]]
        value = value[:-1]
    try:
        amount = float(value)
    except ValueError:
        raise BenchError(f"not a size: {text!r} (e.g. 512K, 16M)") from None
    if amount < 0 or not math.isfinite(amount):
        raise BenchError(f"not a size: {text!r}")
    return int(amount * multiplier)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of ``--connect`` (:class:`BenchError` if malformed)."""
    try:
        return parse_address(text)
    except ValueError as exc:
        raise BenchError(f"--connect: {exc}") from None


def policy_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def workload_names(names: Sequence[str]) -> tuple[str, ...]:
    """Workload names from repeated ``--workload`` values; a value without a path
    (``stdlib,versioned``) may list several, separated by commas."""
    out: list[str] = []
    for name in names:
        if name.startswith(("git:", "dir:")):
            out.append(name)
        else:
            out += [part.strip() for part in name.split(",") if part.strip()]
    return tuple(out)
