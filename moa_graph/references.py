"""Calling reference models, one slot at a time or a whole panel.

The graph's `reference` node runs one slot per task; the chat-model facade runs the whole
panel, every slot of every layer.

A slot is one call: a reference model with `samples: k` has k slots, labelled `#1`..`#k`.
Every outcome is a `ReferenceAnswer`: an exception or a timeout becomes `failed`, a `moa`
provider is `skipped` without a call, an empty answer is marked. Nothing here raises for a
model.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

from langchain_core.callbacks import Callbacks
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ContextThreadPoolExecutor

from moa_graph import direct, prompts
from moa_graph.config import Preset
from moa_graph.events import emit
from moa_graph.guidance import quote_reference
from moa_graph.models import PresetModels, Slot, reference_config, reference_slots
from moa_graph.privacy import model_text, redact
from moa_graph.providers import scrub_secrets
from moa_graph.state import ReferenceAnswer, ReferenceTask
from moa_graph.trimming import message_text
from moa_graph.usage import Usage, add_usage, call_usage

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "Advice",
    "Outcome",
    "Slot",
    "acall_panel",
    "acall_reference",
    "call_panel",
    "call_reference",
    "describe_error",
    "enabled_slots",
    "layer_tasks",
    "reference_slots",
]

_MAX_ERROR_CHARS = 300
_BACKSTOP_GRACE_S = 1.0
"""How long past its budget a direct request is awaited (its own timeout ends it first)."""
_MALFORMED_RESPONSE = (json.JSONDecodeError, IndexError, KeyError)
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


@dataclass
class Advice:
    """A whole panel's work for one user turn (or step): every layer's answers."""

    answers: list[ReferenceAnswer] = field(default_factory=list)
    usage: Usage | None = None
    raw: dict[str, str] = field(default_factory=dict)

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Take in one layer's outcomes, in preset order."""
        for outcome in sorted(outcomes, key=lambda o: o.answer["index"]):
            self.answers.append(outcome.answer)
            if outcome.usage is not None:
                self.usage = add_usage(self.usage, outcome.usage)
            if outcome.raw is not None:
                self.raw[_raw_key(outcome.answer)] = outcome.raw


def enabled_slots(models: PresetModels) -> list[Slot]:
    """The slots to run in a fan-out (none for a disabled preset)."""
    if not models.preset.enabled:
        return []
    return [slot for slot in models.slots if slot.spec.enabled]


def layer_tasks(
    models: PresetModels,
    view: list[BaseMessage],
    *,
    layer: int = 1,
    previous: list[tuple[str, str]] | None = None,
) -> list[ReferenceTask]:
    """One task per enabled slot for a fan-out of `layer`, sharing `view` and one deadline."""
    deadline = models.preset.references_deadline_s
    deadline_at = time.time() + deadline if deadline is not None else None
    return [
        ReferenceTask(
            index=slot.index,
            view=view,
            layer=layer,
            previous=previous or [],
            deadline_at=deadline_at,
        )
        for slot in enabled_slots(models)
    ]


def call_reference(
    models: PresetModels, task: ReferenceTask, *, callbacks: Callbacks = None
) -> Outcome:
    """Run one slot (sync). A timeout stops the wait; the abandoned call ends on its own."""
    slot, layer = models.slots[task["index"]], task.get("layer", 1)
    if slot.spec.provider == "moa":
        return _finish(models, _skipped(slot, layer), None)
    _started(slot, layer)
    limit = _limit(models.preset, slot, task)
    started = time.perf_counter()
    try:
        model = models.reference(slot.model_index)
        started = time.perf_counter()  # the call's latency, not the client's construction
        messages, client = _advisor_input(task), _direct_client(models, model, callbacks)
        if client is not None:
            budget = _budget(limit)
            call = partial(direct.post, client.root_client, slot.spec, messages, timeout=budget)
            wait = None if budget is None else budget + _BACKSTOP_GRACE_S
        else:
            config = _config(slot, layer, callbacks)
            call, wait = partial(model.invoke, messages, config=config), _budget(limit)
        reply = call() if wait is None else _within(wait, call)
    except Exception as exc:
        return _failure(models, slot, layer, exc, limit, started)
    return _finish(models, _answered(slot, layer, reply, started), _usage(slot, reply))


