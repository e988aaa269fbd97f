"""Bodies of the MoA graph's nodes: `fan_out`, `reference`, `join` and `aggregator`.

`fan_out`, `reference` and `aggregator` come in a sync and an async flavour so that `invoke`
and `ainvoke` both run the references concurrently (LangGraph runs the parallel `reference`
tasks of a superstep in threads under `invoke` and as asyncio tasks under `ainvoke`), and so
that the async flavour never blocks the event loop while resolving the run's preset.
Each node asks the resolver for the run's `PresetModels`, so one graph can serve a preset
chosen per run.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, Send

from moa_graph.errors import MoAAggregatorError
from moa_graph.events import emit
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.references import acall_reference, call_reference, describe_error, enabled_slots
from moa_graph.resolvers import PresetResolver
from moa_graph.state import MoAState, ReferenceAnswer, ReferenceTask
from moa_graph.trimming import last_human_index, reference_messages
from moa_graph.usage import Usage, call_usage

__all__ = ["MoANodes"]


class MoANodes:
    """The node functions of one MoA graph, getting the run's models from a resolver."""

    def __init__(self, resolver: PresetResolver, *, name: str) -> None:
        self.resolver = resolver
        self.name = name

    def fan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch this turn's references once, or go straight to the aggregator (sync)."""
        return _fan_out(state, self.resolver.models())

    async def afan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch this turn's references once, or go straight to the aggregator (async)."""
        return _fan_out(state, await self.resolver.amodels())

    def reference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (sync); every failure becomes a `failed` answer."""
        models = self.resolver.models()
        return _reference_update(*call_reference(models, task["index"], task["view"]))

    async def areference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference model (async); every failure becomes a `failed` answer."""
        models = await self.resolver.amodels()
        return _reference_update(*await acall_reference(models, task["index"], task["view"]))

    def join(self, state: MoAState) -> dict[str, Any]:
        """Write this turn's answers to `references` in preset order, whatever finished first."""
        results = sorted(state.get("reference_results") or [], key=lambda ref: ref["index"])
        return {"references": results, "reference_results": None}

    def aggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (sync)."""
        models = self.resolver.models()
        messages = _aggregator_messages(state, models)
        try:
            reply = models.acting().invoke(
                messages, config=aggregator_config(models.preset.aggregator)
            )
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise _aggregator_error(models, exc) from exc
        return self._aggregator_update(models, reply)

    async def aaggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (async)."""
        models = await self.resolver.amodels()
        messages = _aggregator_messages(state, models)
        try:
            reply = await models.acting().ainvoke(
                messages, config=aggregator_config(models.preset.aggregator)
            )
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise _aggregator_error(models, exc) from exc
        return self._aggregator_update(models, reply)

    def _aggregator_update(self, models: PresetModels, reply: BaseMessage) -> dict[str, Any]:
        if isinstance(reply, AIMessage) and reply.name is None:
            reply.name = self.name
        return {
            "messages": [reply],
            "usage": call_usage("aggregator", models.preset.aggregator, reply),
        }


def _fan_out(state: MoAState, models: PresetModels) -> Command[Any]:
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
    slots = enabled_slots(models)
    if not slots:
        return Command(update=update, goto="aggregator")
    view = reference_messages(messages)
    sends = [Send("reference", ReferenceTask(index=i, view=view)) for i in slots]
    return Command(update=update, goto=sends)


def _aggregator_messages(state: MoAState, models: PresetModels) -> list[BaseMessage]:
    references = state.get("references") or []
    emit(
        {
            "type": "moa_aggregator",
            "label": models.preset.aggregator.label,
            "status": "running",
            "references_ok": sum(r["status"] == "ok" for r in references),
        }
    )
    guidance = render_guidance(models.preset, references) if enabled_slots(models) else None
    return aggregator_input(state["messages"], guidance)


def _aggregator_error(models: PresetModels, exc: Exception) -> MoAAggregatorError:
    return MoAAggregatorError(models.preset.aggregator.label, describe_error(exc))


def _reference_update(answer: ReferenceAnswer, usage: Usage | None) -> dict[str, Any]:
    update: dict[str, Any] = {"reference_results": [answer]}
    if usage is not None:
        update["usage"] = usage
    return update
