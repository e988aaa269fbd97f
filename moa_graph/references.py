"""Calling one reference slot: its input, its time limits and its outcome.

A slot is one call: a reference model with `samples: k` has k slots, labelled `#1`..`#k`.
The graph's `reference` node runs one slot per task; `moa_graph.panel` runs a whole panel
(every slot of every layer) for `MoAChatModel` and `MoAMiddleware`.

Every outcome is a `ReferenceAnswer`: an exception or a timeout becomes `failed`, a `moa`
provider is `skipped` without a call, an empty answer is marked, and an answer longer than
the preset's `max_reference_chars` is cut to it (with a marker) before anything keeps it.
Nothing here raises for a model.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.callbacks import Callbacks
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ContextThreadPoolExecutor

from moa_graph import direct, prompts
from moa_graph.config import ModelSpec, Preset
from moa_graph.events import emit
from moa_graph.failures import describe_error, exception_chain
from moa_graph.models import PresetModels, Slot, reference_config
from moa_graph.privacy import redact
from moa_graph.quorum import LimitReached, QuorumCut, quorum_for, report
from moa_graph.quoting import cap_reference, quote_answers
from moa_graph.state import ReferenceAnswer, ReferenceTask
from moa_graph.trimming import DEFAULT_OUTPUT_RESERVE, fit_to_window, message_text
from moa_graph.usage import Usage, call_usage

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "Outcome",
    "ReferenceProtocolError",
    "acall_reference",
    "advisor_input",
    "call_reference",
]

_BACKSTOP_GRACE_S = 1.0
"""How long past its budget a direct request is awaited (its own timeout ends it first)."""
_T = TypeVar("_T")
Status = Literal["ok", "failed", "skipped"]


class ReferenceProtocolError(Exception):
    """A reference replied, but not with advice (for instance with a tool call)."""


@dataclass
class Outcome:
    """What one slot produced.

    The answer is what people see; `raw` is the original text when the privacy filter
    redacted what people see.
    """

    answer: ReferenceAnswer
    usage: Usage | None
    raw: str | None = None


def call_reference(
    models: PresetModels, task: ReferenceTask, *, callbacks: Callbacks = None
) -> Outcome:
    """Run one slot (sync). A timeout stops the wait; the abandoned call ends on its own."""
    attempt = _Attempt(models, task, callbacks)
    if attempt.skipped is not None:
        return attempt.skipped
    try:
        model, messages, lean, plan = attempt.prepare()
        call: Callable[[], BaseMessage]
        if lean is not None:
            call = partial(direct.post, lean.root_client, attempt.spec, messages, **plan.request)
        else:
            call = partial(model.invoke, messages, config=attempt.config())
        if attempt.quorum is not None:
            reply = attempt.quorum.within(plan.wait, call)
        else:
            reply = call() if plan.wait is None else _within(plan.wait, call)
    except Exception as exc:
        return attempt.failed(exc)
    return attempt.answered(reply)


async def acall_reference(
    models: PresetModels, task: ReferenceTask, *, callbacks: Callbacks = None
) -> Outcome:
    """Run one slot (async). A timeout, or a quorum reached without it, cancels the request."""
    attempt = _Attempt(models, task, callbacks)
    if attempt.skipped is not None:
        return attempt.skipped
    try:
        model, messages, lean, plan = attempt.prepare()
        if lean is not None:
            call = direct.apost(lean.root_async_client, attempt.spec, messages, **plan.request)
        else:
            call = model.ainvoke(messages, config=attempt.config())
        if attempt.quorum is not None:
            try:
                reply = await attempt.quorum.awithin(plan.wait, call)
            except asyncio.CancelledError:  # the run was cancelled: the layer stops waiting
                report(task, ok=False)
                raise
        elif plan.wait is None:
            reply = await call
        else:
            try:
                reply = await asyncio.wait_for(call, timeout=plan.wait)
            except TimeoutError:
                raise _Timeout() from None
    except Exception as exc:
        return attempt.failed(exc)
    return attempt.answered(reply)


class _Timeout(Exception):
    """The slot's time limit ran out."""


@dataclass(frozen=True)
class _Limit:
    """How long a slot may still take, under its timeout and its fan-out's deadline."""

    left: float
    reported: float
    """The limit to name in the answer (`timed out after ...`)."""
    deadline: bool
    """A fan-out deadline applies: its answers must be in by then, so one attempt."""


@dataclass(frozen=True)
class _Plan:
    """How one call is bounded."""

    request: dict[str, Any] = field(default_factory=dict)
    """`timeout` / `max_retries` for a direct request (empty: the client's own)."""
    wait: float | None = None
    """How long the whole call is awaited (None: until it ends)."""
    limited_request: bool = False
    """The request's timeout is the time left: its timing out is the limit's."""


