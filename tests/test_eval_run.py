"""`evaluate` end to end: the arms of a preset on the stand-in, scored against the aggregator.

What each stand-in model answers is set by its behaviour (`offline_eval_models`: the default
policy works out written sums; the guesser always says 42), so every number below follows
from those behaviours, and changing one changes the report.
"""

import asyncio
import time

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from moa_graph import ConfigError, ModelSpec, Preset, load_config
from moa_graph.evaluation import (
    Dataset,
    bundled_dataset,
    evaluate,
    offline_eval_config,
    offline_eval_models,
)
from moa_graph.evaluation.runner import aevaluate
from moa_graph.testing import StubServer

WORD_PROBLEMS = 4  # of the bundled twelve, the stand-in's policy cannot read these
ARMS = ["moa", "aggregator", "ref:stub:solver", "ref:stub:guesser", "self-moa:stub:solver"]


@pytest.fixture(scope="module")
def stand_in():
    with StubServer(models=offline_eval_models(latency_scale=0)) as url:
        yield url


@pytest.fixture(scope="module")
def offline_result(stand_in):
    return evaluate(bundled_dataset(), config=offline_eval_config(stand_in))


def test_every_arm_of_the_preset_runs_every_prompt(offline_result):
    assert [arm.name for arm in offline_result.arms] == ARMS
    assert all(arm.prompts == 12 and arm.failures == 0 for arm in offline_result.arms)
    assert len(offline_result.answers) == 12 * len(ARMS)


def test_the_aggregator_alone_is_right_on_the_written_sums_only(offline_result):
    baseline = offline_result.arm("aggregator")
    assert baseline.win_rate is None  # it is the baseline
    assert baseline.accuracy == pytest.approx((12 - WORD_PROBLEMS) / 12)


def test_the_scripted_guesser_loses_to_the_aggregator_but_wins_its_lucky_prompt(offline_result):
    guesser = offline_result.arm("ref:stub:guesser")
    # Right only on "six times seven" (where the aggregator is wrong), wrong on the eight
    # written sums (where it is right), wrong with it on the other three word problems.
    assert (guesser.wins, guesser.ties, guesser.losses) == (1, 3, 8)
    assert guesser.win_rate == pytest.approx((1 + 3 / 2) / 12)
    low, high = guesser.win_rate_ci
    assert low < guesser.win_rate < high < 0.5  # reliably worse than the baseline
    lucky = next(
        a for a in offline_result.answers if a.arm == "ref:stub:guesser" and a.outcome == 1.0
    )
    assert lucky.item_id == "words-42"


def test_arms_that_answer_like_the_aggregator_tie_it_on_every_prompt(offline_result):
    for name in ("moa", "ref:stub:solver", "self-moa:stub:solver"):
        arm = offline_result.arm(name)
        assert (arm.wins, arm.ties, arm.losses) == (0, 12, 0), name
        assert arm.win_rate_ci == (0.5, 0.5)


def test_cost_and_calls_follow_what_each_arm_runs(offline_result):
    arm = offline_result.arm
    # moa: two solver samples, the guesser, the aggregator; Self-MoA: two samples + aggregator.
    assert arm("moa").calls_per_prompt == 4
    assert arm("self-moa:stub:solver").calls_per_prompt == 3
    assert arm("aggregator").calls_per_prompt == 1
    costs = {name: arm(name).cost_per_prompt_usd for name in ARMS}
    assert costs["moa"] > costs["self-moa:stub:solver"] > costs["aggregator"]
    assert costs["aggregator"] > costs["ref:stub:solver"] > costs["ref:stub:guesser"] > 0
    total = sum(a.usage["cost_usd"] for a in offline_result.answers)
    assert offline_result.total_cost_usd == pytest.approx(total)
    assert offline_result.total_calls == 12 * (4 + 1 + 1 + 1 + 3)


def test_latency_percentiles_measure_the_calls():
    slow = {**offline_eval_models(latency_scale=0), "solver": {"latency": 0.15}}
    with StubServer(models=slow) as url:
        result = evaluate(
            bundled_dataset(), config=offline_eval_config(url), arms=["ref:stub:solver"]
        )
    solver, baseline = result.arm("ref:stub:solver"), result.arm("aggregator")
    assert 150 <= solver.p50_latency_ms <= solver.p99_latency_ms < 2000
    assert baseline.p50_latency_ms < 150


