"""Scoring an arm's answer against the baseline's: by a reference answer, or by a judge.

Each prompt gives each arm an outcome against the aggregator alone (the baseline): `WIN`
(1), `TIE` (0.5) or `LOSS` (0); the win rate is their mean (`moa_graph.evaluation.stats`).

- **With a reference answer** each answer gets a score from 0 to 1, by `exact_match` or a
  scorer of yours (`Scorer`); the higher score wins, equal scores tie. A failed call scores 0.
- **Without one** a pairwise LLM judge compares the two answers twice, the arm's first and
  then the baseline's first (`PairwiseJudge`). It decides the pair only when both orders
  agree; when they disagree (the judge preferred a position, not an answer) it is a tie
  (`swapped_outcome`). A failed call loses to an answer; two failed calls tie.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from moa_graph.config import ModelSpec
from moa_graph.evaluation import prompts
from moa_graph.evaluation.results import add_counts, message_counts, no_usage
from moa_graph.usage import UsageCounts

__all__ = [
    "LOSS",
    "TIE",
    "WIN",
    "JudgedPair",
    "PairwiseJudge",
    "Scorer",
    "Verdict",
    "exact_match",
    "normalise",
    "outcome_of_scores",
    "parse_verdict",
    "score_answer",
    "swapped_outcome",
]

WIN, TIE, LOSS = 1.0, 0.5, 0.0
"""An arm's outcome on one prompt against the baseline; ties count half."""

Verdict = Literal["A", "B", "tie"]
"""What the judge said of one ordering: answer A is better, answer B is, or neither."""

Scorer = Callable[[str, str], bool | float]
"""`scorer(answer, reference)`: True/False, or a score from 0 to 1 (higher is better)."""

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_EDGE_PUNCTUATION = " .!?,;:'\"()[]"
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_VERDICTS: dict[str, Verdict] = {"A": "A", "B": "B", "C": "tie"}


def normalise(text: str) -> str:
    """Text as exact match compares it: NFKC, case-folded, no emphasis marks, one space.

    Example:
        >>> normalise("  **Paris**. ")
        'paris'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[*_`]", "", text)
    return " ".join(text.split()).strip(_EDGE_PUNCTUATION)


def exact_match(answer: str, reference: str) -> bool:
    """Whether `answer` gives `reference`, after `normalise`.

    A numeric reference is compared with the answer's last number, by value (`14.0` is
    `14`, `1,024` is `1024`), as GSM8K-style evaluations read a worked answer; any other
    reference must equal the whole normalised answer.

    Example:
        >>> exact_match("17 * 23 = 391.", "391")
        True
        >>> exact_match("The capital is Paris.", "Paris")
        False
    """
    expected = normalise(reference)
    wanted = _number(expected) if _NUMBER.fullmatch(expected) else None
    if wanted is None:
        return normalise(answer) == expected
    numbers = _NUMBER.findall(unicodedata.normalize("NFKC", answer))
    return bool(numbers) and _number(numbers[-1]) == wanted


def score_answer(answer: str | None, reference: str, scorer: Scorer | None = None) -> float:
    """An answer's score from 0 to 1: `scorer(answer, reference)`, else `exact_match`.

    A failed call (`answer` None) scores 0.

    Raises:
        ValueError: The scorer returned something other than a bool or a number from 0 to 1.
    """
    if answer is None:
        return 0.0
    value = (scorer or exact_match)(answer, reference)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"the scorer returned {value!r}: expected a bool or a number from 0 to 1")


def outcome_of_scores(arm: float, baseline: float) -> float:
    """`WIN` when the arm scored higher than the baseline, `LOSS` when lower, else `TIE`."""
    return WIN if arm > baseline else LOSS if arm < baseline else TIE


def parse_verdict(text: str) -> Verdict | None:
    """The judge's last `[[A]]`, `[[B]]` or `[[C]]` (a tie); None when it gave none.

    Example:
        >>> parse_verdict("B misreads the question. [[A]]")
        'A'
    """
    found = _VERDICT.findall(text)
    return _VERDICTS[found[-1]] if found else None


def swapped_outcome(arm_first: Verdict | None, arm_second: Verdict | None) -> float:
    """The arm's outcome from the two orderings of one pair.

    Args:
        arm_first: The verdict with the arm's answer as A and the baseline's as B.
        arm_second: The verdict with the baseline's answer as A and the arm's as B.

    Returns:
        `WIN` when both orderings prefer the arm's answer, `LOSS` when both prefer the
        baseline's, else `TIE` (the orderings disagree, either says tie, or a verdict is
        missing).

    Example:
        >>> swapped_outcome("A", "A")  # the judge always picked the first answer
        0.5
    """
    if arm_first == "A" and arm_second == "B":
        return WIN
    if arm_first == "B" and arm_second == "A":
        return LOSS
    return TIE


@dataclass(frozen=True)
class JudgedPair:
    """One pair judged in both orders."""

    outcome: float
    """The arm's outcome against the baseline (`swapped_outcome`)."""
    verdicts: tuple[Verdict | None, Verdict | None]
    """(arm shown first, arm shown second); None: that call gave no verdict or failed."""
    usage: UsageCounts
    """The judge's calls for this pair."""
    latency_ms: float
    """Wall time of both calls."""
    error: str | None = None
    """The first judge call's failure, if any (`Type: message`)."""


