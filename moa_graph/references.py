"""Calling reference models, one slot at a time or all of a preset's slots at once.

The graph's `reference` node runs one slot per task; the chat-model facade runs them all.

Every outcome is a `ReferenceAnswer`: an exception becomes `failed`, a `moa` provider is
`skipped` without a call, an empty answer is marked. Nothing here raises for a model.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ContextThreadPoolExecutor

from moa_graph import prompts
from moa_graph.config import ModelSpec
from moa_graph.events import emit
from moa_graph.models import PresetModels, reference_config
from moa_graph.providers import scrub_secrets
from moa_graph.state import ReferenceAnswer
from moa_graph.trimming import message_text
from moa_graph.usage import Usage, add_usage, call_usage

__all__ = [
    "acall_reference",
    "acall_references",
    "call_reference",
    "call_references",
    "describe_error",
    "enabled_slots",
]

_MAX_ERROR_CHARS = 300
_MALFORMED_RESPONSE = (json.JSONDecodeError, IndexError, KeyError)


class ReferenceProtocolError(Exception):
    """A reference replied, but not with advice (for instance with a tool call)."""


def enabled_slots(models: PresetModels) -> list[int]:
    """Indexes of the reference slots to run this turn (none for a disabled preset)."""
    preset = models.preset
    if not preset.enabled:
        return []
    return [i for i, spec in enumerate(preset.reference_models) if spec.enabled]


def call_reference(
    models: PresetModels, index: int, view: Sequence[BaseMessage], *, callbacks: Callbacks = None
) -> tuple[ReferenceAnswer, Usage | None]:
    """Run reference slot `index` on the trimmed `view` (sync)."""
    spec = models.preset.reference_models[index]
    if spec.provider == "moa":
        return _finish(_skipped(index, spec), None)
    _started(index, spec)
    started = time.perf_counter()
    try:
        model = models.reference(index)
        started = time.perf_counter()  # the call's latency, not the client's construction
        reply = model.invoke(_advisor_input(view), config=_config(index, spec, callbacks))
    except Exception as exc:
        return _finish(_failed(index, spec, exc, started), call_usage("reference", spec, None))
    return _finish(_answered(index, spec, reply, started), call_usage("reference", spec, reply))


async def acall_reference(
    models: PresetModels, index: int, view: Sequence[BaseMessage], *, callbacks: Callbacks = None
) -> tuple[ReferenceAnswer, Usage | None]:
    """Run reference slot `index` on the trimmed `view` (async)."""
    spec = models.preset.reference_models[index]
    if spec.provider == "moa":
        return _finish(_skipped(index, spec), None)
    _started(index, spec)
    started = time.perf_counter()
    try:
        model = models.reference(index)
        started = time.perf_counter()
        reply = await model.ainvoke(_advisor_input(view), config=_config(index, spec, callbacks))
    except Exception as exc:
        return _finish(_failed(index, spec, exc, started), call_usage("reference", spec, None))
    return _finish(_answered(index, spec, reply, started), call_usage("reference", spec, reply))


def call_references(
    models: PresetModels, view: Sequence[BaseMessage], *, callbacks: Callbacks = None
) -> tuple[list[ReferenceAnswer], Usage | None]:
    """Run every enabled slot concurrently in threads; answers come back in preset order."""
    slots = enabled_slots(models)
    if not slots:
        return [], None
    # ContextThreadPoolExecutor carries the caller's context (LangGraph's stream writer).
    with ContextThreadPoolExecutor(max_workers=len(slots)) as pool:
        results = list(
            pool.map(lambda i: call_reference(models, i, view, callbacks=callbacks), slots)
        )
    return _collect(results)


async def acall_references(
    models: PresetModels, view: Sequence[BaseMessage], *, callbacks: Callbacks = None
) -> tuple[list[ReferenceAnswer], Usage | None]:
    """Run every enabled slot concurrently as tasks; answers come back in preset order."""
    slots = enabled_slots(models)
    results = await asyncio.gather(
        *(acall_reference(models, i, view, callbacks=callbacks) for i in slots)
    )
    return _collect(list(results))


def describe_error(exc: BaseException) -> str:
    """`Type: message`, one line, bounded, with every known key value scrubbed.

    Parsing errors escaping the client (a body that is not JSON, a completion without
    choices) are named as what they are: a malformed response from the provider.
    """
    message = " ".join(str(exc).split())
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    described = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, _MALFORMED_RESPONSE):
        described = f"malformed response from the provider ({described})"
    return scrub_secrets(described)


def _collect(
    results: list[tuple[ReferenceAnswer, Usage | None]],
) -> tuple[list[ReferenceAnswer], Usage | None]:
    usage: Usage | None = None
    for _, call in results:
        if call is not None:
            usage = add_usage(usage, call)
    return sorted((answer for answer, _ in results), key=lambda a: a["index"]), usage


def _config(index: int, spec: ModelSpec, callbacks: Callbacks) -> RunnableConfig:
    config = reference_config(index, spec)
    if callbacks is not None:
        config["callbacks"] = callbacks
    return config


def _advisor_input(view: Sequence[BaseMessage]) -> list[BaseMessage]:
    return [SystemMessage(content=prompts.REFERENCE_SYSTEM_PROMPT), *view]


def _started(index: int, spec: ModelSpec) -> None:
    emit(
        {
            "type": "moa_reference",
            "index": index,
            "label": spec.label,
            "status": "running",
            "latency_ms": None,
        }
    )


def _finish(answer: ReferenceAnswer, usage: Usage | None) -> tuple[ReferenceAnswer, Usage | None]:
    emit(
        {
            "type": "moa_reference",
            "index": answer["index"],
            "label": answer["label"],
            "status": answer["status"],
            "latency_ms": answer.get("latency_ms"),
        }
    )
    return answer, usage


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _answered(index: int, spec: ModelSpec, reply: BaseMessage, started: float) -> ReferenceAnswer:
    text = message_text(reply)
    if not text and (
        getattr(reply, "tool_calls", None) or getattr(reply, "invalid_tool_calls", None)
    ):
        # References are called without tools; a tool call instead of advice is no answer.
        error = ReferenceProtocolError("answered with a tool call instead of advice")
        return _failed(index, spec, error, started)
    answer = ReferenceAnswer(
        index=index,
        label=spec.label,
        status="ok",
        text=text or prompts.EMPTY_REFERENCE,
        latency_ms=_elapsed_ms(started),
    )
    usage = getattr(reply, "usage_metadata", None)
    if usage:
        answer["usage"] = dict(usage)
    return answer


def _failed(index: int, spec: ModelSpec, exc: Exception, started: float) -> ReferenceAnswer:
    return ReferenceAnswer(
        index=index,
        label=spec.label,
        status="failed",
        text=f"[failed: {describe_error(exc)}]",
        latency_ms=_elapsed_ms(started),
        error_type=type(exc).__name__,
    )


def _skipped(index: int, spec: ModelSpec) -> ReferenceAnswer:
    return ReferenceAnswer(
        index=index, label=spec.label, status="skipped", text=prompts.RECURSION_SKIPPED
    )
