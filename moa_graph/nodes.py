"""Bodies of the MoA graph's nodes: `fan_out`, `reference`, `join` and `aggregator`.

`reference` and `aggregator` come in a sync and an async flavour so that `invoke` and
`ainvoke` both run the references concurrently (LangGraph runs the parallel `reference`
tasks of a superstep in threads under `invoke` and as asyncio tasks under `ainvoke`).
Models are built lazily, once per graph, so building or drawing a graph needs no API key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, Send

from moa_graph import prompts
from moa_graph.config import ModelSpec, Preset
from moa_graph.errors import MoAAggregatorError
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.providers import ModelFactory, scrub_secrets
from moa_graph.state import MoAState, ReferenceAnswer, ReferenceTask
from moa_graph.trimming import last_human_index, message_text, reference_messages

__all__ = ["REFERENCE_TAG", "MoANodes"]

REFERENCE_TAG = "moa:reference"
"""Tag on every reference model call (they are also tagged `nostream`)."""
_MAX_ERROR_CHARS = 300


class MoANodes:
    """The node functions of one MoA graph, bound to a preset, its tools and its models."""

    def __init__(
        self,
        preset: Preset,
        *,
        tools: Sequence[BaseTool],
        reference_factory: ModelFactory,
        aggregator_factory: ModelFactory,
        name: str,
    ) -> None:
        self.preset = preset
        self.name = name
        self._tools = list(tools)
        self._reference_factory = reference_factory
        self._aggregator_factory = aggregator_factory
        self._references: dict[int, BaseChatModel] = {}
        self._aggregator: Runnable[LanguageModelInput, BaseMessage] | None = None
        self._lock = threading.Lock()

    # -- fan_out / join -------------------------------------------------------------------

    def fan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch this turn's references once, or go straight to the aggregator."""
        messages = state["messages"]
        at = last_human_index(messages)
        if at is None:
            raise ValueError("MoA answers a user turn, but the conversation has no user message")
        turn = messages[at].id or f"#{at}"
        if state.get("reference_turn") == turn:
            return Command(goto="aggregator")
        update: dict[str, Any] = {
            "references": [],
            "reference_results": None,
            "reference_turn": turn,
        }
        slots = [i for i, spec in enumerate(self.preset.reference_models) if spec.enabled]
        if not self.preset.enabled or not slots:
            return Command(update=update, goto="aggregator")
        view = reference_messages(messages)
        sends = [Send("reference", ReferenceTask(index=i, view=view)) for i in slots]
        return Command(update=update, goto=sends)

    def join(self, state: MoAState) -> dict[str, Any]:
        """Write this turn's answers to `references` in preset order, whatever finished first."""
        results = sorted(state.get("reference_results") or [], key=lambda ref: ref["index"])
        return {"references": results, "reference_results": None}

    # -- reference --------------------------------------------------------------------------

    def reference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (sync); every failure becomes a `failed` answer."""
        spec = self.preset.reference_models[task["index"]]
        if spec.provider == "moa":
            return _result(_skipped(task["index"], spec))
        _emit("reference_start", index=task["index"], label=spec.label)
        started = time.perf_counter()
        try:
            model = self._reference_model(task["index"])
            started = time.perf_counter()  # latency of the call, not of building the client
            reply = model.invoke(
                _reference_input(task), config=_reference_config(task["index"], spec)
            )
        except Exception as exc:
            return _result(_failed(task["index"], spec, exc, started))
        return _result(_answered(task["index"], spec, reply, started))

    async def areference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (async); every failure becomes a `failed` answer."""
        spec = self.preset.reference_models[task["index"]]
        if spec.provider == "moa":
            return _result(_skipped(task["index"], spec))
        _emit("reference_start", index=task["index"], label=spec.label)
        started = time.perf_counter()
        try:
            model = self._reference_model(task["index"])
            started = time.perf_counter()  # latency of the call, not of building the client
            reply = await model.ainvoke(
                _reference_input(task), config=_reference_config(task["index"], spec)
            )
        except Exception as exc:
            return _result(_failed(task["index"], spec, exc, started))
        return _result(_answered(task["index"], spec, reply, started))

    # -- aggregator -------------------------------------------------------------------------

    def aggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (sync)."""
        try:
            reply = self._aggregator_model().invoke(self._aggregator_messages(state))
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise self._aggregator_error(exc) from exc
        return self._aggregator_reply(reply)

    async def aaggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (async)."""
        try:
            reply = await self._aggregator_model().ainvoke(self._aggregator_messages(state))
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise self._aggregator_error(exc) from exc
        return self._aggregator_reply(reply)

    def _aggregator_messages(self, state: MoAState) -> list[BaseMessage]:
        references = state.get("references") or []
        guidance = render_guidance(self.preset, references) if self._fans_out() else None
        return aggregator_input(state["messages"], guidance)

    def _aggregator_reply(self, reply: BaseMessage) -> dict[str, Any]:
        if isinstance(reply, AIMessage) and reply.name is None:
            reply.name = self.name
        return {"messages": [reply]}

    def _aggregator_error(self, exc: Exception) -> MoAAggregatorError:
        return MoAAggregatorError(self.preset.aggregator.label, _describe(exc))

    def _fans_out(self) -> bool:
        return self.preset.enabled and any(s.enabled for s in self.preset.reference_models)

    # -- models, built once on first use ----------------------------------------------------

    def _reference_model(self, index: int) -> BaseChatModel:
        with self._lock:
            if index not in self._references:
                spec = self.preset.reference_models[index]
                self._references[index] = self._reference_factory(spec)
            return self._references[index]

    def _aggregator_model(self) -> Runnable[LanguageModelInput, BaseMessage]:
        with self._lock:
            if self._aggregator is None:
                model = self._aggregator_factory(self.preset.aggregator)
                self._aggregator = model.bind_tools(self._tools) if self._tools else model
            return self._aggregator


