"""Bodies of the MoA graph's nodes: `fan_out`, `reference`, `join` and `aggregator`.

`fan_out`, `reference` and `aggregator` come in a sync and an async flavour so that `invoke`
and `ainvoke` both run the references concurrently (LangGraph runs the parallel `reference`
tasks of a superstep in threads under `invoke` and as asyncio tasks under `ainvoke`), and so
that the async flavour never blocks the event loop while resolving the run's preset.
Each node asks the resolver for the run's `PresetModels`, so one graph can serve a preset
chosen per run.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langgraph.types import Command, Send

from moa_graph.events import emit
from moa_graph.failures import aggregator_error, aggregator_failures
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.references import (
    Outcome,
    acall_reference,
    answered,
    call_reference,
    enabled_slots,
    layer_tasks,
)
from moa_graph.resolvers import PresetResolver
from moa_graph.state import MoAState, ReferenceTask
from moa_graph.turn import (
    aggregator_event,
    answering_model,
    check_tool_budget,
    due_fan_out,
    guidance_step,
    reference_view,
    tool_budget_note,
    tool_rounds,
    tools_spent,
)
from moa_graph.usage import call_usage

__all__ = ["MoANodes"]


class MoANodes:
    """The node functions of one MoA graph, getting the run's models from a resolver."""

    def __init__(self, resolver: PresetResolver, *, name: str) -> None:
        self.resolver = resolver
        self.name = name

    def fan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch references when the schedule says so, else go to the aggregator (sync)."""
        return _fan_out(state, self.resolver.models())

    async def afan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch references when the schedule says so, else go to the aggregator (async)."""
        return _fan_out(state, await self.resolver.amodels())

    def reference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference slot (sync); every failure becomes a `failed` answer."""
        return _reference_update(call_reference(self.resolver.models(), task))

    async def areference(self, task: ReferenceTask) -> dict[str, Any]:
        """Run one reference slot (async); every failure becomes a `failed` answer."""
        models = await self.resolver.amodels()
        return _reference_update(await acall_reference(models, task))

    def join(self, state: MoAState) -> dict[str, Any]:
        """Add a layer's answers to `references` in preset order, whatever finished first."""
        results = sorted(state.get("reference_results") or [], key=lambda ref: ref["index"])
        return {
            "references": [*(state.get("references") or []), *results],
            "reference_results": None,
        }

    async def ajoin(self, state: MoAState) -> dict[str, Any]:
        """Async `join` (no thread hop under `ainvoke`)."""
        return self.join(state)

    def after_join(self, state: MoAState) -> list[Send] | Literal["aggregator"]:
        """Start the next layer, if the preset has one and this layer answered; else aggregate."""
        if _last_layer(state):
            return "aggregator"
        return _next_layer(state, self.resolver.models())

    async def aafter_join(self, state: MoAState) -> list[Send] | Literal["aggregator"]:
        """Async `after_join`."""
        if _last_layer(state):
            return "aggregator"
        return _next_layer(state, await self.resolver.amodels())

    def after_tools(self, state: MoAState) -> Literal["fan_out", "aggregator"]:
        """After a tool round: back through `fan_out` when references may re-run this turn."""
        return "aggregator" if self.resolver.models().preset.fanout == "per_turn" else "fan_out"

    async def aafter_tools(self, state: MoAState) -> Literal["fan_out", "aggregator"]:
        """Async `after_tools`."""
        models = await self.resolver.amodels()
        return "aggregator" if models.preset.fanout == "per_turn" else "fan_out"

    def aggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (sync)."""
        models = self.resolver.models()
        rounds = tool_rounds(state["messages"])
        model, messages = _aggregator_call(state, models, rounds)
        with aggregator_failures(models.preset.aggregator.label):
            reply = model.invoke(messages, config=aggregator_config(models.preset.aggregator))
        return self._aggregator_update(models, reply, rounds)

    async def aaggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (async)."""
        models = await self.resolver.amodels()
        rounds = tool_rounds(state["messages"])
        model, messages = _aggregator_call(state, models, rounds)
        with aggregator_failures(models.preset.aggregator.label):
            reply = await model.ainvoke(
                messages, config=aggregator_config(models.preset.aggregator)
            )
        return self._aggregator_update(models, reply, rounds)

    def _aggregator_update(
        self, models: PresetModels, reply: BaseMessage, rounds: int
    ) -> dict[str, Any]:
        check_tool_budget(models.preset, rounds, reply)
        invalid = getattr(reply, "invalid_tool_calls", None)
        if invalid and not getattr(reply, "tool_calls", None):
            # Nothing to run and nothing to say: fail the step (resumably) rather than end
            # the turn on a reply that is neither an answer nor a usable tool call.
            names = ", ".join(str(call.get("name")) for call in invalid)
            error = ValueError(f"tool call with invalid JSON arguments ({names})")
            raise aggregator_error(models.preset.aggregator.label, error)
        if isinstance(reply, AIMessage) and reply.name is None:
            reply.name = self.name
        return {
            "messages": [reply],
            "usage": call_usage("aggregator", models.preset.aggregator, reply),
        }


