"""The tables of a :class:`~bench.results.BenchResult`, described once (:data:`COLUMNS`,
:func:`table_rows`, :func:`projection_table`, the captions) and rendered with rich for the
terminal (:func:`render_tables`); the HTML report (:mod:`bench.report`) shows the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench import chaos
from bench.config import DEFAULT_DURATION_S
from bench.projection import SplitRow
from bench.results import POLICIES, BenchResult, Projection, RunResult

MISSING = "-"
#: Columns of the terminal's tables when not writing to a terminal (it fits 120 columns; the
#: JSON and the HTML report have every column).
DEFAULT_WIDTH = 120
#: What the scaling projection's table shows, in the terminal and the report alike.
PROJECTION_SPLIT = (
    "the cores split between fronts and workers, and clients on the same host, for the most GB/s"
)


# --- formatting ------------------------------------------------------------------------------


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING if value is None or math.isnan(value) else "inf"
    return f"{value:{spec}}{suffix}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _fmt_pct(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f}%"


def _fmt_bytes(value: float | None) -> str:
    if value is None:
        return MISSING
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in sorted(errors.items()) if n)


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[RunResult], str]
    numeric: bool = True
    #: Columns of one group stay together when a narrow terminal splits the table.
    group: str = "rate"
    #: Shown on the terminal too (False: in the JSON and the HTML report only).
    terminal: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("policy", lambda r: r.policy, numeric=False),
    Column("req/s", lambda r: fmt(r.requests_per_s, ",.0f")),
    Column("raw\nMB/s", lambda r: fmt(r.raw_mb_per_s, ",.1f")),
    Column("wire\nMB/s", lambda r: fmt(r.wire_mb_per_s, ",.1f"), terminal=False),
    Column("ratio", lambda r: fmt(r.ratio, ".2f")),
    Column("space\nsavings", lambda r: _fmt_pct(r.space_savings), terminal=False),
    Column("vs\nrequest", lambda r: fmt(r.ratio_vs_request, ".2f", "x")),
    Column("vs\nideal", lambda r: fmt(r.ratio_vs_ideal, ".3f")),
    Column("front\nCPU/GB", lambda r: fmt(r.cpu_s_per_gb.front, ".2f"), group="cpu"),
    Column("workers\nCPU/GB", lambda r: fmt(r.cpu_s_per_gb.workers, ".2f"), group="cpu"),
    Column(
        "client\nCPU/GB", lambda r: fmt(r.cpu_s_per_gb.client, ".2f"), group="cpu", terminal=False
    ),
    Column("worker\neff.", lambda r: fmt(r.worker_efficiency, ".2f"), group="cpu"),
    Column("front\novh.", lambda r: fmt(r.front_overhead, ".3f"), group="cpu"),
    Column("server\neff.", lambda r: fmt(r.server_efficiency, ".2f"), group="cpu"),
    Column(
        "client\n/workers", lambda r: fmt(r.client_worker_ratio, ".2f"), group="cpu", terminal=False
    ),
    Column("p50\nms", lambda r: _fmt_ms(r.latency_ms.get("p50")), group="latency"),
    Column("p99\nms", lambda r: _fmt_ms(r.latency_ms.get("p99")), group="latency"),
    Column(
        "p99.9\nms", lambda r: _fmt_ms(r.latency_ms.get("p999")), group="latency", terminal=False
    ),
    Column("errors", lambda r: str(r.error_count), group="latency"),
)


def _policy_order(run: RunResult) -> tuple[int, str]:
    rank = POLICIES.index(run.policy) if run.policy in POLICIES else len(POLICIES)
    return rank, run.policy


def runs_by_workload(result: BenchResult) -> dict[str, list[RunResult]]:
    """Runs grouped by workload (first-appearance order), policies in the canonical order."""
    grouped: dict[str, list[RunResult]] = {}
    for run in result.runs:
        grouped.setdefault(run.workload, []).append(run)
    return {name: sorted(runs, key=_policy_order) for name, runs in grouped.items()}


def table_rows(
    runs: Sequence[RunResult], columns: Sequence[Column] = COLUMNS
) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of a workload's table: one row per policy."""
    return [c.header for c in columns], [[c.cell(run) for c in columns] for run in runs]


TERMINAL_COLUMNS = tuple(c for c in COLUMNS if c.terminal)


def _change(new: float | None, old: float | None) -> str | None:
    """``+5%`` / ``-71%`` / ``±0%`` (None if either is unknown)."""
    if new is None or old is None or old == 0:
        return None
    percent = round((new / old - 1) * 100)
    if percent == 0:
        return "\u00b10%"
    return f"{percent:+d}%".replace("-", "\u2212")


def _cpu_per_gb(run: RunResult) -> float | None:
    front, workers = run.cpu_s_per_gb.front, run.cpu_s_per_gb.workers
    return None if front is None or workers is None else front + workers


