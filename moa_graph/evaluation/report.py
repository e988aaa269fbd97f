"""The evaluation's report: a Markdown table, the JSON record and a win-rate-vs-cost plot.

`write_report(result, out_dir)` writes `report.md`, `report.json` and
`win_rate_vs_cost.png`. The plot needs matplotlib (the `bench` extra, part of `test`),
imported only here, when a plot is drawn; without it the other two files are still written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moa_graph.evaluation.results import ArmSummary, EvalResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "JSON_NAME",
    "MARKDOWN_NAME",
    "PLOT_NAME",
    "ReportFiles",
    "markdown_report",
    "plot_win_rate_vs_cost",
    "write_report",
]

MARKDOWN_NAME = "report.md"
JSON_NAME = "report.json"
PLOT_NAME = "win_rate_vs_cost.png"
_NO_MATPLOTLIB = "no plot: matplotlib is not installed (pip install 'moa-graph[bench]')"
_BASELINE_COLOUR, _ARM_COLOUR = "#dd8452", "#4c72b0"


@dataclass(frozen=True)
class ReportFiles:
    """The files `write_report` wrote."""

    markdown: Path
    json: Path
    plot: Path | None
    """None: matplotlib is not installed."""


def write_report(result: EvalResult, out_dir: str | Path) -> ReportFiles:
    """Write the Markdown report, the JSON record and the plot into `out_dir` (created).

    Example:
        >>> write_report(evaluate(...), "eval-out").markdown  # doctest: +SKIP
        PosixPath('eval-out/report.md')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot: Path | None = out / PLOT_NAME
    try:
        figure = plot_win_rate_vs_cost(result)
    except ImportError:
        plot = None
    else:
        figure.savefig(out / PLOT_NAME, format="png")
    markdown = out / MARKDOWN_NAME
    markdown.write_text(markdown_report(result, plot=plot.name if plot else None), "utf-8")
    record = out / JSON_NAME
    record.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    return ReportFiles(markdown=markdown, json=record, plot=plot)


def markdown_report(result: EvalResult, *, plot: str | None = None) -> str:
    """The report as Markdown: what ran, one row per arm, the run's totals and notes.

    Args:
        result: The evaluation.
        plot: The plot's file name, linked under the table (None: no plot).
    """
    percent = f"{result.confidence:.0%}"
    baseline = result.arm(result.baseline)
    lines = [
        f"# MoA evaluation: preset `{result.preset}` on `{result.dataset}`",
        "",
        f"{baseline.prompts} prompts, {len(result.arms)} arms, scored by {result.scoring}. "
        f"Each arm is compared with the baseline `{result.baseline}` "
        f"({baseline.description}) prompt by prompt: the win rate is the share of prompts "
        f"on which its answer beat the baseline's, ties counted half, with a {percent} "
        f"percentile bootstrap interval ({result.resamples} resamples, seed {result.seed}). "
        "0.5 means no better and no worse.",
        "",
        f"| arm | what it runs | win rate vs {result.baseline} [{percent} CI] | W / T / L "
        "| accuracy | cost / prompt | p50 latency | p99 latency | calls / prompt | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(arm) for arm in result.arms),
        "",
        _totals(result),
    ]
    if plot:
        lines += ["", f"![win rate vs cost per prompt]({plot})"]
    if result.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def plot_win_rate_vs_cost(result: EvalResult) -> Figure:
    """Each arm's win rate (with its interval) against its cost per prompt.

    When some arm has no price the x axis is calls per prompt instead (its label says so).

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.figure import Figure

    priced = all(arm.cost_per_prompt_usd is not None for arm in result.arms)
    figure = Figure(figsize=(7.0, 4.2), dpi=80, layout="constrained")
    axes = figure.subplots()
    points = sorted(
        (
            ((arm.cost_per_prompt_usd if priced else arm.calls_per_prompt) or 0.0, arm)
            for arm in result.arms
        ),
        key=lambda point: point[0],
    )
    others = [arm.name for _, arm in points if arm.name != result.baseline]
    for x, arm in points:
        y = 0.5 if arm.win_rate is None else arm.win_rate
        low, high = arm.win_rate_ci or (y, y)
        baseline = arm.name == result.baseline
        axes.errorbar(
            x,
            y,
            yerr=[[y - low], [high - y]],
            fmt="D" if baseline else "o",
            color=_BASELINE_COLOUR if baseline else _ARM_COLOUR,
            capsize=4,
            label=f"baseline: {arm.name} ({arm.description})" if baseline else None,
        )
        if not baseline:  # neighbours alternate above and below: close arms stay readable
            above = others.index(arm.name) % 2 == 0
            offset = (6, 7) if above else (6, -13)
            axes.annotate(arm.name, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    axes.legend(loc="upper left", fontsize=8)
    costs = [x for x, _ in points]
    if priced and min(costs) > 0 and max(costs) / min(costs) > 20:
        axes.set_xscale("log")  # arms' costs differ by orders of magnitude
    else:
        axes.set_xlim(left=0, right=max(costs) * 1.3 or 1.0)
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    axes.set_ylim(-0.05, 1.05)
    axes.margins(x=0.15)
    axes.set_xlabel(
        "cost per prompt (USD)" if priced else "calls per prompt (some models unpriced)"
    )
    axes.set_ylabel(f"win rate vs {result.baseline}")
    percent = f"{result.confidence:.0%}"
    axes.set_title(f"{result.preset} on {result.dataset}: win rate ({percent} CI) vs cost")
    axes.grid(alpha=0.3)
    return figure


def _row(arm: ArmSummary) -> str:
    if arm.win_rate is None or arm.win_rate_ci is None:
        rate, record = "baseline", "–"
    else:
        low, high = arm.win_rate_ci
        rate = f"{arm.win_rate:.2f} [{low:.2f}, {high:.2f}]"
        record = f"{arm.wins} / {arm.ties} / {arm.losses}"
    cells = [
        f"`{arm.name}`",
        arm.description,
        rate,
        record,
        "–" if arm.accuracy is None else f"{arm.accuracy:.0%}",
        _usd(arm.cost_per_prompt_usd),
        f"{arm.p50_latency_ms:.0f} ms",
        f"{arm.p99_latency_ms:.0f} ms",
        f"{arm.calls_per_prompt:.1f}",
        str(arm.failures),
    ]
    return "| " + " | ".join(cells) + " |"


def _totals(result: EvalResult) -> str:
    line = f"The run made {result.total_calls} model calls"
    if result.judge is not None:
        line += f" ({result.judge.usage['calls']} of them the judge's, {result.judge.label})"
    cost = result.total_cost_usd
    line += f", cost {_usd(cost)}" if cost is not None else ", cost unknown (unpriced models)"
    return line + f", and took {result.wall_time_s:.1f} s."


def _usd(value: float | None) -> str:
    """Dollars to three significant digits, in fixed notation ($0.000950, $1.23)."""
    if value is None:
        return "n/a"
    if value <= 0:
        return "$0"
    decimals = max(2, 2 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"