def test_the_stand_in_received_each_arms_requests():
    stub = StubServer(models=offline_eval_models(latency_scale=0))
    url = stub.start()
    try:
        evaluate(bundled_dataset(), config=offline_eval_config(url))
        stats = stub.stats()
    finally:
        stub.stop()
    # solver: alone, and two samples in each of moa and self-moa; guesser: alone and in moa;
    # aggregator: alone (the baseline), in moa and in self-moa. Twelve prompts each time.
    assert stats == {"solver": 12 * 5, "guesser": 12 * 2, "aggregator": 12 * 3}


def test_a_model_scripted_wrong_makes_its_arm_lose(stand_in):
    behaviours = {**offline_eval_models(latency_scale=0), "solver": {"reply": "I am not sure."}}
    with StubServer(models=behaviours) as url:
        result = evaluate(
            bundled_dataset(), config=offline_eval_config(url), arms=["ref:stub:solver", "moa"]
        )
    solver = result.arm("ref:stub:solver")
    assert (solver.wins, solver.ties, solver.losses) == (0, WORD_PROBLEMS, 12 - WORD_PROBLEMS)
    assert solver.win_rate_ci[1] < 0.5
    # The stand-in's aggregator answers from the question, so MoA is unaffected.
    assert result.arm("moa").ties == 12


def test_a_failing_reference_counts_as_lost_prompts_and_is_noted(stand_in):
    behaviours = {
        **offline_eval_models(latency_scale=0),
        "guesser": {"fault": {"kind": "status", "status": 503}},
    }
    with StubServer(models=behaviours) as url:
        config = _one_preset(url, {"provider": "stub", "model": "guesser", "max_retries": 0})
        result = evaluate(bundled_dataset(), config=config, arms=["ref:stub:guesser"])
    guesser = result.arm("ref:stub:guesser")
    assert guesser.failures == 12
    assert (guesser.wins, guesser.ties, guesser.losses) == (0, WORD_PROBLEMS, 8)
    assert any("ref:stub:guesser: 12 of 12 calls failed" in note for note in result.notes)
    assert all("503" in a.error for a in result.answers if a.arm == "ref:stub:guesser")