def _limit(preset: Preset, slot: Slot, task: ReferenceTask) -> _Limit | None:
    limits: list[tuple[float, float]] = []
    if slot.spec.reference_timeout_s is not None:
        timeout = slot.spec.reference_timeout_s
        limits.append((timeout, timeout))
    deadline_at, deadline = task.get("deadline_at"), preset.references_deadline_s
    if deadline_at is not None and deadline is not None:
        limits.append((deadline_at - time.time(), deadline))
    if not limits:
        return None
    left, reported = min(limits)
    return _Limit(left, reported, deadline=deadline_at is not None and deadline is not None)


def _plan(limit: _Limit | None, lean: ChatOpenAI | None) -> _Plan:
    """Bound a call by its limit; raises `_Timeout` when no time is left.

    A direct request gets the time left as its own timeout (unless its model's timeout is
    shorter), so an answer already on the socket is read even when the event loop is busy;
    waiting is only a backstop then. Under a fan-out deadline it is one attempt (a retry
    could not finish in time). A call through `ChatOpenAI` is simply awaited for the time left.
    """
    if limit is None:
        return _Plan()
    if limit.left <= 0:
        raise _Timeout()
    if lean is None:
        return _Plan(wait=limit.left)
    own = lean.request_timeout if isinstance(lean.request_timeout, int | float) else None
    request: dict[str, Any] = {"timeout": limit.left if own is None else min(own, limit.left)}
    if limit.deadline:
        request["max_retries"] = 0
    wait = limit.left + _BACKSTOP_GRACE_S if limit.deadline else limit.left
    return _Plan(request, wait, limited_request=request["timeout"] == limit.left)


def _lean(models: PresetModels, slot: Slot, callbacks: Callbacks) -> ChatOpenAI | None:
    """The `ChatOpenAI` to ask with one direct POST (`moa_graph.direct`), if it may be."""
    lean = models.direct_reference(slot.model_index)
    return None if lean is None or direct.is_observed(callbacks) else lean


def _within(seconds: float, call: Callable[[], _T]) -> _T:
    pool = ContextThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=seconds)
    except FutureTimeout:
        raise _Timeout() from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _Attempt:
    """One slot's call, shared by the sync and async runners: its start, bound and outcome.

    A `moa` reference is `skipped` at once; otherwise its start is announced here.
    """

    def __init__(self, models: PresetModels, task: ReferenceTask, callbacks: Callbacks) -> None:
        self.models, self.task, self.callbacks = models, task, callbacks
        self.slot, self.layer = models.slots[task["index"]], task.get("layer", 1)
        self.spec = self.slot.spec
        self.quorum = quorum_for(task)
        self.skipped: Outcome | None = None
        if task.get("skip"):  # left out of the fan-out (its budget)
            reason = str(task.get("skip"))
            self.skipped = self._done(_skipped(self.slot, self.layer, reason), None)
            return
        if self.spec.provider == "moa":
            self.skipped = self._done(_skipped(self.slot, self.layer), None)
            return
        _started(self.slot, self.layer)
        self.limit, self.plan = _limit(models.preset, self.slot, task), _Plan()
        self.started = time.perf_counter()

    def prepare(self) -> tuple[BaseChatModel, list[BaseMessage], ChatOpenAI | None, _Plan]:
        """The model, its input, the `ChatOpenAI` to ask directly (if any) and the bound."""
        model = self.models.reference(self.slot.model_index)
        self.started = time.perf_counter()  # the call's latency, not the model's construction
        lean = _lean(self.models, self.slot, self.callbacks)
        self.plan = _plan(self.limit, lean)
        limit = self.models.preset.max_reference_chars
        return model, advisor_input(self.task, self.spec, limit=limit), lean, self.plan

    def config(self) -> RunnableConfig:
        """The run config of a call through the model (`moa_reference:<label>`, tags)."""
        return _config(self.slot, self.layer, self.callbacks)

    def answered(self, reply: BaseMessage) -> Outcome:
        """The outcome of a reply."""
        limit = self.models.preset.max_reference_chars
        answer = _answered(self.slot, self.layer, reply, self.started, limit)
        return self._done(answer, _usage(self.slot, reply))

    def failed(self, exc: Exception) -> Outcome:
        """A failed or timed-out outcome: timed out when the slot's limit is what ran out."""
        plan = self.plan
        timed_out = isinstance(exc, _Timeout | LimitReached) or (
            plan.limited_request and _request_timed_out(exc)
        )
        if isinstance(exc, QuorumCut) and self.quorum is not None:
            answer = _cut(self.slot, self.layer, self.quorum.needed, self.started)
        elif self.limit is not None and timed_out:
            answer = _timed_out(self.slot, self.layer, self.limit.reported, self.started)
        else:
            answer = _failed(self.slot, self.layer, exc, self.started)
        return self._done(answer, call_usage("reference", self.spec, None))

    def _done(self, answer: ReferenceAnswer, usage: Usage | None) -> Outcome:
        outcome = _finish(self.models, answer, usage)
        if self.quorum is not None:
            report(self.task, ok=answer["status"] == "ok")
        return outcome


