"""``zplex bench --threshold EXPR``: pass/fail criteria over the run's figures, as k6 has.

An expression is ``POLICY.FIGURE OP VALUE``: ``FIGURE`` is one of the numbers of a run in the
JSON (:func:`bench.results.figure_names`), dotted into nested objects (``ratio_vs_request``,
``latency_ms.p99``, ``cpu_s_per_gb.front``, ``requests_per_s``, ``error_count``), ``OP`` one of
``>= <= > < == !=``. A misspelt figure is refused when the expression is parsed, before the
run. It is checked against the ``POLICY`` run of every workload; a figure this run could not
measure (null, or its policy did not run) is "not measured", which fails like a threshold not
met: either makes the exit status 1.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from bench.results import POLICIES, RunResult, figure_names

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_EXPRESSION = re.compile(
    r"^\s*(?P<policy>[a-z]+)\.(?P<figure>[a-z0-9_.]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+0-9.eE]+|inf)\s*$"
)
#: The figures an expression may name.
FIGURES = figure_names()


class ThresholdError(ValueError):
    """A threshold expression that cannot be parsed."""


@dataclasses.dataclass(frozen=True)
class Threshold:
    expression: str
    policy: str
    figure: str
    op: str
    value: float


@dataclasses.dataclass(frozen=True)
class ThresholdCheck:
    """One threshold against one workload's run (``workload`` None: its policy did not run):
    the figure found (None: not measured) and whether it is met."""

    threshold: Threshold
    workload: str | None
    actual: float | None
    met: bool

    def describe(self) -> str:
        expression = self.threshold.expression
        if self.workload is None:
            return f"{expression}: not measured (no {self.threshold.policy} run finished)"
        if self.actual is None:
            return f"{expression} on {self.workload}: not measured"
        verdict = "met" if self.met else "NOT MET"
        return f"{expression} on {self.workload}: {self.actual:g} -> {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.threshold.expression,
            "workload": self.workload,
            "actual": self.actual,
            "met": self.met,
        }


def parse_threshold(text: str) -> Threshold:
    """``stream.ratio_vs_request>=2`` -> :class:`Threshold` (:class:`ThresholdError`, whose
    message names the flag, if it is bad)."""
    match = _EXPRESSION.match(text)
    if match is None:
        raise ThresholdError(
            f"--threshold {text!r}: expected POLICY.FIGURE OP VALUE, e.g. "
            "stream.ratio_vs_request>=2 or stream.latency_ms.p99<50"
        )
    policy, figure = match["policy"], match["figure"]
    if policy not in POLICIES:
        raise ThresholdError(
            f"--threshold {text!r}: unknown policy {policy!r} (the policies: {', '.join(POLICIES)})"
        )
    if figure not in FIGURES:
        close = difflib.get_close_matches(figure, FIGURES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ThresholdError(
            f"--threshold {text!r}: unknown figure {figure!r}{hint} (the figures: "
            f"{', '.join(FIGURES)})"
        )
    try:
        value = float(match["value"])
    except ValueError:
        raise ThresholdError(f"--threshold {text!r}: {match['value']!r} is not a number") from None
    return Threshold(text.strip(), policy, figure, match["op"], value)


def figure_of(run: RunResult, figure: str) -> float | None:
    """The run's figure at the dotted path ``figure`` in its JSON (None if missing, null or
    not a number); ``error_count`` is the run's errors summed."""
    if figure == "error_count":
        return float(run.error_count)
    node: Any = run.to_json()
    for part in figure.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node) if math.isfinite(node) else None


def check_thresholds(
    thresholds: Sequence[Threshold], runs: Sequence[RunResult]
) -> list[ThresholdCheck]:
    """Each threshold against its policy's run of every workload; a threshold whose policy
    did not run (an interrupted run) is one check, not measured."""
    checks: list[ThresholdCheck] = []
    for threshold in thresholds:
        matching = [run for run in runs if run.policy == threshold.policy]
        if not matching:
            checks.append(ThresholdCheck(threshold, None, None, False))
        for run in matching:
            actual = figure_of(run, threshold.figure)
            met = actual is not None and OPERATORS[threshold.op](actual, threshold.value)
            checks.append(ThresholdCheck(threshold, run.workload, actual, met))
    return checks