class PairwiseJudge:
    """An LLM judge of two answers to one question, position-swapped.

    Example:
        >>> judge = PairwiseJudge(ChatOpenAI(model="gpt-4o"))  # doctest: +SKIP
        >>> (await judge.compare("What is 2 + 3?", "5", "6")).outcome  # doctest: +SKIP
        1.0
    """

    def __init__(self, model: BaseChatModel, *, spec: ModelSpec | None = None) -> None:
        """A judge asking `model`.

        Args:
            model: The judge's chat model (temperature 0 is a good choice).
            spec: The model's `ModelSpec`, when it has one: its label names the judge and its
                prices give the judge's cost (None: unpriced, named after the model class).
        """
        self.model = model
        self.spec = spec
        self.label = spec.label if spec else type(model).__name__

    async def averdict(
        self, question: str, answer_a: str, answer_b: str
    ) -> tuple[Verdict | None, UsageCounts]:
        """Ask the judge once, in this order; its verdict (None: none given) and usage."""
        reply = await self.model.ainvoke(
            [
                SystemMessage(prompts.JUDGE_SYSTEM_PROMPT),
                HumanMessage(
                    prompts.JUDGE_PAIR_PROMPT.format(
                        question=question, answer_a=answer_a, answer_b=answer_b
                    )
                ),
            ]
        )
        return parse_verdict(reply.text), message_counts(reply, self.spec)

    async def compare(self, question: str, arm: str | None, baseline: str | None) -> JudgedPair:
        """Judge the arm's answer against the baseline's, in both orders.

        Failed calls (`None`) are not shown to the judge: one loses to an answer, two tie.
        A judge call that fails leaves its verdict None (so the pair ties) and is reported
        in `error`.
        """
        if arm is None or baseline is None:
            outcome = TIE if arm is None and baseline is None else LOSS if arm is None else WIN
            return JudgedPair(outcome, (None, None), no_usage(), 0.0)
        started = time.perf_counter()
        verdicts: list[Verdict | None] = []
        usage = no_usage()
        error: str | None = None
        for first, second in ((arm, baseline), (baseline, arm)):
            try:
                verdict, used = await self.averdict(question, first, second)
            except Exception as exc:  # a judge failure is recorded, never fatal to the run
                verdict, used = None, no_usage(calls=1)
                error = error or f"{type(exc).__name__}: {exc}"
            verdicts.append(verdict)
            usage = add_counts(usage, used)
        return JudgedPair(
            swapped_outcome(verdicts[0], verdicts[1]),
            (verdicts[0], verdicts[1]),
            usage,
            (time.perf_counter() - started) * 1000,
            error,
        )


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
