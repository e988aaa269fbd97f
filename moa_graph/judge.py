"""The judge stage: one model compares the references' answers before the aggregator acts.

With `judge: {model: ...}` on a preset, after the last layer's references (and only when
at least one answered) the judge is sent the references' view of the conversation and the
successful answers, **anonymised** (`Answer 1`, `Answer 2`, ...: no labels) and in a
**shuffled order** (seeded by the preset and the turn's question, so the same turn is shown
the same way by every front-end, and recorded as `order`), against position bias. It
returns structured output (`JudgeFindings`: a ranking, points of consensus,
contradictions, and what each answer missed), which is mapped back to the references'
labels (`Judgement`) and joins the aggregator's guidance, quoted as data like the answers.

A judge that fails, times out (`timeout_s`) or returns nothing usable leaves the guidance
as it would be without one, plus a line saying the judge failed. Its call has its own run
name (`moa_judge:<label>`), tags (`moa:judge`, kept out of `messages` streams), a
`moa_judge` event and its own line in `usage` (role `judge`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables.config import ContextThreadPoolExecutor
from pydantic import BaseModel, Field

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.events import emit
from moa_graph.failures import describe_error
from moa_graph.models import PresetModels, judge_config
from moa_graph.privacy import model_text
from moa_graph.quoting import quote_answers
from moa_graph.state import Judgement, ReferenceAnswer, layer_answers
from moa_graph.trimming import last_human_index, message_text
from moa_graph.turn import judges
from moa_graph.usage import Usage, call_usage

__all__ = [
    "JudgeFindings",
    "Judgement",
    "MissedPoint",
    "ajudge",
    "judge",
    "judge_input",
    "shown_order",
]

_T = TypeVar("_T")
_ITEMS = 20
"""At most this many points per list are kept from the judge's reply."""
_ITEM_CHARS = 2000
"""Characters of each point kept (the judge's reply is untrusted text, like an answer)."""


class MissedPoint(BaseModel):
    """What one answer missed."""

    answer: int = Field(description="The answer's number, as shown (1 for Answer 1).")
    missed: str = Field(description="What that answer missed or got wrong, in one sentence.")


class JudgeFindings(BaseModel):
    """The judge's structured reply."""

    ranking: list[int] = Field(description="The answers' numbers, best first.")
    consensus: list[str] = Field(description="Points most answers agree on.")
    contradictions: list[str] = Field(description="Points where answers disagree.")
    missed: list[MissedPoint] = Field(description="What each answer missed.")


def shown_order(preset: Preset, view: Sequence[BaseMessage], answers: Sequence[int]) -> list[int]:
    """`answers` (reference indices) shuffled by a seed of the preset and the turn's question."""
    at = last_human_index(view)
    question = message_text(view[at]) if at is not None else ""
    seed = hashlib.sha256(f"{preset.name}\n{question}".encode()).hexdigest()
    order = list(answers)
    random.Random(seed).shuffle(order)
    return order


def judge_input(
    preset: Preset,
    view: Sequence[BaseMessage],
    references: Sequence[ReferenceAnswer],
    order: Sequence[int],
    raw: dict[str, str] | None,
) -> list[BaseMessage]:
    """What the judge is sent: its prompt, the references' view, the answers anonymised."""
    by_index = {ref["index"]: ref for ref in references}
    shown = [(f"Answer {n}", model_text(by_index[i], raw)) for n, i in enumerate(order, 1)]
    nonce, quoted = quote_answers(shown, limit=preset.max_reference_chars, purpose="judge")
    answers = "\n\n".join(
        prompts.JUDGE_ANSWER.format(number=n, text=block) for n, block in enumerate(quoted, 1)
    )
    prompt = prompts.JUDGE_PROMPT.format(
        count=len(order), quoting=prompts.QUOTED_ANSWERS.format(id=nonce), answers=answers
    )
    return [SystemMessage(content=prompts.JUDGE_SYSTEM_PROMPT), *view, HumanMessage(prompt)]


def judge(
    models: PresetModels,
    view: Sequence[BaseMessage],
    references: Sequence[ReferenceAnswer],
    raw: dict[str, str] | None,
) -> tuple[Judgement | None, Usage | None]:
    """Run the judge (sync) on the last layer's answers; None when it has nothing to judge."""
    asked = _Asked.start(models, view, references, raw)
    if asked is None:
        return None, None
    try:
        model = asked.models.judge()  # built here: a judge that cannot be built fails alone
        reply = _within(asked.timeout, lambda: model.invoke(asked.messages, asked.config))
    except Exception as exc:
        return asked.failed(exc)
    return asked.done(reply)


