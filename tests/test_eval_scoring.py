"""Scoring against the baseline: exact match, a scorer, and the position-swapped judge."""

import asyncio

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from moa_graph.evaluation import prompts
from moa_graph.evaluation.scoring import (
    LOSS,
    TIE,
    WIN,
    PairwiseJudge,
    exact_match,
    outcome_of_scores,
    parse_verdict,
    score_answer,
    swapped_outcome,
)


class Judge(BaseChatModel):
    """A fake judge: `prefer(answer_a, answer_b)` returns "A", "B" or "C"; records prompts."""

    prefer: object
    seen: list = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-judge"

    def _generate(self, messages: list[BaseMessage], *args, **kwargs) -> ChatResult:
        text = messages[-1].content
        answer_a = text.split("[Answer A]\n")[1].split("\n[End of answer A]")[0]
        answer_b = text.split("[Answer B]\n")[1].split("\n[End of answer B]")[0]
        self.seen.append((answer_a, answer_b))
        verdict = self.prefer(answer_a, answer_b)
        message = AIMessage(
            content=f"Reasons. [[{verdict}]]",
            usage_metadata={"input_tokens": 100, "output_tokens": 5, "total_tokens": 105},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def _right_one(answer_a: str, answer_b: str) -> str:
    """A fair judge of "what is 6 * 7": whichever answer says 42."""
    a, b = "42" in answer_a, "42" in answer_b
    return "A" if a and not b else "B" if b and not a else "C"


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ('[solver] Answer to "What is 17 * 23?". 17 * 23 = 391.', "391", True),
        ("3.5 * 4 = 14.0", "14", True),
        ("2 ** 10 is 1,024.", "1024", True),
        ("It is -5.", "-5", True),
        ("391? No: the answer is 390.", "391", False),  # the last number is the answer
        ("No number here.", "391", False),
        ("  **Paris**. ", "paris", True),
        ("The capital is Paris.", "Paris", False),  # a text reference is the whole answer
    ],
)
def test_exact_match_normalises_and_reads_a_numbers_last_mention(answer, reference, expected):
    assert exact_match(answer, reference) is expected


def test_a_failed_call_scores_zero_and_a_scorer_replaces_exact_match():
    assert score_answer(None, "391") == 0.0
    assert score_answer("about 400", "391", lambda a, r: 0.25) == 0.25
    assert score_answer("391", "391", lambda a, r: False) == 0.0
    with pytest.raises(ValueError, match="from 0 to 1"):
        score_answer("391", "391", lambda a, r: 2)


def test_the_higher_score_wins_and_equal_scores_tie():
    assert outcome_of_scores(1.0, 0.0) == WIN
    assert outcome_of_scores(0.0, 1.0) == LOSS
    assert outcome_of_scores(1.0, 1.0) == TIE


def test_the_judges_last_verdict_counts():
    assert parse_verdict("[[B]] at first, but on reflection [[A]]") == "A"
    assert parse_verdict("a tie: [[C]]") == "tie"
    assert parse_verdict("I cannot decide.") is None


@pytest.mark.parametrize(
    ("arm_first", "arm_second", "expected"),
    [
        ("A", "B", WIN),  # the arm's answer preferred in both orders
        ("B", "A", LOSS),  # the baseline's preferred in both orders
        ("A", "A", TIE),  # the judge preferred the first position, not an answer
        ("B", "B", TIE),  # ... or the second
        ("tie", "B", TIE),
        ("A", "tie", TIE),
        ("tie", "tie", TIE),
        (None, "B", TIE),  # one ordering gave no verdict
    ],
)
def test_a_pair_is_decided_only_when_both_orders_agree(arm_first, arm_second, expected):
    assert swapped_outcome(arm_first, arm_second) == expected


def test_the_judge_sees_each_pair_in_both_orders():
    judge = PairwiseJudge(Judge(prefer=_right_one, seen=[]))
    pair = asyncio.run(judge.compare("What is 6 * 7?", "It is 42.", "It is 41."))
    assert judge.model.seen == [("It is 42.", "It is 41."), ("It is 41.", "It is 42.")]
    assert pair.verdicts == ("A", "B")
    assert pair.outcome == WIN
    assert pair.usage["calls"] == 2 and pair.usage["input_tokens"] == 200


def test_a_fair_judge_decides_and_a_position_biased_one_only_ties():
    fair = PairwiseJudge(Judge(prefer=_right_one, seen=[]))
    biased = PairwiseJudge(Judge(prefer=lambda a, b: "A", seen=[]))
    question = "What is 6 * 7?"
    assert asyncio.run(fair.compare(question, "41", "42")).outcome == LOSS
    assert asyncio.run(fair.compare(question, "42", "42")).outcome == TIE
    for arm, baseline in [("42", "41"), ("41", "42")]:
        pair = asyncio.run(biased.compare(question, arm, baseline))
        assert pair.verdicts == ("A", "A")
        assert pair.outcome == TIE


def test_a_failed_answer_loses_without_asking_the_judge():
    model = Judge(prefer=_right_one, seen=[])
    judge = PairwiseJudge(model)
    assert asyncio.run(judge.compare("q", None, "42")).outcome == LOSS
    assert asyncio.run(judge.compare("q", "42", None)).outcome == WIN
    assert asyncio.run(judge.compare("q", None, None)).outcome == TIE
    assert model.seen == []


def test_a_failing_judge_call_makes_the_pair_a_tie_and_says_why():
    def broken(answer_a: str, answer_b: str) -> str:
        raise RuntimeError("judge is down")

    pair = asyncio.run(PairwiseJudge(Judge(prefer=broken, seen=[])).compare("q", "42", "41"))
    assert pair.outcome == TIE
    assert pair.verdicts == (None, None)
    assert pair.error == "RuntimeError: judge is down"


def test_the_judge_prompt_asks_for_the_verdicts_it_parses():
    for verdict in (prompts.VERDICT_A, prompts.VERDICT_B, prompts.VERDICT_TIE):
        assert verdict in prompts.JUDGE_SYSTEM_PROMPT
        assert parse_verdict(verdict) is not None
