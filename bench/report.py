"""The report of a :class:`~bench.results.BenchResult`: an ``index.html`` showing the tables
(the same rows as the terminal's, from :mod:`bench.tables`) and the plots of
:mod:`bench.plots`, written into one directory.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.plots import PLOTS, write_plots
from bench.results import BenchResult
from bench.tables import (
    COLUMNS,
    PROJECTION_SPLIT,
    headline,
    projected,
    projection_caption,
    projection_table,
    runs_by_workload,
    table_rows,
    workload_caption,
)

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
p.headline { font-weight: 600; margin: 0.2em 0; }
ul.warnings { color: #8a4b00; font-size: 0.9em; }
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


def render_html(
    result: BenchResult, images: Sequence[str] = PLOTS, warnings: Sequence[str] = ()
) -> str:
    """The report page: metadata, the run's warnings, one table per workload with its
    headline, projections, then the plots."""
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>zplex bench report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        "<h1>zplex bench report</h1>\n",
        _metadata_html(result.metadata),
    ]
    if warnings:
        items = "".join(f"<li>{esc(warning)}</li>\n" for warning in warnings)
        parts.append(f'<h2>warnings</h2>\n<ul class="warnings">\n{items}</ul>\n')
    numeric = [c.numeric for c in COLUMNS]
    projections = {p.workload: p for p in result.projection}
    for workload, runs in runs_by_workload(result).items():
        headers, rows = table_rows(runs)
        parts.append(f"<h2>workload {esc(workload)}</h2>\n")
        parts.append(_html_table(headers, rows, numeric))
        line = headline(runs, projections.get(workload))
        if line:
            parts.append(f'<p class="headline">{esc(line)}</p>\n')
        parts.append(f'<p class="caption">{_html_lines(workload_caption(runs))}</p>\n')
    known, unknown = projected(result)
    if result.projection:
        parts.append("<h2>scaling projection</h2>\n")
    if known:
        headers, rows = projection_table(known)
        split = PROJECTION_SPLIT[0].upper() + PROJECTION_SPLIT[1:]
        parts.append(f"<p>{esc(split)}, from the measured CPU per GB of each role.</p>\n")
        parts.append(_html_table(headers, rows, [True] * len(headers)))
        captions = "\n".join(projection_caption(p) for p in known)
        parts.append(f'<p class="caption">{_html_lines(captions)}</p>\n')
    if unknown:
        parts.append(f"<p>{esc(unknown)}</p>\n")
    parts.append("<h2>plots</h2>\n")
    for name in images:
        alt = name.removesuffix(".png").replace("_", " ")
        parts.append(f'<img src="{esc(name)}" alt="{esc(alt)}">\n')
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def write_report(
    result: BenchResult, directory: Path | str, warnings: Sequence[str] = ()
) -> list[Path]:
    """Write the four PNG plots and ``index.html`` (with the run's ``warnings``) into
    ``directory`` (created if needed); returns the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = write_plots(result, out)
    index = out / "index.html"
    index.write_text(render_html(result, warnings=warnings), encoding="utf-8")
    written.append(index)
    return written
