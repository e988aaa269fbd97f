"""Bodies of the MoA graph's nodes: `fan_out`, `reference`, `join` and `aggregator`.

`reference` and `aggregator` come in a sync and an async flavour so that `invoke` and
`ainvoke` both run the references concurrently (LangGraph runs the parallel `reference`
tasks of a superstep in threads under `invoke` and as asyncio tasks under `ainvoke`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, Send

from moa_graph.errors import MoAAggregatorError
from moa_graph.events import emit
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.references import acall_reference, call_reference, describe_error, enabled_slots
from moa_graph.state import MoAState, ReferenceAnswer, ReferenceTask
from moa_graph.trimming import last_human_index, reference_messages
from moa_graph.usage import Usage, call_usage

__all__ = ["MoANodes"]


class MoANodes:
    """The node functions of one MoA graph, bound to a preset's models and the tools."""

    def __init__(self, models: PresetModels, *, tools: Sequence[BaseTool], name: str) -> None:
        self.models = models
        self.preset = models.preset
        self.name = name
        self._tools = list(tools)
        self._bound: Runnable[LanguageModelInput, BaseMessage] | None = None

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
            "usage": None,
        }
        slots = enabled_slots(self.models)
        if not slots:
            return Command(update=update, goto="aggregator")
        view = reference_messages(messages)
        sends = [Send("reference", ReferenceTask(index=i, view=view)) for i in slots]
        return Command(update=update, goto=sends)

    def reference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (sync); every failure becomes a `failed` answer."""
        return _reference_update(*call_reference(self.models, task["index"], task["view"]))

    async def areference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (async); every failure becomes a `failed` answer."""
        return _reference_update(*await acall_reference(self.models, task["index"], task["view"]))

    def join(self, state: MoAState) -> dict[str, Any]:
        """Write this turn's answers to `references` in preset order, whatever finished first."""
        results = sorted(state.get("reference_results") or [], key=lambda ref: ref["index"])
        return {"references": results, "reference_results": None}

    def aggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (sync)."""
        messages = self._aggregator_messages(state)
        try:
            reply = self._aggregator().invoke(messages, config=self._aggregator_config())
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise self._aggregator_error(exc) from exc
        return self._aggregator_update(reply)

    async def aaggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (async)."""
        messages = self._aggregator_messages(state)
        try:
            reply = await self._aggregator().ainvoke(messages, config=self._aggregator_config())
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise self._aggregator_error(exc) from exc
        return self._aggregator_update(reply)

    def _aggregator_messages(self, state: MoAState) -> list[BaseMessage]:
        references = state.get("references") or []
        emit(
            {
                "type": "moa_aggregator",
                "label": self.preset.aggregator.label,
                "status": "running",
                "references_ok": sum(r["status"] == "ok" for r in references),
            }
        )
        guidance = render_guidance(self.preset, references) if enabled_slots(self.models) else None
        return aggregator_input(state["messages"], guidance)

    def _aggregator(self) -> Runnable[LanguageModelInput, BaseMessage]:
        if self._bound is None:
            model = self.models.aggregator()
            self._bound = model.bind_tools(self._tools) if self._tools else model
        return self._bound

    def _aggregator_config(self) -> Any:
        return aggregator_config(self.preset.aggregator)

    def _aggregator_update(self, reply: BaseMessage) -> dict[str, Any]:
        if isinstance(reply, AIMessage) and reply.name is None:
            reply.name = self.name
        return {
            "messages": [reply],
            "usage": call_usage("aggregator", self.preset.aggregator, reply),
        }

    def _aggregator_error(self, exc: Exception) -> MoAAggregatorError:
        return MoAAggregatorError(self.preset.aggregator.label, describe_error(exc))


def _reference_update(answer: ReferenceAnswer, usage: Usage | None) -> dict[str, Any]:
    update: dict[str, Any] = {"reference_results": [answer]}
    if usage is not None:
        update["usage"] = usage
    return update