def test_a_hanging_model_is_cut_at_the_call_timeout(stand_in):
    behaviours = {
        **offline_eval_models(latency_scale=0),
        "guesser": {"fault": {"kind": "hang", "hang_s": 30}},
    }
    dataset = Dataset.of([{"prompt": "What is 2 + 3?", "reference": "5"}])
    with StubServer(models=behaviours) as url:
        config = _one_preset(url, {"provider": "stub", "model": "guesser", "max_retries": 0})
        started = time.monotonic()
        result = evaluate(dataset, config=config, arms=["ref:stub:guesser"], call_timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 5
    (hung,) = [a for a in result.answers if a.arm == "ref:stub:guesser"]
    assert hung.text is None and hung.error.startswith("TimeoutError")
    assert 500 <= hung.latency_ms < 2000


def test_calls_in_flight_never_exceed_the_concurrency_limit():
    model = Tracked()
    preset = Preset(
        name="p",
        reference_models=[ModelSpec(provider="fake", model="r")],
        aggregator=ModelSpec(provider="fake", model="a"),
    )
    dataset = Dataset.of([{"prompt": f"q{i}", "reference": "x"} for i in range(10)])
    evaluate(
        dataset,
        preset=preset,
        arms=["ref:fake:r"],
        model_factory=lambda spec: model,
        concurrency=3,
    )
    assert len(model.calls) == 20  # 10 prompts, 2 arms
    assert model.peak == 3


def test_prompts_without_references_are_decided_by_the_judge(stand_in):
    dataset = Dataset.of(
        [{"prompt": "What is 17 * 23?"}, {"prompt": "What is 2 ** 10?"}], name="open"
    )
    fair = Fair()
    result = evaluate(
        dataset,
        config=offline_eval_config(stand_in),
        arms=["ref:stub:guesser", "ref:stub:solver"],
        judge=fair,
    )
    assert result.arm("ref:stub:guesser").losses == 2  # "42" against a worked answer
    assert result.arm("ref:stub:solver").ties == 2  # the same worked answer
    assert result.judge.pairs == 4 and result.judge.usage["calls"] == 8
    assert result.judge.inconsistent == 0
    assert "pairwise judge" in result.scoring


def test_a_position_biased_judge_only_produces_ties_and_a_note(stand_in):
    dataset = Dataset.of([{"prompt": "What is 17 * 23?"}, {"prompt": "What is 2 ** 10?"}])
    result = evaluate(
        dataset,
        config=offline_eval_config(stand_in),
        arms=["ref:stub:guesser"],
        judge=ModelSpec(provider="stub", model="judge"),  # always [[A]]
    )
    guesser = result.arm("ref:stub:guesser")
    assert (guesser.wins, guesser.ties, guesser.losses) == (0, 2, 0)
    assert result.judge.inconsistent == 2
    assert any("same position in both orders on 2 of 2 pairs" in n for n in result.notes)


def test_prompts_without_references_and_no_judge_are_a_config_error(stand_in):
    dataset = Dataset.of([{"prompt": "Write a haiku."}], name="poems")
    with pytest.raises(ConfigError, match="poems: 1 of 1 prompts have no reference answer"):
        evaluate(dataset, config=offline_eval_config(stand_in))


def test_an_unknown_arm_is_a_config_error_listing_the_arms(stand_in):
    with pytest.raises(ConfigError, match=r"no arm 'ref:solver'.*ref:stub:solver"):
        evaluate(bundled_dataset(), config=offline_eval_config(stand_in), arms=["ref:solver"])


def test_a_missing_api_key_is_caught_before_any_call(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = load_config(
        {
            "moa": {
                "presets": {
                    "p": {
                        "reference_models": [{"provider": "openai", "model": "gpt-4o"}],
                        "aggregator": {"provider": "openai", "model": "gpt-4o"},
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        evaluate(bundled_dataset(), config=config)


async def test_evaluate_works_from_a_running_event_loop(stand_in):
    dataset = Dataset.of([{"prompt": "What is 2 + 3?", "reference": "5"}])
    config = offline_eval_config(stand_in)
    blocking = evaluate(dataset, config=config, arms=["ref:stub:solver"])  # in a thread
    awaited = await aevaluate(dataset, config=config, arms=["ref:stub:solver"])
    assert blocking.arm("aggregator").accuracy == awaited.arm("aggregator").accuracy == 1.0


def test_the_same_seed_gives_the_same_report(stand_in):
    config = offline_eval_config(stand_in)
    first = evaluate(bundled_dataset(), config=config, arms=["ref:stub:guesser"], seed=3)
    again = evaluate(bundled_dataset(), config=config, arms=["ref:stub:guesser"], seed=3)
    assert first.arm("ref:stub:guesser").win_rate_ci == again.arm("ref:stub:guesser").win_rate_ci


def _one_preset(url, reference):
    return load_config(
        {
            "moa": {
                "providers": {"stub": {"base_url": url}},
                "presets": {
                    "p": {
                        "reference_models": [reference],
                        "aggregator": {"provider": "stub", "model": "aggregator"},
                    }
                },
            }
        }
    )


class Tracked(BaseChatModel):
    """Answers "x" after a short wait; counts the calls in flight at once."""

    calls: list = Field(default_factory=list)
    active: int = 0
    peak: int = 0

    @property
    def _llm_type(self) -> str:
        return "fake-tracked"

    def _generate(self, *args, **kwargs) -> ChatResult:  # pragma: no cover - async only
        raise NotImplementedError

    async def _agenerate(self, messages: list[BaseMessage], *args, **kwargs) -> ChatResult:
        self.calls.append(messages)
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.02)
        self.active -= 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="x"))])


class Fair(BaseChatModel):
    """A judge that prefers the answer that works the sum out (has an `=`)."""

    @property
    def _llm_type(self) -> str:
        return "fake-fair-judge"

    def _generate(self, messages: list[BaseMessage], *args, **kwargs) -> ChatResult:
        text = messages[-1].content
        answer_a = text.split("[Answer A]")[1].split("[End of answer A]")[0]
        answer_b = text.split("[Answer B]")[1].split("[End of answer B]")[0]
        a, b = "=" in answer_a, "=" in answer_b
        verdict = "A" if a and not b else "B" if b and not a else "C"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=f"[[{verdict}]]"))])