def _fan_out(state: MoAState, models: PresetModels) -> Command[Any]:
    messages, preset = state["messages"], models.preset
    due = due_fan_out(messages, preset, state.get("reference_turn"))
    if due is None:
        return Command(goto="aggregator")
    update: dict[str, Any] = {
        "references": [],
        "reference_results": None,
        "reference_raw": None,
        "reference_turn": due.turn,
        "reference_step": due.step,
        "reference_layers": preset.layers,
    }
    if due.fresh:
        update["usage"] = None  # usage covers the whole turn, re-runs included
    tasks = layer_tasks(models, reference_view(messages, preset))
    if not tasks:
        return Command(update=update, goto="aggregator")
    return Command(update=update, goto=[Send("reference", task) for task in tasks])


def _last_layer(state: MoAState) -> bool:
    # Decided from the state alone, so that a state edit "as join" (Studio, outside any run
    # and its context) routes to the aggregator without resolving the preset.
    layer = max((ref.get("layer", 1) for ref in state.get("references") or []), default=1)
    return layer >= state.get("reference_layers", 1)


def _next_layer(state: MoAState, models: PresetModels) -> list[Send] | Literal["aggregator"]:
    # A routing function, not part of `join`: a state edit "as join" (Studio) routes again.
    references = state.get("references") or []
    layer = max((ref.get("layer", 1) for ref in references), default=models.preset.layers)
    current = [ref for ref in references if ref.get("layer", 1) == layer]
    previous = answered(current, state.get("reference_raw"))
    if layer >= models.preset.layers or not previous:
        return "aggregator"
    view = reference_view(state["messages"], models.preset)
    tasks = layer_tasks(models, view, layer=layer + 1, previous=previous)
    return [Send("reference", task) for task in tasks]


def _aggregator_call(
    state: MoAState, models: PresetModels, rounds: int
) -> tuple[Runnable[LanguageModelInput, BaseMessage], list[BaseMessage]]:
    """The aggregator to call after `rounds` tool rounds, and its input (guidance included).

    Acting (bound to the tools), or answering once the preset's tool rounds are spent.
    """
    messages = _aggregator_messages(state, models)
    if not (models.tools and tools_spent(models.preset, rounds)):
        return models.acting(), messages
    answering = answering_model(models.aggregator(), models.tools)
    return answering, [*messages, tool_budget_note(models.preset)]


def _aggregator_messages(state: MoAState, models: PresetModels) -> list[BaseMessage]:
    references = state.get("references") or []
    emit(aggregator_event(models.preset.aggregator.label, references))
    if not enabled_slots(models):
        return list(state["messages"])
    guidance = render_guidance(models.preset, references, raw=state.get("reference_raw"))
    step = guidance_step(models.preset, state.get("reference_step", 1))
    return aggregator_input(state["messages"], guidance, step=step)


def _reference_update(outcome: Outcome) -> dict[str, Any]:
    update: dict[str, Any] = {"reference_results": [outcome.answer]}
    if outcome.usage is not None:
        update["usage"] = outcome.usage
    if outcome.raw is not None:
        update["reference_raw"] = {
            f"{outcome.answer.get('layer', 1)}:{outcome.answer['index']}": outcome.raw
        }
    return update
