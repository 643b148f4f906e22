"""Renderings of a :class:`~bench.results.BenchResult`: rich tables for the terminal, PNG plots
and an ``index.html`` that shows them with the same tables.

The terminal and HTML tables come from one description (:func:`table_rows`), so they always
show the same figures. Plots use matplotlib's Agg canvas directly (no pyplot, no global backend
state), so they work without a display and from any thread.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.results import POLICIES, BenchResult, Projection, RunResult

MISSING = "-"
#: One colour per policy, the same in every plot.
POLICY_COLOURS = {
    "frame": "#d62728",
    "request": "#ff7f0e",
    "stream": "#2ca02c",
    "connection": "#1f77b4",
}
ROLE_COLOURS = {"front": "#9467bd", "workers": "#2ca02c", "client": "#7f7f7f"}
LATENCY_TICKS = (
    (0.001, "p0.1"),
    (0.01, "p1"),
    (0.1, "p10"),
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
)
PLOTS = (
    "ratio_by_policy.png",
    "cpu_per_gb_by_role.png",
    "latency_cdf.png",
    "scaling_projection.png",
)


# --- formatting ------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
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


COLUMNS: tuple[Column, ...] = (
    Column("policy", lambda r: r.policy, numeric=False),
    Column("req/s", lambda r: _fmt(r.requests_per_s, ",.0f")),
    Column("raw\nMB/s", lambda r: _fmt(r.raw_mb_per_s, ",.1f")),
    Column("wire\nMB/s", lambda r: _fmt(r.wire_mb_per_s, ",.1f")),
    Column("ratio", lambda r: _fmt(r.ratio, ".2f")),
    Column("space\nsavings", lambda r: _fmt_pct(r.space_savings)),
    Column("vs\nrequest", lambda r: _fmt(r.ratio_vs_request, ".2f", "x")),
    Column("vs\nideal", lambda r: _fmt(r.ratio_vs_ideal, ".3f")),
    Column("front\nCPU s/GB", lambda r: _fmt(r.cpu_s_per_gb.front, ".2f"), group="cpu"),
    Column("workers\nCPU s/GB", lambda r: _fmt(r.cpu_s_per_gb.workers, ".2f"), group="cpu"),
    Column("client\nCPU s/GB", lambda r: _fmt(r.cpu_s_per_gb.client, ".2f"), group="cpu"),
    Column("worker\neff.", lambda r: _fmt(r.worker_efficiency, ".2f"), group="cpu"),
    Column("front\noverhead", lambda r: _fmt(r.front_overhead, ".3f"), group="cpu"),
    Column("p50\nms", lambda r: _fmt_ms(r.latency_ms.get("p50")), group="latency"),
    Column("p99\nms", lambda r: _fmt_ms(r.latency_ms.get("p99")), group="latency"),
    Column("p99.9\nms", lambda r: _fmt_ms(r.latency_ms.get("p999")), group="latency"),
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


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of a workload's table: one row per policy."""
    return [c.header for c in COLUMNS], [[c.cell(run) for c in COLUMNS] for run in runs]


