"""``zplex bench``: the command line of the load generator (see :mod:`bench.runner`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import runner
from bench.runner import BenchConfig, BenchError


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
        default=",".join(runner.POLICIES),
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
        choices=runner.ENCODINGS,
        default="zstd-8mb",
        help="response encoding (default zstd-8mb)",
    )
    load.add_argument("--level", type=int, default=3, help="compression level (default 3)")
    load.add_argument(
        "-c",
        "--connections",
        type=int,
        default=runner.DEFAULT_CONNECTIONS,
        help=f"connections (default {runner.DEFAULT_CONNECTIONS})",
    )
    load.add_argument(
        "-s",
        "--streams",
        type=int,
        default=runner.DEFAULT_STREAMS,
        help=f"streams per connection under the stream, request and frame policies "
        f"(default {runner.DEFAULT_STREAMS})",
    )
    length = load.add_mutually_exclusive_group()
    length.add_argument(
        "-n", "--requests", type=int, help="requests per policy (cycling over the workload)"
    )
    length.add_argument(
        "-d",
        "--duration",
        type=float,
        help=f"seconds per policy, whole passes (default {runner.DEFAULT_DURATION_S:g})",
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
        default=runner.DEFAULT_WINDOW,
        help=f"closed model: requests outstanding per stream (default {runner.DEFAULT_WINDOW})",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=runner.DEFAULT_WARMUP_S,
        metavar="SECONDS",
        help=f"unmeasured warm-up before each policy (default {runner.DEFAULT_WARMUP_S:g})",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=runner.DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"per-request timeout (default {runner.DEFAULT_TIMEOUT_S:g})",
    )

    server = p.add_argument_group("server")
    server.add_argument(
        "--workers", type=int, help="workers of the server bench starts (default: CPU count)"
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


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the arguments describe (:class:`BenchError` if they are bad)."""
    workloads = list(runner.workload_names(args.workload))
    workloads += [f"git:{path}" for path in args.git]
    workloads += [f"dir:{path}" for path in args.dir]
    if args.json is not None and not args.json.parent.is_dir():
        raise BenchError(f"--json {args.json}: no such directory {args.json.parent}")
    return BenchConfig(
        workloads=tuple(workloads) or runner.DEFAULT_WORKLOADS,
        policies=runner.policy_list(args.policies),
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
        connect=runner.parse_endpoint(args.connect) if args.connect else None,
        token=args.token,
        limit_bytes=runner.parse_bytes(args.limit_bytes) if args.limit_bytes else None,
        revisions=args.revisions,
        files=args.files,
        generate_size=runner.parse_bytes(args.generate_size) if args.generate_size else None,
        seed=args.seed,
        max_error_rate=args.max_error_rate,
        sweep_workers=tuple(runner.parse_sizes(args.sweep_workers)) if args.sweep_workers else (),
        timeout_s=args.timeout,
        json_path=args.json,
        report_dir=args.report,
    )


def _bench(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except BenchError as exc:
        print(f"zplex bench: {exc}", file=sys.stderr)
        return 2
    return runner.run_bench(config)
