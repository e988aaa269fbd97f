"""What an evaluation measured: each arm's answers, its summary, and the whole run.

`EvalResult` is what `evaluate` returns and what the report is written from;
`EvalResult.to_dict()` is the JSON report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_core.messages import BaseMessage

from moa_graph.config import ModelSpec
from moa_graph.evaluation.dataset import EvalItem
from moa_graph.evaluation.stats import bootstrap_ci, mean, percentile, win_rate
from moa_graph.usage import UsageCounts, call_usage

__all__ = [
    "ArmAnswer",
    "ArmKind",
    "ArmSummary",
    "EvalResult",
    "JudgeSummary",
    "add_counts",
    "message_counts",
    "no_usage",
]

ArmKind = Literal["moa", "aggregator", "reference", "self-moa"]
"""What an arm runs: the preset's MoA graph, one of its models alone, or Self-MoA."""


@dataclass(frozen=True)
class ArmAnswer:
    """One arm's answer to one prompt, and how it fared against the baseline's."""

    arm: str
    item_id: str
    text: str | None
    """The answer (None: the call failed)."""
    latency_ms: float
    """Wall time of the call, from the start of its request to its answer."""
    usage: UsageCounts
    """Every model call the answer took (a MoA answer: references and aggregator)."""
    error: str | None = None
    """Why the call failed, `Type: message` (API keys scrubbed)."""
    score: float | None = None
    """0 to 1 against the prompt's reference answer (None: the prompt has none)."""
    outcome: float | None = None
    """1 win, 0.5 tie, 0 loss against the baseline's answer (None: this is the baseline)."""
    verdicts: tuple[str | None, str | None] | None = None
    """The judge's verdicts (arm shown first, arm shown second), when a judge decided."""


@dataclass(frozen=True)
class ArmSummary:
    """One arm over the whole dataset: the report's row."""

    name: str
    kind: ArmKind
    description: str
    models: tuple[str, ...]
    """Labels of the models it calls (a sampled reference once per sample)."""
    prompts: int
    win_rate: float | None
    """Against the baseline, ties counted half (None: this is the baseline)."""
    win_rate_ci: tuple[float, float] | None
    """Percentile bootstrap interval of `win_rate` at the run's confidence."""
    wins: int
    ties: int
    losses: int
    accuracy: float | None
    """Mean score over the prompts with a reference answer (None: no prompt has one)."""
    cost_per_prompt_usd: float | None
    """Mean cost of a prompt's calls (None: a model of this arm has no price)."""
    p50_latency_ms: float
    p99_latency_ms: float
    calls_per_prompt: float
    input_tokens_per_prompt: float
    output_tokens_per_prompt: float
    failures: int
    """Prompts whose call failed (they score 0 and lose to an answer)."""

    @classmethod
    def of(
        cls,
        answers: Sequence[ArmAnswer],
        *,
        name: str,
        kind: ArmKind,
        description: str,
        models: tuple[str, ...],
        priced: bool,
        confidence: float,
        resamples: int,
        seed: int,
    ) -> ArmSummary:
        """Summarise one arm's answers (one per prompt, at least one)."""
        outcomes = [a.outcome for a in answers if a.outcome is not None]
        scores = [a.score for a in answers if a.score is not None]
        latencies = [a.latency_ms for a in answers]
        return cls(
            name=name,
            kind=kind,
            description=description,
            models=models,
            prompts=len(answers),
            win_rate=win_rate(outcomes) if outcomes else None,
            win_rate_ci=(
                bootstrap_ci(outcomes, confidence=confidence, resamples=resamples, seed=seed)
                if outcomes
                else None
            ),
            wins=sum(1 for o in outcomes if o == 1.0),
            ties=sum(1 for o in outcomes if o == 0.5),
            losses=sum(1 for o in outcomes if o == 0.0),
            accuracy=mean(scores) if scores else None,
            cost_per_prompt_usd=(
                mean([a.usage.get("cost_usd", 0.0) for a in answers]) if priced else None
            ),
            p50_latency_ms=percentile(latencies, 50),
            p99_latency_ms=percentile(latencies, 99),
            calls_per_prompt=mean([a.usage["calls"] for a in answers]),
            input_tokens_per_prompt=mean([a.usage["input_tokens"] for a in answers]),
            output_tokens_per_prompt=mean([a.usage["output_tokens"] for a in answers]),
            failures=sum(1 for a in answers if a.text is None),
        )