def _request_timed_out(exc: Exception) -> bool:
    # The aiohttp transport reports a dropped connection as a timeout too: a real timeout
    # has a TimeoutError (socket, aiohttp or anyio) somewhere under the client's error.
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(exc, openai.APITimeoutError):
        return False
    return any(isinstance(link, TimeoutError) for link in exception_chain(exc)[1:])


def _config(slot: Slot, layer: int, callbacks: Callbacks) -> RunnableConfig:
    config = reference_config(slot.index, slot.spec, label=slot.label, layer=layer)
    if callbacks is not None:
        config["callbacks"] = callbacks
    return config


def advisor_input(task: ReferenceTask, spec: ModelSpec, *, limit: int) -> list[BaseMessage]:
    """What one slot is sent: the advisor prompt, the view, and a layer's earlier answers.

    Fitted to the model's `context_window` (if set), leaving room for its answer.
    """
    messages: list[BaseMessage] = [SystemMessage(content=prompts.REFERENCE_SYSTEM_PROMPT)]
    messages += task["view"]
    previous = task.get("previous")
    if previous:
        # Cut to the limit again: a person may have edited `references` (Studio) since.
        nonce, quoted = quote_answers(previous, limit=limit, purpose="layer")
        answers = "\n\n".join(
            prompts.LAYER_ANSWER.format(label=label, text=block)
            for (label, _), block in zip(previous, quoted, strict=True)
        )
        quoting = prompts.QUOTED_ANSWERS.format(id=nonce)
        prompt = prompts.LAYER_PROMPT.format(quoting=quoting, answers=answers)
        messages.append(HumanMessage(content=prompt))
    if spec.context_window is not None:
        reserve = spec.max_tokens or DEFAULT_OUTPUT_RESERVE
        return fit_to_window(messages, context_window=spec.context_window, reserve=reserve)
    return messages


def _started(slot: Slot, layer: int) -> None:
    emit(
        {
            "type": "moa_reference",
            "index": slot.index,
            "label": slot.label,
            "status": "running",
            "latency_ms": None,
            "layer": layer,
        }
    )


def _finish(models: PresetModels, answer: ReferenceAnswer, usage: Usage | None) -> Outcome:
    emit(
        {
            "type": "moa_reference",
            "index": answer["index"],
            "label": answer["label"],
            "status": answer["status"],
            "latency_ms": answer.get("latency_ms"),
            "layer": answer.get("layer", 1),
        }
    )
    policy = models.preset.privacy_filter
    if policy == "off":
        return Outcome(answer, usage)
    original = answer["text"]
    answer["text"] = redact(original)
    keep = policy == "display" and answer["text"] != original
    return Outcome(answer, usage, original if keep else None)


def _usage(slot: Slot, reply: BaseMessage) -> Usage:
    return call_usage("reference", slot.spec, reply)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _answer(slot: Slot, layer: int, status: Status, text: str) -> ReferenceAnswer:
    return ReferenceAnswer(
        index=slot.index, label=slot.label, layer=layer, status=status, text=text
    )


def _answered(
    slot: Slot, layer: int, reply: BaseMessage, started: float, limit: int
) -> ReferenceAnswer:
    text = cap_reference(message_text(reply), limit)
    if not text and (
        getattr(reply, "tool_calls", None) or getattr(reply, "invalid_tool_calls", None)
    ):
        # References are called without tools; a tool call instead of advice is no answer.
        error = ReferenceProtocolError("answered with a tool call instead of advice")
        return _failed(slot, layer, error, started)
    answer = _answer(slot, layer, "ok", text or prompts.EMPTY_REFERENCE)
    answer["latency_ms"] = _elapsed_ms(started)
    usage = getattr(reply, "usage_metadata", None)
    if usage:
        answer["usage"] = dict(usage)
    return answer


def _failed(slot: Slot, layer: int, exc: Exception, started: float) -> ReferenceAnswer:
    answer = _answer(slot, layer, "failed", f"[failed: {describe_error(exc)}]")
    answer["latency_ms"] = _elapsed_ms(started)
    answer["error_type"] = type(exc).__name__
    return answer


def _timed_out(slot: Slot, layer: int, seconds: float, started: float) -> ReferenceAnswer:
    answer = _answer(slot, layer, "failed", prompts.TIMED_OUT.format(seconds=seconds))
    answer["latency_ms"] = _elapsed_ms(started)
    answer["error_type"] = "TimeoutError"
    return answer


def _cut(slot: Slot, layer: int, quorum: int, started: float) -> ReferenceAnswer:
    answer = _answer(slot, layer, "skipped", prompts.QUORUM_CUT.format(quorum=quorum))
    answer["latency_ms"] = _elapsed_ms(started)
    answer["error_type"] = "QuorumCut"
    return answer


def _skipped(slot: Slot, layer: int, reason: str | None = None) -> ReferenceAnswer:
    text = prompts.RECURSION_SKIPPED if reason is None else reason
    return _answer(slot, layer, "skipped", text)
