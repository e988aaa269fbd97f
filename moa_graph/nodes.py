"""Bodies of the MoA graph's nodes: `fan_out`, `reference`, `join` and `aggregator`.

`fan_out`, `reference` and `aggregator` come in a sync and an async flavour so that `invoke`
and `ainvoke` both run the references concurrently (LangGraph runs the parallel `reference`
tasks of a superstep in threads under `invoke` and as asyncio tasks under `ainvoke`), and so
that the async flavour never blocks the event loop while resolving the run's preset.
Each node asks the resolver for the run's `PresetModels`, so one graph can serve a preset
chosen per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langgraph.runtime import get_runtime
from langgraph.types import Command, Overwrite, Send

from moa_graph.context import MoAContext
from moa_graph.failures import aggregator_failures
from moa_graph.gate import Gate, GateChoice, GateDecision, adecide, decide, run_choice
from moa_graph.judge import ajudge, judge
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.panel import layer_tasks
from moa_graph.references import Outcome, acall_reference, call_reference
from moa_graph.resolvers import PresetResolver
from moa_graph.state import (
    Judgement,
    MoAState,
    ReferenceAnswer,
    ReferenceTask,
    last_layer,
    raw_key,
)
from moa_graph.turn import (
    AggregatorRequest,
    FanOut,
    answering_model,
    asks_gate,
    check_reply,
    due_fan_out,
    judges,
    next_layer,
    reference_view,
    stored_request,
)
from moa_graph.usage import Usage, call_usage

__all__ = ["AGGREGATOR", "FAN_OUT", "JOIN", "JUDGE", "REFERENCE", "TOOLS", "MoANodes"]

# The graph's node names (what Studio shows, `stream(subgraphs=True)` reports, and a parent
# graph's `interrupt_before` takes).
FAN_OUT: Final = "fan_out"
REFERENCE: Final = "reference"
JOIN: Final = "join"
JUDGE: Final = "judge"
AGGREGATOR: Final = "aggregator"
TOOLS: Final = "tools"


class MoANodes:
    """The node functions of one MoA graph, getting the run's models from a resolver."""

    def __init__(self, resolver: PresetResolver, *, name: str, gate: Gate | None = None) -> None:
        self.resolver = resolver
        self.name = name
        self.gate = gate

    def fan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch references when the schedule (and the gate) say so, else aggregate (sync)."""
        models = self.resolver.models()
        due = _due(state, models)
        if due is None or not asks_gate(models, fresh=due.fresh):
            return _fan_out(state, models, due, None)
        decision = decide(models, state["messages"], gate=self.gate, choice=_choice())
        return _fan_out(state, models, due, decision)

    async def afan_out(self, state: MoAState) -> Command[Any]:
        """Dispatch references when the schedule (and the gate) say so, else aggregate (async)."""
        models = await self.resolver.amodels()
        due = _due(state, models)
        if due is None or not asks_gate(models, fresh=due.fresh):
            return _fan_out(state, models, due, None)
        decision = await adecide(models, state["messages"], gate=self.gate, choice=_choice())
        return _fan_out(state, models, due, decision)

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

    def after_join(self, state: MoAState) -> list[Send] | Literal["judge", "aggregator"]:
        """Start the next layer (if any, and this one answered); else judge, or aggregate."""
        if _last_layer(state):
            return _after_last_layer(state)
        return _next_layer(state, self.resolver.models())

    async def aafter_join(self, state: MoAState) -> list[Send] | Literal["judge", "aggregator"]:
        """Async `after_join`."""
        if _last_layer(state):
            return _after_last_layer(state)
        return _next_layer(state, await self.resolver.amodels())

    def judge(self, state: MoAState) -> dict[str, Any]:
        """Ask the preset's judge about the last layer's answers (sync)."""
        models = self.resolver.models()
        return _judge_update(judge(models, *_judged(state, models)))

    async def ajudge(self, state: MoAState) -> dict[str, Any]:
        """Ask the preset's judge about the last layer's answers (async)."""
        models = await self.resolver.amodels()
        return _judge_update(await ajudge(models, *_judged(state, models)))

    def after_tools(self, state: MoAState) -> Literal["fan_out", "aggregator"]:
        """After a tool round: back through `fan_out` when references may re-run this turn."""
        return _after_tools(self.resolver.models())

    async def aafter_tools(self, state: MoAState) -> Literal["fan_out", "aggregator"]:
        """Async `after_tools`."""
        return _after_tools(await self.resolver.amodels())

    def aggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (sync)."""
        models = self.resolver.models()
        request = _aggregator_request(state, models)
        with aggregator_failures(models.preset.aggregator.label):
            reply = _acting(models, request).invoke(
                request.messages, config=aggregator_config(models.preset.aggregator)
            )
        return self._aggregator_update(models, request, reply)

    async def aaggregator(self, state: MoAState) -> dict[str, Any]:
        """Call the acting model with the conversation and the guidance (async)."""
        models = await self.resolver.amodels()
        request = _aggregator_request(state, models)
        with aggregator_failures(models.preset.aggregator.label):
            reply = await _acting(models, request).ainvoke(
                request.messages, config=aggregator_config(models.preset.aggregator)
            )
        return self._aggregator_update(models, request, reply)

    def _aggregator_update(
        self, models: PresetModels, request: AggregatorRequest, reply: BaseMessage
    ) -> dict[str, Any]:
        check_reply(models.preset, request, reply, runs_tools=True)
        if isinstance(reply, AIMessage) and reply.name is None:
            reply.name = self.name
        return {
            "messages": [reply],
            "usage": call_usage("aggregator", models.preset.aggregator, reply),
        }


