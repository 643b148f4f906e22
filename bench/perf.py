"""``make perf`` (``python -m bench.perf``): the figures of the performance targets, measured
in one run, each printed against its target with met / not met.

Four ``zplex bench`` runs, each with its own server (level 3, ``stream``, one worker):

1. ``stdlib`` and ``versioned``: server efficiency (in-process CPU/GB over fronts + workers
   CPU/GB) of each; on ``stdlib`` also ``worker_efficiency``, ``front_overhead``, client CPU/GB
   over workers CPU/GB and the projected GB/s at 64 cores over 8 (the best split of fronts and
   workers, clients elsewhere);
2. and 3. ``versioned`` over 256 files (about 220 affinity groups within the size limit, 2
   revisions each) on one connection with one stream, then with 64 streams (the groups hashed
   onto them keep about 60 contexts hot, interleaved): the worker's throughput per CPU second
   with 64 hot contexts over that with one;
4. ``stdlib`` with ``--fronts 2 --clients 2``: it runs, with 0 errors, and both fronts get
   connections.

Every figure is a ratio of two measurements of one run: the host may be small and shared.
Exit status 0 when the runs ran (whatever the targets), 2 when one could not.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.config import BenchConfig, parse_bytes
from bench.main import run_bench

#: Measured seconds per phase (each run has one or two phases).
DEFAULT_DURATION_S = 4.0
#: Raw bytes kept of each corpus.
DEFAULT_LIMIT = "8M"
#: The workload of the hot-streams figure: enough affinity groups for 64 streams.
HOT_WORKLOAD = "versioned"
HOT_FILES = 256
HOT_REVISIONS = 2


@dataclasses.dataclass(frozen=True)
class Target:
    """One figure against its target."""

    figure: str
    value: float | None
    goal: str
    met: bool | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _at_least(goal: float) -> Callable[[float], bool]:
    return lambda value: value >= goal


def _at_most(goal: float) -> Callable[[float], bool]:
    return lambda value: value <= goal


def _target(
    figure: str, value: float | None, goal: str, test: Callable[[float], bool], note: str = ""
) -> Target:
    return Target(figure, value, goal, None if value is None else test(value), note)


def _run(doc: Mapping[str, Any], workload: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in doc["runs"] if r["workload"] == workload)
    return found


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def targets(
    main: Mapping[str, Any],
    one_stream: Mapping[str, Any],
    many_streams: Mapping[str, Any],
    scaled: Mapping[str, Any],
) -> list[Target]:
    """The targets from the JSON documents of the four runs (see the module's docstring)."""
    stdlib = _run(main, "stdlib")
    versioned = _run(main, "versioned")
    projection = next(p for p in main["projection"] if p["workload"] == "stdlib")
    at = {row["cores"]: row["gb_per_s"] for row in projection["rows"]}
    one = _run(one_stream, HOT_WORKLOAD)["cpu_s_per_gb"]["workers"]
    many_run = _run(many_streams, HOT_WORKLOAD)
    many = many_run["cpu_s_per_gb"]["workers"]
    scaled_run = _run(scaled, "stdlib")
    connections = [
        n for phase in scaled["metadata"]["phases"] for n in phase["front_connections"].values()
    ]
    both = len(connections) >= 2 and min(connections) > 0
    works = scaled_run["errors"] == {} and scaled_run["requests"] > 0 and both
    fronts_note = (
        f"{scaled_run['requests']:,} requests, errors {scaled_run['errors'] or 0}, "
        f"connections per front {connections}"
    )
    return [
        _target(
            "server efficiency, stdlib", stdlib["server_efficiency"], ">= 0.75", _at_least(0.75)
        ),
        _target(
            "server efficiency, versioned",
            versioned["server_efficiency"],
            ">= 0.25",
            _at_least(0.25),
        ),
        _target(
            "worker_efficiency, stdlib", stdlib["worker_efficiency"], ">= 0.90", _at_least(0.9)
        ),
        _target("front_overhead, stdlib", stdlib["front_overhead"], "<= 0.12", _at_most(0.12)),
        _target(
            "client CPU/GB / workers CPU/GB, stdlib",
            stdlib["client_worker_ratio"],
            "<= 0.30",
            _at_most(0.3),
        ),
        _target(
            "64 hot streams vs 1 on one worker (throughput)",
            _ratio(one, many),
            ">= 0.6",
            _at_least(0.6),
            f"{HOT_WORKLOAD}, workers CPU s/GB: 1 stream {_fmt(one)}, "
            f"{many_run['streams']} streams used {_fmt(many)}",
        ),
        _target(
            "projected GB/s at 64 cores / at 8, stdlib",
            _ratio(at.get(64), at.get(8)),
            ">= 6",
            _at_least(6.0),
        ),
        Target(
            "--fronts 2 --clients 2",
            1.0 if works else 0.0,
            "0 errors, both fronts",
            works,
            fronts_note,
        ),
    ]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def render(rows: list[Target]) -> str:
    """The targets as a text table."""
    lines = [f"{'figure':<48} {'measured':>9}  {'target':<22} verdict"]
    for row in rows:
        verdict = "-" if row.met is None else ("met" if row.met else "not met")
        value = (
            _fmt(row.value)
            if row.figure != "--fronts 2 --clients 2"
            else ("runs" if row.met else "fails")
        )
        lines.append(f"{row.figure:<48} {value:>9}  {row.goal:<22} {verdict}")
        if row.note:
            lines.append(f"    {row.note}")
    met = sum(1 for row in rows if row.met)
    lines.append(f"{met} of {len(rows)} targets met")
    return "\n".join(lines)


def _bench(config: BenchConfig, label: str) -> dict[str, Any]:
    print(f"zplex perf: {label}", file=sys.stderr)
    tables = io.StringIO()
    status = run_bench(config, stdout=tables)
    if status != 0 or config.json_path is None:
        raise SystemExit(2)
    data: dict[str, Any] = json.loads(config.json_path.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-d", "--duration", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument("--limit", default=DEFAULT_LIMIT, help="raw bytes per corpus (8M)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the targets as JSON")
    args = parser.parse_args(argv)
    common: dict[str, Any] = {
        "policies": ("stream",),
        "duration_s": args.duration,
        "limit_bytes": parse_bytes(args.limit),
        "workers": 1,
        "level": 3,
    }
    with tempfile.TemporaryDirectory(prefix="zplex-perf-") as tmp:
        out = Path(tmp)
        main_doc = _bench(
            BenchConfig(
                workloads=("stdlib", "versioned"),
                fronts=1,
                clients=1,
                json_path=out / "main.json",
                **common,
            ),
            "stdlib and versioned, one worker, one front, one client",
        )
        streams = []
        for count in (1, 64):
            streams.append(
                _bench(
                    BenchConfig(
                        workloads=(HOT_WORKLOAD,),
                        files=HOT_FILES,
                        revisions=HOT_REVISIONS,
                        connections=1,
                        streams=count,
                        fronts=1,
                        clients=1,
                        json_path=out / f"streams{count}.json",
                        **common,
                    ),
                    f"{HOT_WORKLOAD} ({HOT_FILES} files), one connection of {count} "
                    "stream(s), one worker",
                )
            )
        scaled = _bench(
            BenchConfig(
                workloads=("stdlib",),
                connections=4,
                fronts=2,
                clients=2,
                json_path=out / "scaled.json",
                **common,
            ),
            "stdlib, --fronts 2 --clients 2 -c 4, one worker",
        )
    rows = targets(main_doc, streams[0], streams[1], scaled)
    print(render(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
