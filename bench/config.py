"""The configuration of a ``zplex bench`` run: the :class:`BenchConfig` dataclass, its
defaults and checks, and the parsing of the command line's values into it
(:func:`config_from_args`; the flags themselves are declared in :mod:`bench.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import results, stats
from bench.cli_client import parse_address
from bench.thresholds import ThresholdError, parse_threshold
from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS

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
#: Usable cores per client process of the default ``--clients`` (see :func:`default_clients`).
CORES_PER_CLIENT = 4


class BenchError(Exception):
    """Bad arguments or unusable input, found before the run (exit status 2): the message
    says what to fix."""

    status = 2


class BenchFailure(BenchError):
    """The run failed (exit status 1): the server could not be reached or started, or its
    set-up traffic failed."""

    status = 1


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
    fronts: int | None = None
    #: ``--small-tables-from`` of the server bench starts (None: the server's default).
    small_tables_from: int | None = None
    clients: int | None = None
    connect: tuple[str, int] | None = None
    token: str | None = None
    #: --cleanup: delete the objects the run put into the --connect server's store.
    cleanup: bool = False
    limit_bytes: int | None = None
    revisions: int | None = None
    files: int | None = None
    generate_size: int | None = None
    seed: int = 0
    max_error_rate: float = 0.0
    sweep_workers: tuple[int, ...] = ()
    sweep_fronts: tuple[int, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    json_path: Path | None = None
    report_dir: Path | None = None
    #: dir:PATH keeps hidden, version-control and cache folders.
    include_hidden: bool = False
    #: Ask for the digest in response headers (off: ``"digest": false``, bodies checked
    #: against the digests the bench knows).
    digest: bool = True
    #: ``--threshold`` expressions, checked once the run is over.
    thresholds: tuple[str, ...] = ()
    #: Measured runs of each phase (median and spread over them).
    repeat: int = 1
    #: --chaos: kill a random worker of the server every this many seconds (bench.chaos).
    chaos_s: float | None = None
    #: --chaos-fronts: fronts are killed too (needs --fronts N > 1).
    chaos_fronts: bool = False

    @property
    def json_to_stdout(self) -> bool:
        return self.json_path is not None and str(self.json_path) == "-"

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
        if self.fronts is not None and self.fronts < 1:
            raise BenchError("--fronts must be at least 1")
        if self.clients is not None and self.clients < 1:
            raise BenchError("--clients must be at least 1")
        if self.connect is not None and (
            self.workers is not None
            or self.fronts is not None
            or self.sweep_workers
            or self.sweep_fronts
        ):
            raise BenchError(
                "--workers and --sweep-workers (and --fronts, --sweep-fronts) need the server "
                "bench starts itself"
            )
        if self.small_tables_from is not None:
            if self.small_tables_from < 0:
                raise BenchError(
                    "--small-tables-from must be >= 0 (0: small match tables for every stream "
                    f"and request zstd context), got {self.small_tables_from}"
                )
            if self.connect is not None:
                raise BenchError(
                    "--small-tables-from sets an option of the server bench starts itself; a "
                    "--connect server has its own (zplex serve --small-tables-from)"
                )
        if self.cleanup and self.connect is None:
            raise BenchError(
                "--cleanup goes with --connect HOST:PORT: the server bench starts itself has "
                "a temporary store, removed with it"
            )
        if any(w < 1 for w in self.sweep_workers):
            raise BenchError("--sweep-workers takes worker counts >= 1")
        if any(f < 1 for f in self.sweep_fronts):
            raise BenchError("--sweep-fronts takes front counts >= 1")
        if not 0 <= self.max_error_rate <= 1:
            raise BenchError("--max-error-rate is a fraction in [0, 1]")
        if not self.timeout_s > 0:
            raise BenchError("--timeout must be positive")
        if self.repeat < 1:
            raise BenchError("--repeat must be at least 1")
        if self.generate_size is not None and self.generate_size < 1:
            raise BenchError(f"--generate-size must be at least 1 byte, not {self.generate_size}")
        self._validate_chaos()
        self._validate_thresholds()

    def _validate_thresholds(self) -> None:
        """Every --threshold before the run: its form, its figure, its policy in this run."""
        for expression in self.thresholds:
            try:
                threshold = parse_threshold(expression)
            except ThresholdError as exc:
                raise BenchError(str(exc)) from None
            if threshold.policy not in self.policies:
                raise BenchError(
                    f"--threshold {expression!r}: policy {threshold.policy} is not in this run "
                    f"(--policies {','.join(self.policies)})"
                )

    def _validate_chaos(self) -> None:
        if self.chaos_s is not None:
            if not (self.chaos_s > 0 and math.isfinite(self.chaos_s)):
                raise BenchError("--chaos takes a positive number of seconds between kills")
            if self.connect is not None:
                raise BenchError(
                    "--chaos kills the server's processes: it needs the server bench starts "
                    "itself, not --connect"
                )
        if self.chaos_fronts:
            if self.chaos_s is None:
                raise BenchError("--chaos-fronts goes with --chaos SECONDS")
            if self.fronts is None or self.fronts < 2:
                raise BenchError(
                    "--chaos-fronts needs --fronts N with N > 1 (killing the only front "
                    "would cut every connection)"
                )

    @property
    def client_processes(self) -> int:
        """Client processes of a phase: ``--clients`` (default :func:`default_clients`), at
        most one per connection."""
        return max(1, min(self.clients or default_clients(), self.connections))

    @property
    def server_small_tables_from(self) -> int | None:
        """``--small-tables-from`` of the server measured (None: a --connect server's)."""
        if self.connect is not None:
            return None
        if self.small_tables_from is None:
            return SMALL_TABLES_FROM_CONTEXTS
        return self.small_tables_from

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
            "fronts": self.fronts,
            "small_tables_from": self.server_small_tables_from,
            "clients": self.client_processes,
            "connect": f"{self.connect[0]}:{self.connect[1]}" if self.connect else None,
            "cleanup": self.cleanup,
            "limit_bytes": self.limit_bytes,
            "max_error_rate": self.max_error_rate,
            "sweep_workers": list(self.sweep_workers),
            "sweep_fronts": list(self.sweep_fronts),
            "timeout_s": self.timeout_s,
            "digest": self.digest,
            "include_hidden": self.include_hidden,
            "repeat": self.repeat,
            "thresholds": list(self.thresholds),
            "chaos_s": self.chaos_s,
            "chaos_fronts": self.chaos_fronts,
        }


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_clients() -> int:
    """One client process per :data:`CORES_PER_CLIENT` usable cores, at least one: a client
    spends about 0.5 of the workers' CPU per GB (decoding and verifying every response), so on
    a host that runs the server too a quarter of the cores keeps the rest busy."""
    return max(1, default_workers() // CORES_PER_CLIENT)


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


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the arguments describe (:class:`BenchError` if they are bad)."""
    workloads = list(workload_names(args.workload))
    workloads += [f"git:{path}" for path in args.git]
    workloads += [f"dir:{path}" for path in args.dir]
    check_output_paths(args.json, args.report)
    return BenchConfig(
        workloads=tuple(workloads) or DEFAULT_WORKLOADS,
        policies=policy_list(args.policies),
        encoding=args.encoding,
        level=args.level,
        connections=args.connections,
        streams=args.streams,
        requests=args.requests,
        duration_s=args.duration,
        rate=args.rate,
        warmup_s=args.warmup,
        window=args.window,
        workers=args.workers,
        fronts=args.fronts,
        small_tables_from=args.small_tables_from,
        clients=args.clients,
        connect=parse_endpoint(args.connect) if args.connect else None,
        token=args.token,
        cleanup=args.cleanup,
        limit_bytes=parse_bytes(args.limit_bytes) if args.limit_bytes else None,
        revisions=args.revisions,
        files=args.files,
        generate_size=parse_bytes(args.generate_size) if args.generate_size else None,
        seed=args.seed,
        max_error_rate=args.max_error_rate,
        sweep_workers=tuple(parse_sizes(args.sweep_workers)) if args.sweep_workers else (),
        sweep_fronts=tuple(parse_sizes(args.sweep_fronts)) if args.sweep_fronts else (),
        timeout_s=args.timeout,
        json_path=args.json,
        report_dir=args.report,
        include_hidden=args.include_hidden,
        digest=args.digest == "on",
        thresholds=tuple(args.threshold),
        repeat=args.repeat,
        chaos_s=args.chaos,
        chaos_fronts=args.chaos_fronts,
    )


def check_output_paths(json_path: Path | None, report_dir: Path | None) -> None:
    """Fail before the run, not after it, when ``--json`` or ``--report`` cannot be written:
    each is tried for real (permissions alone say nothing of a read-only or special file
    system, nor to root), and what the try made is removed."""
    if json_path is not None and str(json_path) != "-":
        try:
            _try_json(json_path)
        except OSError as exc:
            raise BenchError(f"--json {json_path}: not writable ({describe_error(exc)})") from None
    if report_dir is not None:
        try:
            _try_report(report_dir)
        except OSError as exc:
            raise BenchError(
                f"--report {report_dir}: cannot create or write in it ({describe_error(exc)})"
            ) from None


def _try_json(path: Path) -> None:
    if path.is_dir():
        raise BenchError(f"--json {path}: is a directory")
    if not path.parent.is_dir():
        raise BenchError(f"--json {path}: no such directory {path.parent}")
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: opening one may block
        if not os.access(path, os.W_OK):
            raise BenchError(f"--json {path}: not writable")
        return
    existed = path.exists()
    with path.open("a", encoding="utf-8"):  # appends nothing to a file already there
        pass
    if not existed:
        path.unlink()


def _try_report(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise BenchError(f"--report {directory}: not a directory")
    existing = directory
    while not existing.exists():  # the report directory is created with its parents
        existing = existing.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    finally:
        made = directory
        while made != existing:  # the run makes them again
            with contextlib.suppress(OSError):
                made.rmdir()
            made = made.parent


def describe_error(exc: BaseException) -> str:
    """An exception as the one-line reason of a :class:`BenchError`."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