def _due(state: MoAState, models: PresetModels) -> FanOut | None:
    return due_fan_out(
        state["messages"],
        models.preset,
        state.get("reference_turn"),
        state.get("reference_step", 1),
        gated_out=state.get("reference_gate") == "skip",
    )


def _choice() -> GateChoice:
    """The run's gate choice: its `configurable`, else its `MoAContext` (the Studio graph)."""
    try:
        context = get_runtime().context
    except (RuntimeError, KeyError):
        context = None
    if isinstance(context, Mapping):
        context = MoAContext.coerce(context)
    return run_choice(context=context if isinstance(context, MoAContext) else None)


def _fan_out(
    state: MoAState, models: PresetModels, due: FanOut | None, decision: GateDecision | None
) -> Command[Any]:
    if due is None:
        return Command(goto=AGGREGATOR)
    messages, preset = state["messages"], models.preset
    update: dict[str, Any] = {
        "references": [],
        "reference_results": None,
        "reference_raw": None,
        "reference_turn": due.turn,
        "reference_step": due.step,
        "reference_layers": preset.layers,
        "reference_judge": preset.judge is not None,
        "judgement": None,
    }
    if due.fresh:  # usage covers the whole turn, re-runs and its gate included
        gate_usage = decision.usage if decision is not None else None
        update["usage"] = Overwrite(gate_usage) if gate_usage is not None else None
        update["reference_gate"] = "consult" if decision is None or decision.consult else "skip"
        if decision is not None and not decision.consult:
            return Command(update=update, goto=AGGREGATOR)
    tasks = layer_tasks(models, reference_view(messages, preset))
    if not tasks:
        return Command(update=update, goto=AGGREGATOR)
    return Command(update=update, goto=[Send(REFERENCE, task) for task in tasks])


def _last_layer(state: MoAState) -> bool:
    # Decided from the state alone, so that a state edit "as join" (Studio, outside any run
    # and its context) routes to the aggregator without resolving the preset.
    return last_layer(state.get("references") or []) >= state.get("reference_layers", 1)


def _after_last_layer(state: MoAState) -> Literal["judge", "aggregator"]:
    # From the state alone, as `_last_layer`: a state edit "as join" (Studio) routes too.
    references = state.get("references") or []
    return JUDGE if judges(bool(state.get("reference_judge")), references) else AGGREGATOR


def _judged(
    state: MoAState, models: PresetModels
) -> tuple[list[BaseMessage], list[ReferenceAnswer], dict[str, str] | None]:
    """What the judge reads: the references' view, their answers and the unredacted texts."""
    view = reference_view(state["messages"], models.preset)
    return view, state.get("references") or [], state.get("reference_raw")


def _judge_update(found: tuple[Judgement | None, Usage | None]) -> dict[str, Any]:
    judgement, usage = found
    update: dict[str, Any] = {"judgement": judgement}
    if usage is not None:
        update["usage"] = usage
    return update


def _next_layer(state: MoAState, models: PresetModels) -> list[Send] | Literal["aggregator"]:
    # A routing function, not part of `join`: a state edit "as join" (Studio) routes again.
    following = next_layer(models.preset, state.get("references") or [], state.get("reference_raw"))
    if following is None:
        return AGGREGATOR
    layer, previous = following
    view = reference_view(state["messages"], models.preset)
    tasks = layer_tasks(models, view, layer=layer, previous=previous)
    return [Send(REFERENCE, task) for task in tasks]


def _aggregator_request(state: MoAState, models: PresetModels) -> AggregatorRequest:
    return stored_request(models.preset, models, state, tools=bool(models.tools))


def _acting(
    models: PresetModels, request: AggregatorRequest
) -> Runnable[LanguageModelInput, BaseMessage]:
    """Acting (bound to the tools), or answering once the preset's tool rounds are spent."""
    if request.answer_now:
        return answering_model(models.aggregator(), models.tools)
    return models.acting()


def _after_tools(models: PresetModels) -> Literal["fan_out", "aggregator"]:
    return AGGREGATOR if models.preset.fanout_interval is None else FAN_OUT


def _reference_update(outcome: Outcome) -> dict[str, Any]:
    update: dict[str, Any] = {"reference_results": [outcome.answer]}
    if outcome.usage is not None:
        update["usage"] = outcome.usage
    if outcome.raw is not None:
        update["reference_raw"] = {raw_key(outcome.answer): outcome.raw}
    return update
