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
        help="load-test compression scaling and context policies, with a report",
        description="Measure what long-lived per-stream compression contexts buy against "
        "per-request and per-frame contexts on your data, and how throughput and CPU split "
        "between the front and the workers. By default bench starts its own server, fills a "
        "temporary store with each workload, runs every policy on the same requests, prints "
        "one table per workload and stops the server.",
        epilog="Policies: stream (-s streams per connection, context per stream, requests "
        "placed by affinity group), connection (one stream per connection), request (a fresh "
        "compressed unit per response), frame (every frame independent). Exit status: 0, 1 "
        "when the error rate exceeds --max-error-rate, 2 for bad arguments.",
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
    what.add_argument("--git", action="append", default=[], metavar="REPO", help="= -w git:REPO")
    what.add_argument("--dir", action="append", default=[], metavar="PATH", help="= -w dir:PATH")
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
        "-n", "--requests", type=int, help="requests per policy (cycling over the workload)"
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
        "--connect",
        metavar="HOST:PORT",
        help="bench a running server instead (its store must hold the workload, or pass "
        "--token to put it)",
    )
    server.add_argument("--token", help="write token of the --connect server (for put)")
    server.add_argument(
        "--sweep-workers",
        metavar="N,N,...",
        help="also measure the stream policy with each worker count that fits the host",
    )
    server.add_argument(
        "--sweep-fronts",
        metavar="N,N,...",
        help="with --sweep-workers: each worker count with each of these front counts "
        "(alone: these front counts with --workers' workers)",
    )

    output = p.add_argument_group("output")
    output.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    output.add_argument(
        "--report", type=Path, metavar="DIR", help="write PNG plots and index.html here"
    )
    output.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="exit 1 when errors / requests exceed this (default 0)",
    )
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    try:
        bench_config = config.config_from_args(args)
    except config.BenchError as exc:
        print(f"zplex bench: {exc}", file=sys.stderr)
        return 2
    return run_bench(bench_config)