async def ajudge(
    models: PresetModels,
    view: Sequence[BaseMessage],
    references: Sequence[ReferenceAnswer],
    raw: dict[str, str] | None,
) -> tuple[Judgement | None, Usage | None]:
    """Run the judge (async); a timeout cancels its request."""
    asked = _Asked.start(models, view, references, raw)
    if asked is None:
        return None, None
    try:
        call = asked.models.judge().ainvoke(asked.messages, asked.config)
        reply = await asyncio.wait_for(call, timeout=asked.timeout)
    except Exception as exc:
        return asked.failed(exc)
    return asked.done(reply)


class _Asked:
    """One judge call, shared by the sync and async runners."""

    def __init__(self, models: PresetModels, messages: list[BaseMessage], order: list[int]) -> None:
        spec = models.preset.judge
        assert spec is not None
        self.spec, self.timeout = spec.model, spec.timeout_s
        self.models, self.messages, self.order = models, messages, order
        self.config = judge_config(spec.model)
        self.labels = {ref.index: ref.label for ref in models.slots}
        self.started = time.perf_counter()
        _event("running", self.spec.label, None)

    @classmethod
    def start(
        cls,
        models: PresetModels,
        view: Sequence[BaseMessage],
        references: Sequence[ReferenceAnswer],
        raw: dict[str, str] | None,
    ) -> _Asked | None:
        if not judges(models.preset.judge is not None, references):
            return None
        last = [ref for ref in layer_answers(references) if ref["status"] == "ok"]
        order = shown_order(models.preset, view, [ref["index"] for ref in last])
        return cls(models, judge_input(models.preset, view, last, order, raw), order)

    def done(self, reply: Any) -> tuple[Judgement | None, Usage | None]:
        """The judgement of a reply (`{"raw", "parsed", "parsing_error"}`)."""
        message, parsed = reply.get("raw"), reply.get("parsed")
        usage = call_usage("judge", self.spec, message)
        if not isinstance(parsed, JudgeFindings):
            error = reply.get("parsing_error") or ValueError("no structured findings")
            return self._failed(error, reason=prompts.JUDGE_UNREADABLE), usage
        number = {n: self.labels[i] for n, i in enumerate(self.order, 1)}
        ranking = list(dict.fromkeys(number[n] for n in parsed.ranking if n in number))
        judgement = self._judgement("ok")
        judgement["ranking"] = ranking
        judgement["consensus"] = _points(parsed.consensus)
        judgement["contradictions"] = _points(parsed.contradictions)
        judgement["missed"] = {
            number[point.answer]: point.missed[:_ITEM_CHARS]
            for point in parsed.missed[:_ITEMS]
            if point.answer in number
        }
        _event("ok", self.spec.label, judgement["latency_ms"])
        return judgement, usage

    def failed(self, exc: BaseException) -> tuple[Judgement | None, Usage | None]:
        """The judgement of a failed or timed-out call."""
        # A reply that is not the findings' JSON fails as a ValueError (a JSON, pydantic or
        # output-parser error); a provider's failure does not.
        reason = prompts.JUDGE_UNREADABLE if isinstance(exc, ValueError) else None
        failed = self._failed(exc, reason=reason or prompts.JUDGE_CALL_FAILED)
        return failed, call_usage("judge", self.spec, None)

    def _failed(self, exc: BaseException, *, reason: str = prompts.JUDGE_CALL_FAILED) -> Judgement:
        judgement = self._judgement("failed")
        if isinstance(exc, TimeoutError | FutureTimeout):
            judgement["error"] = reason = f"timed out after {self.timeout:g}s"
        else:
            judgement["error"] = describe_error(exc)
        # The guidance names a fixed reason: the error's text may hold the judge's reply or
        # the provider's error body, untrusted text outside any quoted block.
        judgement["reason"] = reason
        _event("failed", self.spec.label, judgement["latency_ms"])
        return judgement

    def _judgement(self, status: Literal["ok", "failed"]) -> Judgement:
        return Judgement(
            status=status,
            label=self.spec.label,
            order=self.order,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 1),
        )


def _points(items: Sequence[str]) -> list[str]:
    return [str(item)[:_ITEM_CHARS] for item in items[:_ITEMS]]


def _event(
    status: Literal["running", "ok", "failed"], label: str, latency_ms: float | None
) -> None:
    emit({"type": "moa_judge", "status": status, "label": label, "latency_ms": latency_ms})


def _within(seconds: float, call: Callable[[], _T]) -> _T:
    pool = ContextThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