def headline(runs: Sequence[RunResult], projection: Projection | None = None) -> str | None:
    """One sentence under a workload's table: which policy wins on ratio and by how much
    against ``request``, what it costs or saves in throughput and server CPU per GB, and what
    bounds the server (from the projection)."""
    rated = [run for run in runs if run.ratio is not None]
    if not rated:
        return None
    best = max(rated, key=lambda run: run.ratio or 0.0)
    base = next((run for run in rated if run.policy == "request"), None)
    parts: list[str] = []
    if len(rated) == 1:
        parts.append(f"{best.policy}: ratio {fmt(best.ratio, '.2f')}")
    elif base is None or base is best:
        parts.append(f"{best.policy} has the best ratio ({fmt(best.ratio, '.2f')})")
    else:
        assert best.ratio is not None and base.ratio is not None
        wire = _change(base.ratio, best.ratio)
        parts.append(
            f"{best.policy}: {best.ratio / base.ratio:.2f}\u00d7 the ratio of request "
            f"({wire} wire bytes)"
        )
        for label, new, old in (
            ("req/s", best.requests_per_s, base.requests_per_s),
            ("server CPU/GB", _cpu_per_gb(best), _cpu_per_gb(base)),
        ):
            change = _change(new, old)
            if change is not None:
                parts.append(f"{change} {label}")
    if projection is not None and projection.workers_one_front_can_feed is not None:
        parts.append(f"front-bound at {projection.workers_one_front_can_feed:.1f} workers")
    return ", ".join(parts)


def _span(values: Sequence[float], spec: str) -> str:
    """One value, or the lowest and highest joined by an en dash when the policies differ
    (under ``-d``, each policy answers as many requests as its time allows)."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}\u2013{high}"


def workload_caption(runs: Sequence[RunResult]) -> str:
    """The lines under a workload's table: size and settings, the single-context limit,
    memory (from the ``stream`` run, else the first) and the errors by code."""
    first = runs[0]
    parts = [
        f"{_span([run.requests for run in runs], ',')} requests, "
        f"{_span([run.raw_bytes / 1e6 for run in runs], ',.1f')} MB raw, "
        f"{first.encoding} level {first.level}, {first.streams} stream"
        f"{'' if first.streams == 1 else 's'}"
    ]
    ideal = first.ideal_ratio
    if ideal is not None:
        parts[0] += f"; one in-process context (ideal) ratio {ideal:.2f}"
    ref = next((run for run in runs if run.policy == "stream"), first)
    rss = ref.peak_rss
    if ref.memory_per_stream is not None or any(
        v is not None for v in (rss.front, rss.workers, rss.client)
    ):
        parts.append(
            f"memory ({ref.policy}): {_fmt_bytes(ref.memory_per_stream)} per stream; peak RSS "
            f"front {_fmt_bytes(rss.front)}, largest worker {_fmt_bytes(rss.workers)}, "
            f"client {_fmt_bytes(rss.client)}"
        )
    if first.target_rate is not None:
        achieved = ", ".join(f"{run.policy} {fmt(run.requests_per_s, ',.0f')}" for run in runs)
        parts.append(f"--rate {first.target_rate:g} req/s target; achieved: {achieved}")
    if first.generation_cpu_s_per_gb is not None:
        parts.append(
            f"workers' CPU excludes making the data ({first.generation_cpu_s_per_gb:.2f} "
            "s/GB, measured apart during set-up)"
        )
    under_chaos = [f"{run.policy} {chaos.describe(run.chaos)}" for run in runs if run.chaos]
    if under_chaos:
        parts.append("chaos: " + "; ".join(under_chaos))
    errors = [f"{run.policy}: {_fmt_errors(run.errors)}" for run in runs if run.error_count]
    if errors:
        parts.append("errors by code: " + "; ".join(errors))
    return "\n".join(parts)


def _split(row: SplitRow) -> str:
    parts = [str(row["fronts"]), str(row["workers"])]
    if row["clients"]:
        parts.append(str(row["clients"]))
    return "+".join(parts)


def projection_table(projections: Sequence[Projection]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the scaling projection: one row per core count; per projected
    workload the best split with the clients elsewhere (fronts+workers, GB/s, bound) and with
    them on the same host (fronts+workers+clients, GB/s, bound)."""
    headers = ["cores"]
    for projection in projections:
        headers += [
            f"{projection.workload}\nfronts+workers",
            "GB/s",
            "bound\nby",
            "same host\nf+w+clients",
            "GB/s",
            "bound\nby",
        ]
    cores = sorted({row["cores"] for p in projections for row in p.rows})
    rows = []
    for n in cores:
        cells = [str(n)]
        for projection in projections:
            for found in (
                [r for r in projection.rows if r["cores"] == n],
                [r for r in projection.rows_with_clients if r["cores"] == n],
            ):
                if not found:
                    cells += [MISSING, MISSING, MISSING]
                else:
                    row = found[0]
                    cells += [_split(row), fmt(row["gb_per_s"], ".2f"), row["bound"] or MISSING]
        rows.append(cells)
    return headers, rows


