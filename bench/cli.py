"""``zplex bench``: the command line of the load generator (its flags; their values become a
:class:`~bench.config.BenchConfig` in :mod:`bench.config`, the run is :mod:`bench.main`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import config
from bench.main import run_bench


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        usage="%(prog)s [options]\n       %(prog)s compare A.json B.json [...]",
        help="load-test compression scaling and context policies, with a report",
        description="Measure what long-lived per-stream compression contexts buy against "
        "per-request and per-frame contexts on your data, and how throughput and CPU split "
        "between the front and the workers. By default bench starts its own server, fills a "
        "temporary store with each workload, runs every policy on the same requests, prints "
        "one table per workload and stops the server.",
        epilog="Policies: stream (-s streams per connection, context per stream, requests "
        "placed by affinity group), connection (one stream per connection), request (a fresh "
        "compressed unit per response), frame (every frame independent). Exit status: 0, 1 "
        "when the error rate exceeds --max-error-rate, a --threshold is not met or not "
        "measured, the run failed (server unreachable) or --json or --report could not be "
        "written, 2 for bad arguments or unusable input, 130 interrupted (143 on SIGTERM; the "
        "phases that finished are still written). "
        "Compare runs (their --json) with: zplex bench compare A.json B.json [...] (see zplex "
        "bench compare --help)",
    )
    what = p.add_argument_group("what to run")
    what.add_argument(
        "-w",
        "--workload",
        action="append",
        default=[],
        metavar="NAME",
        help="stdlib, versioned, git:PATH, dir:PATH or generate:KIND (text, json, log, random, "
        "zeros); repeat or separate with commas (default: stdlib and versioned)",
    )
    what.add_argument(
        "--git", action="append", default=[], metavar="REPO", help="= -w git:REPO (default: none)"
    )
    what.add_argument(
        "--dir", action="append", default=[], metavar="PATH", help="= -w dir:PATH (default: none)"
    )
    what.add_argument(
        "--policies",
        default=",".join(config.POLICIES),
        help="comma-separated subset of frame,request,stream,connection (default: all)",
    )
    what.add_argument(
        "--limit",
        dest="limit_bytes",
        metavar="SIZE",
        help="raw bytes kept of each stored corpus, e.g. 4M (default 16M)",
    )
    what.add_argument("--revisions", type=int, help="versioned: revisions per file (default 16)")
    what.add_argument("--files", type=int, help="versioned: files revised (default 32)")
    what.add_argument(
        "--generate-size",
        metavar="SIZE",
        help="generate:KIND: bytes per request (default 32K); a pass is 256 requests",
    )
    what.add_argument("--seed", type=int, default=0, help="versioned: edit seed (default 0)")
    what.add_argument(
        "--include-hidden",
        action="store_true",
        help="dir:PATH: also measure hidden files and version-control and cache folders "
        "(.git, __pycache__, node_modules, ...; default: skipped and counted)",
    )

    load = p.add_argument_group("load")
    load.add_argument(
        "--encoding",
        choices=config.ENCODINGS,
        default="zstd-8mb",
        help="response encoding (default zstd-8mb)",
    )
    load.add_argument("--level", type=int, default=3, help="compression level (default 3)")
    load.add_argument(
        "-c",
        "--connections",
        type=int,
        default=config.DEFAULT_CONNECTIONS,
        help=f"connections (default {config.DEFAULT_CONNECTIONS})",
    )
    load.add_argument(
        "-s",
        "--streams",
        type=int,
        default=config.DEFAULT_STREAMS,
        help=f"streams per connection under the stream, request and frame policies "
        f"(default {config.DEFAULT_STREAMS})",
    )
    length = load.add_mutually_exclusive_group()
    length.add_argument(
        "-n",
        "--requests",
        type=int,
        help="requests per policy, cycling over the workload (default: -d's duration instead)",
    )
    length.add_argument(
        "-d",
        "--duration",
        type=float,
        help=f"seconds per policy, whole passes (default {config.DEFAULT_DURATION_S:g})",
    )
    load.add_argument(
        "--rate",
        type=float,
        help="open model: requests per second, latency from each request's intended send "
        "time (default: closed model)",
    )
    load.add_argument(
        "--window",
        type=int,
        default=config.DEFAULT_WINDOW,
        help=f"closed model: requests outstanding per stream (default {config.DEFAULT_WINDOW})",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=config.DEFAULT_WARMUP_S,
        metavar="SECONDS",
        help=f"unmeasured warm-up before each policy (default {config.DEFAULT_WARMUP_S:g})",
    )
    load.add_argument(
        "--digest",
        choices=("on", "off"),
        default="on",
        help="on: response headers carry the body's digest; off: requests say "
        '"digest": false (the bench still checks every body against the digest it knows) '
        "(default on)",
    )
    load.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="measure each phase N times and report the median and spread (for compare) "
        "(default 1)",
    )
    load.add_argument(
        "--clients",
        type=int,
        metavar="N",
        help="client processes, each with its own event loop and a share of the connections "
        f"(default: one per {config.CORES_PER_CLIENT} usable cores, at least 1; at most -c)",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=config.DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"per-request timeout (default {config.DEFAULT_TIMEOUT_S:g})",
    )

    server = p.add_argument_group("server")
    server.add_argument(
        "--workers", type=int, help="workers of the server bench starts (default: CPU count)"
    )
    server.add_argument(
        "--fronts",
        type=int,
        help="front processes of the server bench starts (default: the server's own default)",
    )
    server.add_argument(
        "--small-tables-from",
        type=int,
        metavar="N",
        help="--small-tables-from of the server bench starts: small zstd match tables for a "
        "context made while its worker holds N or more (default 16; 0: every stream and "
        "request zstd context, and the in-process reference of the efficiency figures uses "
        "them too)",
    )
    server.add_argument(
        "--connect",
        metavar="HOST:PORT",
        help="bench a running server instead (its store must hold the workload, or pass "
        "--token to put it) (default: start one)",
    )
    server.add_argument(
        "--token",
        help="write token of the --connect server, to put the workload and, with --cleanup, "
        "delete it (default: none)",
    )
    server.add_argument(
        "--cleanup",
        action="store_true",
        help="with --connect: at the end of the run (after Ctrl-C or a failure too), delete "
        "the objects the run put into the server's store, and only those; the server must "
        "offer delete (zplex serve --allow-delete), which is checked before any put",
    )
    server.add_argument(
        "--chaos",
        type=float,
        metavar="SECONDS",
        help="kill a random worker of the server bench starts every SECONDS while measuring; "
        "the client retries what a user would (worker-lost before any of the response, "
        "overloaded, shutting-down, a lost connection) and the run reports requests "
        "answered, retried, failed and lost (lost: no answer or a wrong one; must be 0) "
        "(default: no kills)",
    )
    server.add_argument(
        "--chaos-fronts",
        action="store_true",
        help="with --chaos and --fronts N > 1: kill fronts too",
    )

    server.add_argument(
        "--sweep-workers",
        metavar="N,N,...",
        help="also measure the stream policy with each worker count that fits the host "
        "(default: no sweep)",
    )
    server.add_argument(
        "--sweep-fronts",
        metavar="N,N,...",
        help="with --sweep-workers: each worker count with each of these front counts "
        "(alone: these front counts with --workers' workers) (default: no sweep)",
    )

    output = p.add_argument_group("output")
    output.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="write every figure as JSON (- for standard output; the tables then go to "
        "standard error) (default: none)",
    )
    output.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="write PNG plots and index.html here (default: none)",
    )
    output.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="exit 1 when errors / requests exceed this (default 0)",
    )
    output.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="POLICY.FIGURE OP VALUE over the JSON's figures, e.g. stream.ratio_vs_request>=2 "
        "or stream.latency_ms.p99<50 (repeatable, checked before the run); exit 1 if any is "
        "not met or not measured (default: none)",
    )
    p.set_defaults(func=_bench)
    # Shown by the usage line and the epilog, not as a positional argument among the options.
    sub = p.add_subparsers(dest="bench_command", required=False, help=argparse.SUPPRESS)
    compare = sub.add_parser(
        "compare",
        prog="zplex bench compare",
        usage="%(prog)s A.json B.json [...]",
        help="compare the JSON of several runs (--json), per workload and policy",
        description="The figures of each run side by side, per workload and policy, with "
        "the change against the first file and whether it is beyond the run-to-run noise "
        "(from --repeat N runs). Only the workloads and policies every file has are compared. "
        "Exit status 2 when a file cannot be read or the files have none in common.",
    )
    compare.add_argument(
        "files", nargs="+", type=Path, metavar="FILE.json", help="two or more --json outputs"
    )
    compare.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.compare import compare_files

    if len(args.files) < 2:
        print("zplex bench compare: give two or more JSON files", file=sys.stderr)
        return 2
    width = None if sys.stdout.isatty() else 160
    return compare_files(args.files, Console(width=width))


def _bench(args: argparse.Namespace) -> int:
    try:
        bench_config = config.config_from_args(args)
    except config.BenchError as exc:
        print(f"zplex bench: {exc}", file=sys.stderr)
        return 2
    return run_bench(bench_config)