def _reference_input(task: ReferenceTask) -> list[BaseMessage]:
    return [SystemMessage(content=prompts.REFERENCE_SYSTEM_PROMPT), *task["view"]]


def _reference_config(index: int, spec: ModelSpec) -> RunnableConfig:
    return {
        "tags": [REFERENCE_TAG, TAG_NOSTREAM],
        "metadata": {"moa_index": index, "moa_label": spec.label},
        "run_name": f"reference {index + 1}: {spec.label}",
    }


def _answered(index: int, spec: ModelSpec, reply: BaseMessage, started: float) -> ReferenceAnswer:
    answer = ReferenceAnswer(
        index=index,
        label=spec.label,
        status="ok",
        text=message_text(reply) or prompts.EMPTY_REFERENCE,
        latency_s=round(time.perf_counter() - started, 4),
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
        text=f"[failed: {_describe(exc)}]",
        latency_s=round(time.perf_counter() - started, 4),
        error_type=type(exc).__name__,
    )


def _skipped(index: int, spec: ModelSpec) -> ReferenceAnswer:
    return ReferenceAnswer(
        index=index, label=spec.label, status="skipped", text=prompts.RECURSION_SKIPPED
    )


def _result(answer: ReferenceAnswer) -> dict[str, Any]:
    _emit(
        "reference_end",
        index=answer["index"],
        label=answer["label"],
        status=answer["status"],
        latency_s=answer.get("latency_s"),
    )
    return {"reference_results": [answer]}


def _emit(event: str, **fields: Any) -> None:
    """Send a progress event to `stream_mode="custom"` (a no-op outside a streamed run)."""
    get_stream_writer()({"moa": event, **fields})


def _describe(exc: BaseException) -> str:
    """`Type: message`, one line, bounded, with every known key value scrubbed."""
    message = " ".join(str(exc).split())
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    return scrub_secrets(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