def projected(result: BenchResult) -> tuple[list[Projection], str | None]:
    """The projections with figures to show, and one line instead of a table of dashes for
    those without (their run measured no CPU figures: too short, or under --chaos)."""
    known: list[Projection] = []
    unknown: list[Projection] = []
    for p in result.projection:
        costs = (p.front_cpu_s_per_gb, p.workers_cpu_s_per_gb)
        (unknown if None in costs else known).append(p)
    if not unknown:
        return known, None
    of = f" of {', '.join(p.workload for p in unknown)}" if known else ""
    which = {(p.workload, p.policy) for p in unknown}
    if any(run.chaos is not None for run in result.runs if (run.workload, run.policy) in which):
        return known, f"scaling projection{of}: none under --chaos (it leaves out the server's CPU)"
    return known, (
        f"scaling projection{of}: the run was too short to project (no CPU figures in its "
        f"{unknown[0].policy} phase); measure each policy for {DEFAULT_DURATION_S:g} s or more "
        f"(-d {DEFAULT_DURATION_S:g})"
    )


def projection_caption(projection: Projection) -> str:
    feed = projection.workers_one_front_can_feed
    at8 = projection.gb_per_s_at(8)
    at64 = projection.gb_per_s_at(64)
    scale = fmt(at64 / at8, ".1f", "x") if at8 and at64 is not None else MISSING
    return (
        f"{projection.workload} ({projection.policy}): one front can feed "
        f"{fmt(feed, '.1f')} workers (front {fmt(projection.front_cpu_s_per_gb, '.2f')}, "
        f"workers {fmt(projection.workers_cpu_s_per_gb, '.2f')}, client "
        f"{fmt(projection.client_cpu_s_per_gb, '.2f')} CPU s/GB); 64 cores carry {scale} "
        "what 8 do"
    )


# --- terminal --------------------------------------------------------------------------------


def _width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Terminal width of a table with these cells (one space of padding each side)."""
    widths = [max(len(line) for line in h.split("\n")) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths)


def _column_sets(runs: Sequence[RunResult], width: int) -> list[list[int]]:
    """Column indexes (into :data:`TERMINAL_COLUMNS`) of the tables that show a workload
    within ``width`` characters: one table if it fits, else the column groups packed greedily,
    each table led by ``policy``."""
    headers, rows = table_rows(runs, TERMINAL_COLUMNS)
    everything = list(range(len(TERMINAL_COLUMNS)))

    def fits(indexes: list[int]) -> bool:
        return (
            _width([headers[i] for i in indexes], [[r[i] for i in indexes] for r in rows]) <= width
        )

    if fits(everything):
        return [everything]
    groups: dict[str, list[int]] = {}
    for i, column in enumerate(TERMINAL_COLUMNS[1:], start=1):
        groups.setdefault(column.group, []).append(i)
    tables: list[list[int]] = []
    for indexes in groups.values():
        if tables and fits(tables[-1] + indexes):
            tables[-1] += indexes
        else:
            tables.append([0, *indexes])
    return tables


def _rich_table(
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: Sequence[bool],
) -> Table:
    # Text objects, never markup strings: workload names are paths and may hold "[".
    table = Table(
        title=Text(title, style="bold") if title else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header, num in zip(headers, numeric, strict=True):
        table.add_column(Text(header), justify="right" if num else "left", no_wrap=True)
    for cells in rows:
        table.add_row(*(Text(cell) for cell in cells))
    return table


def render_tables(result: BenchResult, console: Console) -> None:
    """Print one table per workload (one row per policy, the :data:`TERMINAL_COLUMNS`) with
    its headline and caption, then the scaling projection. On a terminal too narrow for all
    columns, a workload's table is split into column groups
    (ratios, CPU, latency), each led by the policy."""
    projections = {projection.workload: projection for projection in result.projection}
    for workload, runs in runs_by_workload(result).items():
        headers, rows = table_rows(runs, TERMINAL_COLUMNS)
        for n, indexes in enumerate(_column_sets(runs, console.width)):
            console.print(
                _rich_table(
                    f"workload {workload}" if n == 0 else None,
                    [headers[i] for i in indexes],
                    [[row[i] for i in indexes] for row in rows],
                    [TERMINAL_COLUMNS[i].numeric for i in indexes],
                )
            )
        line = headline(runs, projections.get(workload))
        if line:
            console.print(Text(line, style="bold"))
        console.print(Text(workload_caption(runs), style="dim"))
        console.print()
    known, unknown = projected(result)
    if known:
        title = f"scaling projection ({PROJECTION_SPLIT})"
        headers, rows = projection_table(known)
        if _width(headers, rows) <= console.width:
            parts = [known]
        else:  # too narrow for all workloads side by side: one table each
            parts = [[projection] for projection in known]
        for n, part in enumerate(parts):
            headers, rows = projection_table(part)
            console.print(
                _rich_table(title if n == 0 else None, headers, rows, [True] * len(headers))
            )
        for projection in known:
            console.print(Text(projection_caption(projection), style="dim"))
    if unknown:
        console.print(Text(unknown, style="dim"))