def workload_caption(runs: Sequence[RunResult]) -> str:
    """The lines under a workload's table: size and settings, the single-context limit,
    memory (from the ``stream`` run, else the first) and the errors by code."""
    first = runs[0]
    parts = [
        f"{first.requests:,} requests, {first.raw_bytes / 1e6:,.1f} MB raw, "
        f"{first.encoding} level {first.level}, {first.streams} streams"
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
    errors = [f"{run.policy}: {_fmt_errors(run.errors)}" for run in runs if run.error_count]
    if errors:
        parts.append("errors by code: " + "; ".join(errors))
    return "\n".join(parts)


def projection_table(projections: Sequence[Projection]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the scaling projection: one row per core count, a GB/s and a
    bound column per projected workload."""
    headers = ["cores", "workers"]
    for projection in projections:
        headers += [f"{projection.workload}\nGB/s", "bound\nby"]
    cores: dict[int, int] = {}
    for projection in projections:
        for row in projection.rows:
            cores.setdefault(row["cores"], row["workers"])
    rows = []
    for n, workers in sorted(cores.items()):
        cells = [str(n), str(workers)]
        for projection in projections:
            found = [r for r in projection.rows if r["cores"] == n]
            if not found:
                cells += [MISSING, MISSING]
            else:
                cells += [_fmt(found[0]["gb_per_s"], ".2f"), found[0]["bound"] or MISSING]
        rows.append(cells)
    return headers, rows


def projection_caption(projection: Projection) -> str:
    feed = projection.workers_one_front_can_feed
    return (
        f"{projection.workload} ({projection.policy}): one front can feed "
        f"{_fmt(feed, '.1f')} workers (front {_fmt(projection.front_cpu_s_per_gb, '.2f')}, "
        f"workers {_fmt(projection.workers_cpu_s_per_gb, '.2f')} CPU s/GB)"
    )


# --- terminal --------------------------------------------------------------------------------


def _width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Terminal width of a table with these cells (one space of padding each side)."""
    widths = [max(len(line) for line in h.split("\n")) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths)


def _column_sets(runs: Sequence[RunResult], width: int) -> list[list[int]]:
    """Column indexes of the tables that show a workload within ``width`` characters: one
    table if it fits, else the column groups packed greedily, each table led by ``policy``."""
    headers, rows = table_rows(runs)
    everything = list(range(len(COLUMNS)))

    def fits(indexes: list[int]) -> bool:
        return (
            _width([headers[i] for i in indexes], [[r[i] for i in indexes] for r in rows]) <= width
        )

    if fits(everything):
        return [everything]
    groups: dict[str, list[int]] = {}
    for i, column in enumerate(COLUMNS[1:], start=1):
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
    """Print one table per workload (one row per policy), then the scaling projection. On a
    terminal too narrow for all columns, a workload's table is split into column groups
    (ratios, CPU, latency), each led by the policy."""
    for workload, runs in runs_by_workload(result).items():
        headers, rows = table_rows(runs)
        for n, indexes in enumerate(_column_sets(runs, console.width)):
            console.print(
                _rich_table(
                    f"workload {workload}" if n == 0 else None,
                    [headers[i] for i in indexes],
                    [[row[i] for i in indexes] for row in rows],
                    [COLUMNS[i].numeric for i in indexes],
                )
            )
        console.print(Text(workload_caption(runs), style="dim"))
        console.print()
    if result.projection:
        title = "scaling projection (one front on one core, the other cores workers)"
        headers, rows = projection_table(result.projection)
        if _width(headers, rows) <= console.width:
            parts = [result.projection]
        else:  # too narrow for all workloads side by side: one table each
            parts = [[projection] for projection in result.projection]
        for n, part in enumerate(parts):
            headers, rows = projection_table(part)
            console.print(
                _rich_table(title if n == 0 else None, headers, rows, [True] * len(headers))
            )
        for projection in result.projection:
            console.print(Text(projection_caption(projection), style="dim"))


# --- plots -----------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, for this figure only
    return fig


def _no_data(ax: Any, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")


def _plot_ratio(result: BenchResult, path: Path) -> None:
    grouped = runs_by_workload(result)
    policies = [p for p in POLICIES if any(r.policy == p for r in result.runs)]
    policies += sorted({r.policy for r in result.runs} - set(policies))
    fig = _new_figure(max(6.0, 1.9 * len(grouped) + 3), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(policies))
    ideal_drawn = False
    for g, (_workload, runs) in enumerate(grouped.items()):
        by_policy = {run.policy: run for run in runs}
        for p, policy in enumerate(policies):
            run = by_policy.get(policy)
            if run is None or run.ratio is None:
                continue
            x = g - 0.4 + width * (p + 0.5)
            ax.bar(
                x,
                run.ratio,
                width * 0.92,
                color=POLICY_COLOURS.get(policy, "#8c564b"),
                label=policy,
            )
            ax.text(
                x,
                run.ratio,
                f"{run.ratio:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
                zorder=4,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.7, "lw": 0},
            )
        ideal = next((r.ideal_ratio for r in runs if r.ideal_ratio is not None), None)
        if ideal is not None:
            ax.hlines(
                ideal,
                g - 0.45,
                g + 0.45,
                colors="black",
                linestyles="dashed",
                label=None if ideal_drawn else "one in-process context (ideal)",
                zorder=3,
            )
            ideal_drawn = True
    if not grouped:
        _no_data(ax)
    ax.set_xticks(range(len(grouped)), list(grouped), fontsize=9)
    ax.set_ylabel("compression ratio (raw / wire)")
    ax.set_title("Compression ratio by context policy (higher is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.12)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(
            unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    fig.savefig(path)


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, max(1, n))
    return math.ceil(max(1, n) / cols), cols


def _plot_cpu(result: BenchResult, path: Path) -> None:
    grouped = runs_by_workload(result)
    rows, cols = _grid(len(grouped))
    fig = _new_figure(4.6 * cols + 0.5, 3.8 * rows)
    roles = ("front", "workers", "client")
    width = 0.26
    for i, (workload, runs) in enumerate(grouped.items() or [("", [])]):
        ax = fig.add_subplot(rows, cols, i + 1)
        for r, role in enumerate(roles):
            xs, ys = [], []
            for x, run in enumerate(runs):
                value = getattr(run.cpu_s_per_gb, role)
                if value is not None:
                    xs.append(x + (r - 1) * width)
                    ys.append(value)
            ax.bar(xs, ys, width * 0.92, color=ROLE_COLOURS[role], label=role)
        ref_drawn = False
        for x, run in enumerate(runs):
            if run.inprocess_cpu_s_per_gb is not None:
                ax.hlines(
                    run.inprocess_cpu_s_per_gb,
                    x - width / 2,
                    x + width / 2,
                    colors="black",
                    linewidth=2,
                    label=None if ref_drawn else "in-process zstd (1 core)",
                )
                ref_drawn = True
        if not runs:
            _no_data(ax)
        ax.set_xticks(range(len(runs)), [run.policy for run in runs], fontsize=9)
        ax.set_title(workload, fontsize=10)
        ax.set_ylabel("CPU seconds per GB of raw output")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles: list[Any] = []
    labels: list[str] = []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle("CPU cost by role (lower is better)")
    fig.savefig(path)


def _plot_latency(result: BenchResult, path: Path) -> None:
    grouped = runs_by_workload(result)
    rows, cols = _grid(len(grouped))
    fig = _new_figure(4.6 * cols + 0.5, 3.8 * rows)
    for i, (workload, runs) in enumerate(grouped.items() or [("", [])]):
        ax = fig.add_subplot(rows, cols, i + 1)
        drawn = False
        smallest = 1.0
        for run in runs:
            points = [(x, y) for x, y in run.latency_cdf or [] if x > 0]
            if not points:
                continue
            # On a logit axis a fraction of 1 is infinitely far: draw the maximum just below.
            top = 1 - 0.5 / max(run.requests, 2)
            xs = [x for x, _ in points]
            ys = [min(y, top) for _, y in points]
            smallest = min(smallest, ys[0])
            ax.step(
                xs,
                ys,
                where="post",
                color=POLICY_COLOURS.get(run.policy),
                label=run.policy,
                marker="o" if len(points) < 20 else None,  # a lone point is still visible
                markersize=3,
            )
            drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("logit")
            bottom = max(1e-3, min(0.1, smallest))
            ax.set_ylim(bottom, 0.9999)
            ticks = [(t, label) for t, label in LATENCY_TICKS if t >= bottom]
            ax.set_yticks([t for t, _ in ticks], [label for _, label in ticks])
            ax.minorticks_off()
            ax.legend(fontsize=8, loc="lower right")
        else:
            _no_data(ax, "no latency data")
        ax.set_title(workload, fontsize=10)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("percentile of requests (logit scale)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Latency CDF by policy (left and up is better)")
    fig.savefig(path)


def _plot_projection(result: BenchResult, path: Path) -> None:
    fig = _new_figure(7.5, 4.6)
    ax = fig.add_subplot()
    drawn = False
    all_cores: set[int] = set()
    for i, projection in enumerate(result.projection):
        points = [(row["cores"], row) for row in projection.rows if row["gb_per_s"] is not None]
        if not points:
            continue
        colour = f"C{i % 10}"
        cores = [c for c, _ in points]
        all_cores.update(cores)
        gbs = [row["gb_per_s"] for _, row in points]
        ax.plot(
            cores,
            gbs,
            color=colour,
            marker="o",
            label=f"{projection.workload} ({projection.policy}): one front feeds "
            f"{_fmt(projection.workers_one_front_can_feed, '.1f')} workers",
        )
        front = [(c, row["gb_per_s"]) for c, row in points if row["bound"] == "front"]
        if front:
            ax.plot(
                [c for c, _ in front],
                [g for _, g in front],
                linestyle="none",
                marker="o",
                markersize=10,
                markerfacecolor="white",
                markeredgecolor=colour,
            )
        if projection.workers_cpu_s_per_gb:
            ax.plot(
                cores,
                [(c - 1) / projection.workers_cpu_s_per_gb for c in cores],
                color=colour,
                linestyle=":",
                alpha=0.6,
            )
        drawn = True
    if drawn:
        ax.set_xscale("log", base=2)
        ticks = sorted(all_cores)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.minorticks_off()
        ax.plot([], [], color="grey", linestyle=":", label="workers alone (no front limit)")
        ax.plot(
            [],
            [],
            linestyle="none",
            marker="o",
            markerfacecolor="white",
            markeredgecolor="grey",
            markersize=10,
            label="bound by the front",
        )
        ax.legend(fontsize=8, loc="upper left")
    else:
        _no_data(ax, "no projection (CPU costs unknown)")
    ax.set_xlabel("cores (one front, the rest workers)")
    ax.set_ylabel("projected GB/s of raw output")
    ax.set_title("Scaling projection from measured CPU cost per role")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    fig.savefig(path)


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.caption { color: #555; font-size: 0.85em; margin: 0 0 1.5em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em; }
dt { font-weight: 600; }
"""


def _html_lines(text: str) -> str:
    """Escaped text whose line breaks become ``<br>``."""
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def _html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]
) -> str:
    head = "".join(f"<th>{_html_lines(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(cell)}</td>' if num else f"<td>{html.escape(cell)}</td>"
            for cell, num in zip(row, numeric, strict=True)
        )
        + "</tr>\n"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _metadata_html(metadata: dict[str, Any]) -> str:
    keys = (
        "zplex",
        "python",
        "zstd",
        "python_zstandard",
        "pyzmq",
        "libzmq",
        "cpu_model",
        "cores",
        "usable_cores",
        "platform",
        "time",
    )
    items = [(k, metadata[k]) for k in keys if metadata.get(k) is not None]
    config = metadata.get("config")
    if config:
        items.append(("config", ", ".join(f"{k}={v}" for k, v in config.items())))
    return (
        "<dl>"
        + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items)
        + "</dl>\n"
    )


def render_html(result: BenchResult, images: Sequence[str] = PLOTS) -> str:
    """The report page: metadata, one table per workload, projections, then the plots."""
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>zplex bench report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        "<h1>zplex bench report</h1>\n",
        _metadata_html(result.metadata),
    ]
    numeric = [c.numeric for c in COLUMNS]
    for workload, runs in runs_by_workload(result).items():
        headers, rows = table_rows(runs)
        parts.append(f"<h2>workload {esc(workload)}</h2>\n")
        parts.append(_html_table(headers, rows, numeric))
        parts.append(f'<p class="caption">{_html_lines(workload_caption(runs))}</p>\n')
    if result.projection:
        headers, rows = projection_table(result.projection)
        parts.append("<h2>scaling projection</h2>\n")
        parts.append(
            "<p>One front on one core, the other cores running workers, from the measured CPU "
            "cost per GB of each role.</p>\n"
        )
        parts.append(_html_table(headers, rows, [True] * len(headers)))
        captions = "\n".join(projection_caption(p) for p in result.projection)
        parts.append(f'<p class="caption">{_html_lines(captions)}</p>\n')
    parts.append("<h2>plots</h2>\n")
    for name in images:
        alt = name.removesuffix(".png").replace("_", " ")
        parts.append(f'<img src="{esc(name)}" alt="{esc(alt)}">\n')
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def write_report(result: BenchResult, directory: Path | str) -> list[Path]:
    """Write the four PNG plots and ``index.html`` into ``directory`` (created if needed);
    returns the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    writers = (_plot_ratio, _plot_cpu, _plot_latency, _plot_projection)
    written = []
    for name, writer in zip(PLOTS, writers, strict=True):
        writer(result, out / name)
        written.append(out / name)
    index = out / "index.html"
    index.write_text(render_html(result), encoding="utf-8")
    written.append(index)
    return written
