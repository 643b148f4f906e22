"""The whole ``zplex bench`` run: start the server (or use ``--connect``'s), run every
workload under every policy (:class:`bench.runner.Runner`), the scaling projection, the sweep
(:mod:`bench.sweep`), then the outcome: JSON, report, tables and the exit status.

The scaling projection comes from the ``stream`` run's per-role costs
(:func:`bench.results.project_runs`). ``--sweep-workers`` restarts the server with each worker
count that fits the host (``workers + 1 <= cores``) and measures the ``stream`` policy for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from bench import report, results, tables
from bench.cleanup import Cleanup, remove_objects
from bench.config import BenchConfig, BenchError, default_workers, describe_error
from bench.display import make_display
from bench.runner import Runner
from bench.server_process import Endpoint
from bench.sweep import SweepPoint, run_sweep, skipped_note, sweep_table
from bench.thresholds import ThresholdCheck, check_thresholds, parse_threshold


@dataclasses.dataclass
class BenchOutcome:
    """Everything a run measured, and what it warns about."""

    result: results.BenchResult
    sweep: list[SweepPoint]
    skipped_sweep: list[tuple[int, int]]
    warnings: list[str]
    thresholds: list[ThresholdCheck] = dataclasses.field(default_factory=list)

    @property
    def error_rate(self) -> float:
        """Errors over requests; under --chaos, lost requests only (those that failed with a
        documented error after the retries are what the kills cause, reported apart)."""
        runs = list(self.result.runs) + [run for point in self.sweep for run in point.runs]
        errors = sum(run.error_count for run in runs)
        attempted = errors + sum(run.requests for run in runs)
        if any(run.chaos is not None for run in runs):
            errors = sum(run.chaos["lost"] for run in runs if run.chaos is not None)
        return errors / attempted if attempted else 0.0

    def to_json(self) -> dict[str, Any]:
        data = self.result.to_json()
        data["sweep"] = [point.to_json() for point in self.sweep]
        data["warnings"] = list(self.warnings)
        data["thresholds"] = [check.to_json() for check in self.thresholds]
        return data


async def _bench(config: BenchConfig, runner: Runner) -> BenchOutcome:
    wall = time.monotonic()
    spawned = config.connect is None
    workers = config.workers or default_workers()
    runner.build_workloads()
    try:
        if spawned:
            endpoint = runner.start_server(workers, config.fronts)
        else:
            assert config.connect is not None
            endpoint = Endpoint(*config.connect)
        await runner.attach(endpoint, spawned)
        runs = await runner.run_workloads()
        await runner.close()
        if spawned:
            runner.servers[-1].stop()
        sweep, skipped = await run_sweep(config, runner)
    finally:
        await runner.close()
    return outcome_of(config, runner, runs, wall, sweep, skipped)


def outcome_of(
    config: BenchConfig,
    runner: Runner,
    runs: list[results.RunResult],
    wall: float,
    sweep: list[SweepPoint] | None = None,
    skipped: list[tuple[int, int]] | None = None,
) -> BenchOutcome:
    """The outcome of the phases in ``runs`` (all of them, or those an interrupted run
    finished): their ratios against ``request``, the projection, the metadata."""
    results.fill_ratio_vs_request(runs)
    projected = "stream" if "stream" in config.policies else config.policies[0]
    projection = results.project_runs(runs, projected)
    metadata = results.collect_metadata(config.describe())
    metadata["server"] = runner.server_info
    metadata["clients"] = config.client_processes
    metadata["fronts"] = runner.server_info.get("fronts")
    metadata["workloads"] = [
        {
            "name": corpus.name,
            "objects": len(corpus.requests),
            "raw_bytes_per_pass": corpus.raw_bytes,
            "groups": len({r.group for r in corpus.requests}),
            "corpus": corpus.workload.corpus(),
            "inprocess_cpu_s_per_gb": corpus.inprocess,
            "generation_cpu_s_per_gb": corpus.generation_cpu_s_per_gb,
        }
        for corpus in runner.corpora.values()
    ]
    metadata["put_objects"] = dict(runner.put_objects)
    metadata["phases"] = [phase.metadata() for phase in runner.phases]
    metadata["wall_time_s"] = time.monotonic() - wall
    result = results.BenchResult(metadata, runs, projection)
    return BenchOutcome(result, sweep or [], skipped or [], runner.warnings)


def write_json(outcome: BenchOutcome, path: Path, stdout: IO[str] | None = None) -> None:
    """The JSON document into ``path`` (``-``: into ``stdout``)."""
    text = json.dumps(outcome.to_json(), indent=2, allow_nan=False)
    if str(path) == "-":
        out = stdout or sys.stdout
        out.write(text + "\n")
        out.flush()
    else:
        path.write_text(text + "\n", encoding="utf-8")


def run_bench(
    config: BenchConfig, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run the bench and print its tables; returns the exit status (0 fine, 1 errors above
    ``--max-error-rate``, a threshold not met or the run failed, 2 bad arguments or input,
    130/143 interrupted: the phases that finished are still printed and written)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    display = make_display(err)
    runner = Runner(config, display)
    interrupted: list[int] = []
    wall = time.monotonic()

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

    status: int | None = None
    cleanup = Cleanup() if config.cleanup else None
    cleaned: list[bool] = []

    def clean_up_once() -> int | None:
        """--cleanup, whatever ended the run, once, after what ended it is said; the exit
        status of an interrupt during it (Ctrl-C 130, SIGTERM 143: the cleanup stops, what
        it did not remove is counted, and the run's figures are still written)."""
        if cleanup is None or cleaned:
            return None
        cleaned.append(True)
        return clean_up(cleanup, config, runner, err)

    try:
        try:
            outcome = asyncio.run(main())
        finally:
            display.close()
            for server in runner.servers:
                server.stop()
    except BenchError as exc:
        print(f"zplex bench: {exc}", file=err)
        return clean_up_once() or exc.status
    except (asyncio.CancelledError, KeyboardInterrupt):
        status = interrupted[0] if interrupted else 130
        finished = [phase.run for phase in runner.phases]
        print(
            f"zplex bench: interrupted; {len(finished)} phase(s) finished"
            + (", shown and written below" if finished else ""),
            file=err,
        )
        status = clean_up_once() or status
        if not finished:
            return status
        outcome = outcome_of(config, runner, finished, wall)
        outcome.warnings.append(
            f"interrupted after {len(finished)} phase(s): the other phases did not run"
        )
    except BaseException:
        clean_up_once()  # an unexpected exception too
        raise
    status = clean_up_once() or status
    if cleanup is not None:
        outcome.result.metadata["cleanup"] = cleanup.to_json()
        if cleanup.failed.get("interrupted"):
            outcome.warnings.append(
                f"--cleanup was interrupted: {cleanup.failed['interrupted']:,} object(s) the "
                "run put are still in the store"
            )
    return finish(config, outcome, out, err, status)


def clean_up(cleanup: Cleanup, config: BenchConfig, runner: Runner, err: IO[str]) -> int | None:
    """--cleanup: delete the objects the run put into the --connect server's store, and say
    what was removed; on Ctrl-C or SIGTERM meanwhile, what was, and the interrupt's exit
    status (130, 143)."""
    assert config.connect is not None
    endpoint = Endpoint(*config.connect)
    signals: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        signals.append(143)
        raise KeyboardInterrupt

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: SIGTERM as it was
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        remove_objects(cleanup, runner.ledger, endpoint, runner.token, config.timeout_s)
    except KeyboardInterrupt:
        return signals[0] if signals else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for line in cleanup.describe(str(endpoint)):
            print(f"zplex bench: {line}", file=err)
    return None


def finish(
    config: BenchConfig,
    outcome: BenchOutcome,
    out: IO[str],
    err: IO[str],
    status: int | None = None,
) -> int:
    """Write the JSON and the report, print the warnings, tables and thresholds; the exit
    status (``status`` if already decided, e.g. interrupted)."""
    checks = check_thresholds(
        [parse_threshold(text) for text in config.thresholds], outcome.result.runs
    )
    outcome.thresholds = checks
    # Files first: they must exist even if the table output goes to a closed pipe.
    written = write_outputs(config, outcome, out, err)
    for warning in outcome.warnings:
        print(f"zplex bench: warning: {warning}", file=err)
    tables_out = err if config.json_to_stdout else out
    console = Console(file=tables_out, width=_table_width(tables_out))
    tables.render_tables(outcome.result, console)
    if outcome.sweep:
        console.print()
        console.print(sweep_table(outcome.sweep, outcome.result.projection))
    if outcome.skipped_sweep:
        console.print(skipped_note(outcome.skipped_sweep))
    for check in checks:
        print(f"zplex bench: threshold {check.describe()}", file=err)
    if status is not None:
        return status
    if not written:
        return 1
    rate = outcome.error_rate
    if rate > config.max_error_rate:
        print(
            f"zplex bench: error rate {rate:.2%} exceeds --max-error-rate "
            f"{config.max_error_rate:.2%}",
            file=err,
        )
        return 1
    if any(not check.met for check in checks):
        return 1
    return 0


def write_outputs(config: BenchConfig, outcome: BenchOutcome, out: IO[str], err: IO[str]) -> bool:
    """Write the JSON and the report; whether both were written. A file that cannot be written
    (checked before the run, but a disk fills and a directory goes) is said on ``err`` and
    the other output, the tables, still follow: the run is not lost to a traceback."""
    written = True
    if config.json_path is not None:
        try:
            write_json(outcome, config.json_path, out)
        except OSError as exc:
            print(
                f"zplex bench: cannot write --json {config.json_path}: {describe_error(exc)}",
                file=err,
            )
            written = False
        else:
            if not config.json_to_stdout:
                print(f"zplex bench: wrote {config.json_path}", file=err)
    if config.report_dir is not None:
        try:
            paths = report.write_report(outcome.result, config.report_dir, outcome.warnings)
        except OSError as exc:
            print(
                f"zplex bench: cannot write --report {config.report_dir}: {describe_error(exc)}",
                file=err,
            )
            written = False
        else:
            print(f"zplex bench: wrote {paths[-1]} and {len(paths) - 1} plots", file=err)
    return written


def _table_width(stream: IO[str]) -> int | None:
    """The terminal's width, or 120 columns (or ``COLUMNS``) when writing to a file."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else tables.DEFAULT_WIDTH
