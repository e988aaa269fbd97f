"""Evaluation: is a MoA preset worth its cost? An A/B run of its arms on a dataset.

`evaluate(dataset, preset=..., config=...)` asks every prompt of a JSONL dataset of every
arm of a preset (the MoA graph, the aggregator alone, each reference alone, Self-MoA), scores
each arm against the aggregator alone (exact match or your scorer when the prompt has a
reference answer, else a position-swapped pairwise judge) and returns per arm the win rate
with a bootstrap interval, cost per prompt, p50/p99 latency and calls. `write_report` turns
the result into Markdown, JSON and a win-rate-vs-cost plot; `moa-graph eval` does both.

Example:
    >>> from moa_graph.evaluation import bundled_dataset, evaluate, write_report
    >>> from moa_graph.evaluation import offline_eval_config, offline_eval_models
    >>> from moa_graph.testing import StubServer
    >>> with StubServer(models=offline_eval_models()) as url:  # doctest: +SKIP
    ...     result = evaluate(bundled_dataset(), config=offline_eval_config(url))
    >>> write_report(result, "eval-out")  # doctest: +SKIP

Names are imported on first use, so `moa-graph --help` (which imports the CLI's parser from
`moa_graph.evaluation.cli`) loads no model code.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa_graph.evaluation.arms import BASELINE, Arm, preset_arms
    from moa_graph.evaluation.dataset import (
        Dataset,
        DatasetError,
        EvalItem,
        bundled_dataset,
        load_dataset,
    )
    from moa_graph.evaluation.offline import (
        OFFLINE_EVAL_PRESET,
        OFFLINE_JUDGE,
        offline_eval_config,
        offline_eval_models,
    )
    from moa_graph.evaluation.report import (
        ReportFiles,
        markdown_report,
        plot_win_rate_vs_cost,
        write_report,
    )
    from moa_graph.evaluation.results import ArmAnswer, ArmSummary, EvalResult, JudgeSummary
    from moa_graph.evaluation.runner import aevaluate, evaluate
    from moa_graph.evaluation.scoring import PairwiseJudge, Scorer, exact_match
    from moa_graph.evaluation.stats import bootstrap_ci, percentile, win_rate

__all__ = [
    "BASELINE",
    "OFFLINE_EVAL_PRESET",
    "OFFLINE_JUDGE",
    "Arm",
    "ArmAnswer",
    "ArmSummary",
    "Dataset",
    "DatasetError",
    "EvalItem",
    "EvalResult",
    "JudgeSummary",
    "PairwiseJudge",
    "ReportFiles",
    "Scorer",
    "aevaluate",
    "bootstrap_ci",
    "bundled_dataset",
    "evaluate",
    "exact_match",
    "load_dataset",
    "markdown_report",
    "offline_eval_config",
    "offline_eval_models",
    "percentile",
    "plot_win_rate_vs_cost",
    "preset_arms",
    "win_rate",
    "write_report",
]

_HOMES = {
    "moa_graph.evaluation.arms": ("BASELINE", "Arm", "preset_arms"),
    "moa_graph.evaluation.dataset": (
        "Dataset",
        "DatasetError",
        "EvalItem",
        "bundled_dataset",
        "load_dataset",
    ),
    "moa_graph.evaluation.offline": (
        "OFFLINE_EVAL_PRESET",
        "OFFLINE_JUDGE",
        "offline_eval_config",
        "offline_eval_models",
    ),
    "moa_graph.evaluation.report": (
        "ReportFiles",
        "markdown_report",
        "plot_win_rate_vs_cost",
        "write_report",
    ),
    "moa_graph.evaluation.results": ("ArmAnswer", "ArmSummary", "EvalResult", "JudgeSummary"),
    "moa_graph.evaluation.runner": ("aevaluate", "evaluate"),
    "moa_graph.evaluation.scoring": ("PairwiseJudge", "Scorer", "exact_match"),
    "moa_graph.evaluation.stats": ("bootstrap_ci", "percentile", "win_rate"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'moa_graph.evaluation' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
