"""The PNG plots of a :class:`~bench.results.BenchResult`: compression ratio by policy, CPU
per GB by role, latency CDF and scaling projection. They use matplotlib's Agg canvas directly
(no pyplot, no global backend state), so they work without a display and from any thread.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.results import POLICIES, BenchResult
from bench.tables import runs_by_workload

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


#: Marker of the role that bounds a projected point.
BOUND_MARKERS = {"workers": "o", "front": "s", "client": "^"}


def _plot_projection(result: BenchResult, path: Path) -> None:
    fig = _new_figure(7.5, 4.6)
    ax = fig.add_subplot()
    drawn = False
    all_cores: set[int] = set()
    for i, projection in enumerate(result.projection):
        colour = f"C{i % 10}"
        for rows, style, where in (
            (projection.rows, "-", "clients elsewhere"),
            (projection.rows_with_clients, "--", "clients on the host"),
        ):
            points = [row for row in rows if row["gb_per_s"] is not None]
            if not points:
                continue
            cores = [row["cores"] for row in points]
            all_cores.update(cores)
            ax.plot(
                cores,
                [row["gb_per_s"] for row in points],
                color=colour,
                linestyle=style,
                label=f"{projection.workload} ({projection.policy}), {where}",
            )
            for role, marker in BOUND_MARKERS.items():
                bound = [row for row in points if row["bound"] == role]
                if bound:
                    ax.plot(
                        [row["cores"] for row in bound],
                        [row["gb_per_s"] for row in bound],
                        linestyle="none",
                        marker=marker,
                        color=colour,
                        markerfacecolor="white" if style == "--" else colour,
                    )
            drawn = True
        measured = _measured_point(result, projection.workload, projection.policy)
        if measured is not None:
            ax.plot(
                [measured[0]],
                [measured[1]],
                linestyle="none",
                marker="*",
                markersize=14,
                color=colour,
                markeredgecolor="black",
            )
            all_cores.add(measured[0])
    if drawn:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted(all_cores)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.minorticks_off()
        for role, marker in BOUND_MARKERS.items():
            ax.plot([], [], linestyle="none", marker=marker, color="grey", label=f"{role}-bound")
        ax.plot(
            [],
            [],
            linestyle="none",
            marker="*",
            markersize=12,
            color="grey",
            markeredgecolor="black",
            label="measured (this run)",
        )
        ax.legend(fontsize=7, loc="upper left")
    else:
        _no_data(ax, "no projection (CPU costs unknown)")
    ax.set_xlabel("cores (split between fronts, workers and clients for the most GB/s; log scale)")
    ax.set_ylabel("projected GB/s of raw output (log scale)")
    ax.set_title(
        "Scaling projection: computed from the measured CPU per GB of each role\n"
        "(lines are a projection, not measurements; stars are measured)",
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    fig.savefig(path)


def _measured_point(result: BenchResult, workload: str, policy: str) -> tuple[int, float] | None:
    """(cores, GB/s) the projected run measured: its server's workers plus its fronts."""
    workers = (result.metadata.get("server") or {}).get("workers")
    fronts = result.metadata.get("fronts")
    run = next((r for r in result.runs if r.workload == workload and r.policy == policy), None)
    if not isinstance(workers, int) or run is None or not run.raw_mb_per_s:
        return None
    return workers + (fronts if isinstance(fronts, int) else 1), run.raw_mb_per_s / 1000


def write_plots(result: BenchResult, directory: Path) -> list[Path]:
    """Write the :data:`PLOTS` into ``directory``; returns their paths."""
    writers = (_plot_ratio, _plot_cpu, _plot_latency, _plot_projection)
    written = []
    for name, writer in zip(PLOTS, writers, strict=True):
        writer(result, directory / name)
        written.append(directory / name)
    return written