async def acall_reference(
    models: PresetModels, task: ReferenceTask, *, callbacks: Callbacks = None
) -> Outcome:
    """Run one slot (async). A timeout cancels the request."""
    slot, layer = models.slots[task["index"]], task.get("layer", 1)
    if slot.spec.provider == "moa":
        return _finish(models, _skipped(slot, layer), None)
    _started(slot, layer)
    limit = _limit(models.preset, slot, task)
    started = time.perf_counter()
    try:
        model = models.reference(slot.model_index)
        started = time.perf_counter()
        messages, client = _advisor_input(task), _direct_client(models, model, callbacks)
        if client is not None:
            # The budget is the request's own timeout: an answer already on the socket is
            # read even when the event loop is busy; the wait is only a backstop.
            budget = _budget(limit)
            call = direct.apost(client.root_async_client, slot.spec, messages, timeout=budget)
            wait = None if budget is None else budget + _BACKSTOP_GRACE_S
        else:
            call = model.ainvoke(messages, config=_config(slot, layer, callbacks))
            wait = _budget(limit)
        try:
            reply = await (call if wait is None else asyncio.wait_for(call, timeout=wait))
        except TimeoutError:
            raise _Timeout() from None
    except Exception as exc:
        return _failure(models, slot, layer, exc, limit, started)
    return _finish(models, _answered(slot, layer, reply, started), _usage(slot, reply))


def call_panel(
    models: PresetModels, view: list[BaseMessage], *, callbacks: Callbacks = None
) -> Advice:
    """Run every layer of the panel, each layer's slots concurrently in threads."""
    advice = Advice()
    previous: list[tuple[str, str]] = []
    for layer in range(1, models.preset.layers + 1):
        tasks = layer_tasks(models, view, layer=layer, previous=previous)
        if not tasks:
            break
        # ContextThreadPoolExecutor carries the caller's context (LangGraph's stream writer).
        with ContextThreadPoolExecutor(max_workers=len(tasks)) as pool:
            outcomes = list(
                pool.map(lambda t: call_reference(models, t, callbacks=callbacks), tasks)
            )
        advice.add(outcomes)
        previous = answered(outcomes, advice.raw)
        if not previous:
            break
    return advice


async def acall_panel(
    models: PresetModels, view: list[BaseMessage], *, callbacks: Callbacks = None
) -> Advice:
    """Run every layer of the panel, each layer's slots concurrently as tasks."""
    advice = Advice()
    previous: list[tuple[str, str]] = []
    for layer in range(1, models.preset.layers + 1):
        tasks = layer_tasks(models, view, layer=layer, previous=previous)
        if not tasks:
            break
        outcomes = await asyncio.gather(
            *(acall_reference(models, t, callbacks=callbacks) for t in tasks)
        )
        advice.add(outcomes)
        previous = answered(outcomes, advice.raw)
        if not previous:
            break
    return advice


def answered(
    outcomes: Sequence[Outcome | ReferenceAnswer], raw: dict[str, str] | None
) -> list[tuple[str, str]]:
    """(label, text models read) of the successful answers, in preset order."""
    answers = [o.answer if isinstance(o, Outcome) else o for o in outcomes]
    return [
        (a["label"], model_text(a, raw))
        for a in sorted(answers, key=lambda a: a["index"])
        if a["status"] == "ok"
    ]


def describe_error(exc: BaseException) -> str:
    """`Type: message`, one line, bounded, with every known key value scrubbed.

    Parsing errors escaping the client (a body that is not JSON, a completion without
    choices) are named as what they are: a malformed response from the provider.
    """
    message = " ".join(str(exc).split())
    root = _transport_cause(exc)
    if root is not None:
        message += f" ({type(root).__name__}: {' '.join(str(root).split())})"
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    described = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, _MALFORMED_RESPONSE):
        described = f"malformed response from the provider ({described})"
    return scrub_secrets(described)


