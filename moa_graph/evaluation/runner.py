"""`evaluate`: run a dataset through a preset's arms and compare each with the aggregator.

Every prompt goes to every arm (`moa_graph.evaluation.arms`), at most `concurrency` calls
at a time, each bounded by `call_timeout_s` on top of its models' own timeouts. Then each
arm's answer is scored against the aggregator alone's (`moa_graph.evaluation.scoring`): by
the prompt's reference answer (exact match, or your scorer), else by the position-swapped
pairwise judge. The result holds each arm's win rate with its bootstrap interval, cost per
prompt, latency percentiles and calls (`EvalResult`); `moa_graph.evaluation.report` writes
it out.

Example:
    >>> from moa_graph.evaluation import bundled_dataset, evaluate  # doctest: +SKIP
    >>> result = evaluate(bundled_dataset(), preset="review", config="moa.yaml")
    >>> result.arm("moa").win_rate_ci
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

from langchain_core.language_models import BaseChatModel

from moa_graph.config import MoAConfig, ModelSpec, Preset, load_config
from moa_graph.errors import ConfigError
from moa_graph.evaluation.arms import BASELINE, Arm, ArmCall, arm_caller, preset_arms, select_arms
from moa_graph.evaluation.dataset import Dataset, EvalItem, load_dataset
from moa_graph.evaluation.results import (
    ArmAnswer,
    ArmSummary,
    EvalResult,
    JudgeSummary,
    add_counts,
    no_usage,
)
from moa_graph.evaluation.scoring import (
    TIE,
    JudgedPair,
    PairwiseJudge,
    Scorer,
    outcome_of_scores,
    score_answer,
)
from moa_graph.evaluation.stats import DEFAULT_RESAMPLES
from moa_graph.prices import is_priced, price_note
from moa_graph.providers import ModelFactory, default_model_factory, missing_api_keys, scrub_secrets

__all__ = ["DEFAULT_CALL_TIMEOUT_S", "DEFAULT_CONCURRENCY", "aevaluate", "evaluate"]

DEFAULT_CONCURRENCY = 8
"""Arm and judge calls in flight at once (a MoA call counts once, whatever its fan-out)."""
DEFAULT_CALL_TIMEOUT_S = 900.0
"""A call still running after this long fails (each request is bounded by its model's
`timeout` already; this bounds retries and a MoA turn's layers together)."""
_ERROR_CHARS = 300

_P = ParamSpec("_P")
_R = TypeVar("_R")
JudgeLike = ModelSpec | BaseChatModel | PairwiseJudge


async def aevaluate(
    dataset: Dataset | str | os.PathLike[str],
    *,
    preset: Preset | str | None = None,
    config: MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None,
    arms: Sequence[str] | None = None,
    judge: JudgeLike | None = None,
    scorer: Scorer | None = None,
    model_factory: ModelFactory | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
    seed: int = 0,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
) -> EvalResult:
    """Evaluate a preset's arms on a dataset (see `evaluate`, its blocking twin)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    loaded = _config(config, preset)
    chosen = preset if isinstance(preset, Preset) else _require(loaded).preset(preset)
    selected = select_arms(preset_arms(chosen), arms)
    the_judge = _judge(judge, data, loaded, model_factory)
    _check_keys(selected, the_judge, loaded, model_factory)

    started = time.perf_counter()
    slots = asyncio.Semaphore(concurrency)
    callers = {
        arm.name: arm_caller(arm, config=loaded, model_factory=model_factory) for arm in selected
    }
    asked = [(item, arm) for item in data for arm in selected]
    replies = await asyncio.gather(
        *(_ask(callers[arm.name], item, arm.name, slots, call_timeout_s) for item, arm in asked)
    )
    answers = {(a.item_id, a.arm): a for a in replies}
    pairs = await _judged(data, selected, answers, the_judge, slots, call_timeout_s)
    scored = [
        _scored(answers[item.id, arm.name], answers[item.id, BASELINE], item, scorer, pairs)
        for item in data
        for arm in selected
    ]
    summaries = tuple(
        ArmSummary.of(
            [a for a in scored if a.arm == arm.name],
            name=arm.name,
            kind=arm.kind,
            description=arm.description,
            models=tuple(spec.label for spec in arm.models),
            priced=all(is_priced(spec) for spec in arm.models),
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        for arm in selected
    )
    judge_summary = _judge_summary(the_judge, pairs)
    return EvalResult(
        dataset=data.name,
        preset=chosen.name,
        baseline=BASELINE,
        items=data.items,
        scoring=_scoring(data, scorer, the_judge),
        arms=summaries,
        answers=tuple(scored),
        judge=judge_summary,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        wall_time_s=time.perf_counter() - started,
        notes=_notes(selected, summaries, scored, judge_summary, the_judge),
    )


def _blocking(function: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, _R]:
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        coroutine = function(*args, **kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        # Called from a running loop (a notebook cell): run it to the end in a thread.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    return run


evaluate = _blocking(aevaluate)
evaluate.__name__ = evaluate.__qualname__ = "evaluate"
evaluate.__doc__ = """Evaluate a preset's arms on a dataset; blocks until every call is done.

    Args:
        dataset: A `Dataset` or the path of a JSONL file (`load_dataset`).
        preset: A `Preset`, or the name of one in `config` (None: its default preset).
        config: A `MoAConfig`, or anything `load_config` takes (None: discovery).
        arms: Names of the arms to run (`preset_arms`: `moa`, `aggregator`, `ref:<label>`,
            `self-moa:<label>`); None: all. The baseline `aggregator` always runs.
        judge: The pairwise judge for prompts without a reference answer: a `ModelSpec`
            (built like the preset's models, priced), a chat model, or a `PairwiseJudge`.
        scorer: `scorer(answer, reference) -> bool | float` for prompts with a reference
            (None: `exact_match`).
        model_factory: Builds every chat model from its `ModelSpec` (None: the provider
            table of `config`).
        concurrency: Arm and judge calls in flight at once.
        call_timeout_s: Bound on each arm call and each judged pair (None: the models'
            own timeouts only); a call past it fails, and the run goes on.
        seed: Seeds the bootstrap.
        confidence: Nominal coverage of the win-rate intervals.
        resamples: Bootstrap resamples per interval.

    Returns:
        Each arm's summary and every answer (`EvalResult`).

    Raises:
        ConfigError: The config, the preset or an arm name is wrong, an API key is not
            set, or prompts without a reference answer have no judge.
        DatasetError: The dataset file is not valid.

    Example:
        >>> result = evaluate("data.jsonl", preset="review", config="moa.yaml")  # doctest: +SKIP
        >>> print(markdown_report(result))  # doctest: +SKIP

    From a running event loop, await `aevaluate` (same arguments) instead, or call this:
    it then runs the evaluation in a thread of its own.
    """


def _config(
    config: MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None,
    preset: Preset | str | None,
) -> MoAConfig | None:
    if isinstance(config, MoAConfig):
        return config
    if config is None and isinstance(preset, Preset):
        return None  # a preset built in code, on the built-in provider table
    return load_config(config)


def _require(config: MoAConfig | None) -> MoAConfig:
    if config is None:  # pragma: no cover - _config loads one unless a Preset was given
        raise ConfigError("a preset name needs a config")
    return config


def _judge(
    judge: JudgeLike | None,
    data: Dataset,
    config: MoAConfig | None,
    model_factory: ModelFactory | None,
) -> PairwiseJudge | None:
    unreferenced = sum(1 for item in data if item.reference is None)
    if judge is None:
        if unreferenced:
            raise ConfigError(
                f"{data.source or data.name}: {unreferenced} of {len(data)} prompts have no "
                "reference answer, so they need a judge (judge=ModelSpec(...), or --judge "
                "provider:model)"
            )
        return None
    if isinstance(judge, PairwiseJudge):
        return judge
    if isinstance(judge, BaseChatModel):
        return PairwiseJudge(judge)
    factory = model_factory or default_model_factory(
        config.providers if config else None, reference=False
    )
    return PairwiseJudge(factory(judge), spec=judge)


def _check_keys(
    arms: Sequence[Arm],
    judge: PairwiseJudge | None,
    config: MoAConfig | None,
    model_factory: ModelFactory | None,
) -> None:
    if model_factory is not None:
        return  # the caller's own models bring their own keys
    specs = [spec for arm in arms for spec in arm.models]
    specs += [judge.spec] if judge and judge.spec else []
    missing = missing_api_keys(specs, config.providers if config else None)
    if missing:
        raise ConfigError(f"environment variables not set: {', '.join(missing)} (the arms' keys)")


async def _ask(
    call: ArmCall,
    item: EvalItem,
    arm: str,
    slots: asyncio.Semaphore,
    timeout_s: float | None,
) -> ArmAnswer:
    async with slots:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                reply = await call(item.prompt)
        except Exception as exc:  # one failed call is a lost prompt, not a failed run
            elapsed = (time.perf_counter() - started) * 1000
            return ArmAnswer(arm, item.id, None, elapsed, no_usage(calls=1), _error(exc))
        elapsed = (time.perf_counter() - started) * 1000
    return ArmAnswer(arm, item.id, reply.text, elapsed, reply.usage)


async def _judged(
    data: Dataset,
    arms: Sequence[Arm],
    answers: Mapping[tuple[str, str], ArmAnswer],
    judge: PairwiseJudge | None,
    slots: asyncio.Semaphore,
    timeout_s: float | None,
) -> dict[tuple[str, str], JudgedPair]:
    """The judge's outcome for each (prompt without a reference, arm other than baseline)."""
    if judge is None:
        return {}
    keys = [
        (item, arm.name)
        for item in data
        if item.reference is None
        for arm in arms
        if arm.name != BASELINE
    ]

    async def compare(item: EvalItem, arm: str) -> JudgedPair:
        async with slots:
            try:
                async with asyncio.timeout(timeout_s):
                    return await judge.compare(
                        item.prompt, answers[item.id, arm].text, answers[item.id, BASELINE].text
                    )
            except Exception as exc:
                return JudgedPair(TIE, (None, None), no_usage(calls=1), 0.0, _error(exc))

    pairs = await asyncio.gather(*(compare(item, arm) for item, arm in keys))
    return {(item.id, arm): pair for (item, arm), pair in zip(keys, pairs, strict=True)}


def _scored(
    answer: ArmAnswer,
    baseline: ArmAnswer,
    item: EvalItem,
    scorer: Scorer | None,
    pairs: Mapping[tuple[str, str], JudgedPair],
) -> ArmAnswer:
    if item.reference is not None:
        score = score_answer(answer.text, item.reference, scorer)
        outcome = None
        if answer.arm != BASELINE:
            outcome = outcome_of_scores(score, score_answer(baseline.text, item.reference, scorer))
        return replace(answer, score=score, outcome=outcome)
    if answer.arm == BASELINE:
        return answer
    pair = pairs[item.id, answer.arm]
    return replace(answer, outcome=pair.outcome, verdicts=pair.verdicts)


def _judge_summary(
    judge: PairwiseJudge | None, pairs: Mapping[tuple[str, str], JudgedPair]
) -> JudgeSummary | None:
    if judge is None:
        return None
    usage = no_usage()
    for pair in pairs.values():
        usage = add_counts(usage, pair.usage)
    asked = [p for p in pairs.values() if p.usage["calls"]]
    return JudgeSummary(
        label=judge.label,
        pairs=len(asked),
        usage=usage,
        inconsistent=sum(
            1
            for p in asked
            if {p.verdicts[0], p.verdicts[1]} in ({"A"}, {"B"})  # the same position twice
        ),
        missing_verdicts=sum(v is None for p in asked for v in p.verdicts),
        priced=judge.spec is not None and is_priced(judge.spec),
    )


def _scoring(data: Dataset, scorer: Scorer | None, judge: PairwiseJudge | None) -> str:
    by_reference = (
        f"scorer {getattr(scorer, '__name__', type(scorer).__name__)}"
        if scorer
        else "exact match (normalised; a number: the answer's last number)"
    )
    by_judge = f"pairwise judge {judge.label} (position-swapped)" if judge else ""
    referenced = sum(1 for item in data if item.reference is not None)
    if referenced == len(data):
        return by_reference
    if referenced == 0:
        return by_judge
    return f"{by_reference} where a reference exists, else {by_judge}"


def _notes(
    arms: Sequence[Arm],
    summaries: Sequence[ArmSummary],
    answers: Sequence[ArmAnswer],
    judge: JudgeSummary | None,
    the_judge: PairwiseJudge | None,
) -> tuple[str, ...]:
    notes: list[str] = []
    specs = [spec for arm in arms for spec in arm.models]
    if the_judge and the_judge.spec:
        specs.append(the_judge.spec)
    unpriced = price_note(specs)
    if unpriced:
        notes.append(f"{unpriced}; the arms with such a model show no cost")
    for summary in summaries:
        if summary.failures:
            first = next(a.error for a in answers if a.arm == summary.name and a.error)
            notes.append(
                f"{summary.name}: {summary.failures} of {summary.prompts} calls failed "
                f"(they score 0); the first: {first}"
            )
    if judge and judge.inconsistent:
        notes.append(
            f"the judge picked the same position in both orders on {judge.inconsistent} of "
            f"{judge.pairs} pairs (counted as ties)"
        )
    if judge and judge.missing_verdicts:
        notes.append(
            f"{judge.missing_verdicts} judge calls gave no verdict or failed (their pairs tie)"
        )
    return tuple(notes)


def _error(exc: BaseException) -> str:
    text = " ".join(scrub_secrets(f"{type(exc).__name__}: {exc}").split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."