@dataclass(frozen=True)
class JudgeSummary:
    """The pairwise judge's share of the run."""

    label: str
    pairs: int
    """Pairs judged (each in both orders)."""
    usage: UsageCounts
    inconsistent: int
    """Pairs whose two orderings disagreed (counted as ties): the judge's position bias."""
    missing_verdicts: int
    """Judge calls that gave no `[[A]]`/`[[B]]`/`[[C]]` or failed (their pair is a tie)."""
    priced: bool


@dataclass(frozen=True)
class EvalResult:
    """A whole evaluation: the arms' summaries (the report) and every answer (the record).

    Example:
        >>> result = evaluate(bundled_dataset(), preset="demo", config=config)  # doctest: +SKIP
        >>> result.arm("moa").win_rate, result.arm("moa").cost_per_prompt_usd  # doctest: +SKIP
    """

    dataset: str
    preset: str
    baseline: str
    """The arm every other is compared with: the aggregator alone."""
    items: tuple[EvalItem, ...]
    """The dataset's prompts, in order (answers name them by `id`)."""
    scoring: str
    """How outcomes were decided: exact match, a scorer, the judge, or a mix."""
    arms: tuple[ArmSummary, ...]
    answers: tuple[ArmAnswer, ...]
    judge: JudgeSummary | None
    confidence: float
    resamples: int
    seed: int
    wall_time_s: float
    notes: tuple[str, ...] = field(default=())
    """Things the reader should know: unpriced models, failures, a biased judge."""

    def arm(self, name: str) -> ArmSummary:
        """The summary of arm `name`.

        Raises:
            KeyError: No arm has that name.
        """
        for summary in self.arms:
            if summary.name == name:
                return summary
        raise KeyError(f"no arm {name!r}; arms: {', '.join(a.name for a in self.arms)}")

    @property
    def total_cost_usd(self) -> float | None:
        """What the run cost, arms and judge (None: some model has no price)."""
        if any(a.cost_per_prompt_usd is None for a in self.arms):
            return None
        if self.judge is not None and not self.judge.priced:
            return None
        total = sum(a.usage.get("cost_usd", 0.0) for a in self.answers)
        return total + (self.judge.usage.get("cost_usd", 0.0) if self.judge else 0.0)

    @property
    def total_calls(self) -> int:
        """Model calls the run made, arms and judge."""
        calls = sum(a.usage["calls"] for a in self.answers)
        return calls + (self.judge.usage["calls"] if self.judge else 0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: everything above, plus the run's totals."""
        data = asdict(self)
        data["total_cost_usd"] = self.total_cost_usd
        data["total_calls"] = self.total_calls
        return data


def no_usage(*, calls: int = 0) -> UsageCounts:
    """Counts of no tokens (`calls` failed calls)."""
    return UsageCounts(calls=calls, input_tokens=0, output_tokens=0, cached_input_tokens=0)


def add_counts(a: UsageCounts, b: UsageCounts) -> UsageCounts:
    """Calls, tokens and cost of `a` and `b` together (a cost when either has one)."""
    total = UsageCounts(
        calls=a["calls"] + b["calls"],
        input_tokens=a["input_tokens"] + b["input_tokens"],
        output_tokens=a["output_tokens"] + b["output_tokens"],
        cached_input_tokens=a["cached_input_tokens"] + b["cached_input_tokens"],
    )
    if "cost_usd" in a or "cost_usd" in b:
        total["cost_usd"] = a.get("cost_usd", 0.0) + b.get("cost_usd", 0.0)
    return total


def message_counts(message: BaseMessage, spec: ModelSpec | None) -> UsageCounts:
    """One call's counts from its reply's `usage_metadata`, priced by `spec` when given."""
    if spec is not None:
        return call_usage("reference", spec, message)["total"]
    meta: dict[str, Any] = dict(getattr(message, "usage_metadata", None) or {})
    details = meta.get("input_token_details") or {}
    return UsageCounts(
        calls=1,
        input_tokens=int(meta.get("input_tokens") or 0),
        output_tokens=int(meta.get("output_tokens") or 0),
        cached_input_tokens=int(details.get("cache_read") or 0),
    )