def _transport_cause(exc: BaseException) -> BaseException | None:
    """The transport error under the OpenAI client's generic connection/timeout error.

    The aiohttp transport reports a dropped connection as a timeout ("Request timed out."),
    so the original (`ServerDisconnectedError`, `ConnectionResetError`) is worth naming.
    """
    openai = sys.modules.get("openai")  # not imported until a model is built
    if openai is None or not isinstance(exc, openai.APIConnectionError):
        return None
    root: BaseException = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        root, seen = nxt, seen | {id(nxt)}
    return None if root is exc or not str(root).strip() else root


class _Timeout(Exception):
    """The slot's time limit ran out."""


def _limit(preset: Preset, slot: Slot, task: ReferenceTask) -> tuple[float, float] | None:
    """(seconds left, the limit to report) under the slot's timeout and the fan-out deadline."""
    limits: list[tuple[float, float]] = []
    if slot.spec.reference_timeout_s is not None:
        timeout = slot.spec.reference_timeout_s
        limits.append((timeout, timeout))
    deadline_at = task.get("deadline_at")
    if deadline_at is not None and preset.references_deadline_s is not None:
        limits.append((deadline_at - time.time(), preset.references_deadline_s))
    return min(limits) if limits else None


def _budget(limit: tuple[float, float] | None) -> float | None:
    """Seconds the call may take; raises `_Timeout` when none are left."""
    if limit is None:
        return None
    if limit[0] <= 0:
        raise _Timeout()
    return limit[0]


def _direct_client(
    models: PresetModels, model: BaseChatModel, callbacks: Callbacks
) -> ChatOpenAI | None:
    """The `ChatOpenAI` to ask with one direct POST (`moa_graph.direct`), if it may be."""
    if not models.direct_references:
        return None
    from langchain_openai import ChatOpenAI  # imported by then: the factory built `model`

    if type(model) is not ChatOpenAI or direct.is_observed(callbacks):
        return None
    return model


def _within(seconds: float, call: Callable[[], _T]) -> _T:
    pool = ContextThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=seconds)
    except FutureTimeout:
        raise _Timeout() from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _failure(
    models: PresetModels,
    slot: Slot,
    layer: int,
    exc: Exception,
    limit: tuple[float, float] | None,
    started: float,
) -> Outcome:
    """A failed or timed-out outcome; a request timeout under a limit is the limit's."""
    if limit is not None and (isinstance(exc, _Timeout) or _request_timed_out(exc)):
        answer = _timed_out(slot, layer, limit[1], started)
    else:
        answer = _failed(slot, layer, exc, started)
    return _finish(models, answer, call_usage("reference", slot.spec, None))


def _request_timed_out(exc: Exception) -> bool:
    # The aiohttp transport reports a dropped connection as a timeout too: look underneath.
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(exc, openai.APITimeoutError):
        return False
    cause = _transport_cause(exc)
    return cause is None or isinstance(cause, TimeoutError)


def _config(slot: Slot, layer: int, callbacks: Callbacks) -> RunnableConfig:
    config = reference_config(slot.index, slot.spec, label=slot.label, layer=layer)
    if callbacks is not None:
        config["callbacks"] = callbacks
    return config


def _advisor_input(task: ReferenceTask) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(content=prompts.REFERENCE_SYSTEM_PROMPT)]
    messages += task["view"]
    previous = task.get("previous")
    if previous:
        answers = "\n\n".join(
            prompts.LAYER_ANSWER.format(label=label, text=quote_reference(text))
            for label, text in previous
        )
        messages.append(HumanMessage(content=prompts.LAYER_PROMPT.format(answers=answers)))
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


def _raw_key(answer: ReferenceAnswer) -> str:
    return f"{answer.get('layer', 1)}:{answer['index']}"


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _answer(slot: Slot, layer: int, status: Status, text: str) -> ReferenceAnswer:
    return ReferenceAnswer(
        index=slot.index, label=slot.label, layer=layer, status=status, text=text
    )


def _answered(slot: Slot, layer: int, reply: BaseMessage, started: float) -> ReferenceAnswer:
    text = message_text(reply)
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


def _skipped(slot: Slot, layer: int) -> ReferenceAnswer:
    return _answer(slot, layer, "skipped", prompts.RECURSION_SKIPPED)
