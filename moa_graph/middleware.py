"""`MoAMiddleware`: a MoA preset's references as middleware for `langchain.agents.create_agent`.

The agent's own model is the acting model (the aggregator). Before a model call the
middleware runs the preset's references when the turn's schedule says so and keeps their
answers in the agent's state; around the call it hands the model the guidance, never
writing it into `messages`:

    create_agent loop:  ... -> MoAMiddleware.before_model -> model -> tools -> ...
    before_model:       a fan-out due?  run the panel (every layer) -> state `references`, `usage`
    wrap_model_call:    the guidance after the turn's human message -> handler(request)

Why the two hooks: `before_model` is a graph node of its own, so what it writes is
checkpointed before the model is called, with the agent's thread: a model call that fails
and is resumed, or the next step of the same turn, finds the references done and does not
pay for them again. `wrap_model_call` only shapes the one request (`request.override`): the
guidance is ephemeral, so the conversation's prefix stays byte-identical through the tool
loop, as in the graph. What is decided (is a fan-out due, what references see, where the
guidance goes, the tool budget) comes from `moa_graph.turn`, as for the graph's nodes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, cast

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse, PrivateStateAttr
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.runnables.config import ensure_config, merge_configs, var_child_runnable_config
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite

from moa_graph.config import ModelSpec, Preset
from moa_graph.gate import Gate, adecide, decide, run_choice
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.panel import Advice, acall_panel, call_panel
from moa_graph.providers import ModelFactory
from moa_graph.resolvers import ConfigSource, resolve_preset
from moa_graph.state import Judgement, ReferenceAnswer
from moa_graph.turn import (
    asks_gate,
    check_reply,
    due_fan_out,
    enabled_slots,
    reference_view,
    stored_request,
)
from moa_graph.usage import Usage, add_usage, call_usage

__all__ = ["MoAAgentState", "MoAMiddleware"]


class MoAAgentState(AgentState[Any]):
    """What `MoAMiddleware` adds to the agent's state (checkpointed with its thread)."""

    references: NotRequired[list[ReferenceAnswer]]
    """This turn's reference answers in preset order (every layer); reset at each new turn."""
    judgement: NotRequired[Judgement | None]
    """The judge's findings on the latest answers (a preset with a `judge`)."""
    usage: NotRequired[Annotated[Usage, add_usage]]
    """This turn's token usage: the references and the agent's model, per model and in total."""
    reference_turn: NotRequired[Annotated[str | None, PrivateStateAttr]]
    """Id of the human message whose references already ran: the once-per-turn marker."""
    reference_step: NotRequired[Annotated[int, PrivateStateAttr]]
    """The model step (1-based, within the turn) the current references were made for."""
    reference_gate: NotRequired[Annotated[Literal["consult", "skip"] | None, PrivateStateAttr]]
    """What the turn's gate decided (`moa_graph.gate`): `skip` runs no references this turn."""
    reference_raw: NotRequired[Annotated[dict[str, str], PrivateStateAttr]]
    """With `privacy_filter: display`: the unredacted texts the model reads, by
    `"<layer>:<index>"`; `references` holds what people see."""


class MoAMiddleware(AgentMiddleware[MoAAgentState, Any]):
    """A MoA preset's references for an agent whose own model acts on their advice.

    The references run on the trimmed view of the conversation once per user turn (or as
    the preset's `fanout` schedules them), with the preset's `layers`, `samples`,
    deadlines, `max_reference_chars`, privacy filter, `degraded_reference_policy` and
    `min_references`; the agent's model gets their guidance in its request, right after
    the turn's human message, and is held to the preset's `max_tool_rounds`.

    The preset's `aggregator` entry is not used: the agent's model is the aggregator. The
    guidance, the `moa_aggregator` events, the run name (`moa_aggregator:<label>`) and
    `usage` name that model by its LangSmith provider and model name (`openai:gpt-5.5`);
    prices on the preset's `aggregator` do not apply to it.

    Args:
        preset: A `Preset`, or the name of one in `config`.
        config: Where a preset name is looked up and extra providers come from: a
            `MoAConfig` or anything `load_config` takes (None: discovery).
        model_factory: Builds the reference models from their `ModelSpec`s, replacing
            the built-in provider table.
        gate: `gate(messages) -> bool`, True to consult the references this turn; a run
            chooses with `configurable={"moa_references": "on" | "off"}` first.

    Example:
        >>> from langchain.agents import create_agent  # doctest: +SKIP
        >>> agent = create_agent(
        ...     "openai:gpt-5.5", tools=[calculator],
        ...     middleware=[MoAMiddleware(preset="review", config="moa.yaml")],
        ... )
        >>> agent.invoke({"messages": [("user", "What is 17 * 23?")]})  # doctest: +SKIP
    """

    state_schema = MoAAgentState

    def __init__(
        self,
        preset: Preset | str,
        *,
        config: ConfigSource = None,
        model_factory: ModelFactory | None = None,
        gate: Gate | None = None,
    ) -> None:
        super().__init__()
        self.gate = gate
        """Decides per user turn whether the references run (`moa_graph.gate`)."""
        resolved, loaded = resolve_preset(preset, config)
        self.models = PresetModels.for_preset(
            resolved,
            providers=loaded.providers if loaded else None,
            model_factory=model_factory,
        )
        """The preset's reference models (its aggregator is never built)."""

    @property
    def preset(self) -> Preset:
        """The preset whose references run."""
        return self.models.preset

    def before_model(self, state: MoAAgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Run the references (sync) when a fan-out is due; record them in the state."""
        fan_out = _FanOut.due(self.models, state)
        if fan_out is None:
            return None
        if fan_out.asks_gate:
            decision = decide(self.models, state["messages"], gate=self.gate, choice=run_choice())
            if not decision.consult:
                return fan_out.update(Advice(step=fan_out.step, usage=decision.usage, gated=True))
            fan_out.gate_usage = decision.usage
        view, step = fan_out.view, fan_out.step
        return fan_out.update(call_panel(self.models, view, step=step) if view else None)

    async def abefore_model(
        self, state: MoAAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Run the references (async) when a fan-out is due; record them in the state."""
        fan_out = _FanOut.due(self.models, state)
        if fan_out is None:
            return None
        if fan_out.asks_gate:
            messages, choice = state["messages"], run_choice()
            decision = await adecide(self.models, messages, gate=self.gate, choice=choice)
            if not decision.consult:
                return fan_out.update(Advice(step=fan_out.step, usage=decision.usage, gated=True))
            fan_out.gate_usage = decision.usage
        view, step = fan_out.view, fan_out.step
        return fan_out.update(await acall_panel(self.models, view, step=step) if view else None)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ExtendedModelResponse[Any]:
        """Call the agent's model (sync) with the guidance in its request."""
        step = _Step(self.models, request)
        with step.traced():
            return step.finish(handler(step.request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ExtendedModelResponse[Any]:
        """Call the agent's model (async) with the guidance in its request."""
        step = _Step(self.models, request)
        with step.traced():
            return step.finish(await handler(step.request))


@dataclass
class _FanOut:
    """A fan-out the turn's schedule calls for before this model step."""

    fresh: bool
    """The turn's first: its `references` and `usage` start afresh."""
    turn: str
    step: int
    view: list[BaseMessage]
    """What the references see (empty: a disabled preset, nothing runs)."""
    gate_usage: Usage | None = None
    """The gate model's call, counted with the turn's usage."""

    asks_gate: bool = False
    """The turn's first fan-out, with references to run: its gate decides (`turn.asks_gate`)."""

    @classmethod
    def due(cls, models: PresetModels, state: MoAAgentState) -> _FanOut | None:
        """The fan-out due before the step the state is at, or None."""
        messages = state["messages"]
        due = due_fan_out(
            messages,
            models.preset,
            state.get("reference_turn"),
            state.get("reference_step", 1),
            gated_out=state.get("reference_gate") == "skip",
        )
        if due is None:
            return None
        view = reference_view(messages, models.preset) if enabled_slots(models) else []
        return cls(
            due.fresh, due.turn, due.step, view, asks_gate=asks_gate(models, fresh=due.fresh)
        )

    def update(self, advice: Advice | None) -> dict[str, Any]:
        """The state update recording this fan-out and what the panel answered."""
        advice = (advice or Advice()).with_usage(self.gate_usage)
        update: dict[str, Any] = {
            "references": advice.answers,
            "judgement": advice.judgement,
            "reference_raw": advice.raw,
            "reference_turn": self.turn,
            "reference_step": self.step,
        }
        if self.fresh:  # usage covers the whole turn, re-runs and its gate included
            update["reference_gate"] = "skip" if advice.gated else "consult"
            update["usage"] = Overwrite(advice.usage or add_usage(None, None))
        elif advice.usage is not None:
            update["usage"] = advice.usage
        return update


class _Step:
    """One call of the agent's model: its request with the guidance, its run, its usage."""

    def __init__(self, models: PresetModels, request: ModelRequest[Any]) -> None:
        state = cast(MoAAgentState, request.state)
        # The agent's model takes the aggregator's place, in the guidance as elsewhere.
        self.preset = models.preset.model_copy(update={"aggregator": _acting_spec(request.model)})
        # A tool choice of the agent's own, or a ToolStrategy (its output is a tool call), is
        # theirs to bound; a provider-side response_format is not a tool call: still bounded.
        bounded = request.tool_choice in (None, "auto") and not isinstance(
            request.response_format, ToolStrategy
        )
        self.turn = stored_request(
            self.preset, models, state, tools=bool(request.tools), bounded=bounded
        )
        # The request's messages are the state's (create_agent adds the system prompt apart).
        messages = cast("list[AnyMessage]", self.turn.messages)
        if self.turn.answer_now and request.response_format is None:
            self.request = request.override(messages=messages, tool_choice="none")
        else:
            # create_agent binds a structured-output request without the request's
            # tool_choice: there the note asks, and `check_reply` is the bound.
            self.request = request.override(messages=messages)

    @contextmanager
    def traced(self) -> Iterator[None]:
        """Run the model call under the aggregator's run name, tags and metadata."""
        config = merge_configs(ensure_config(), aggregator_config(self.preset.aggregator))
        token = var_child_runnable_config.set(config)
        try:
            yield
        finally:
            var_child_runnable_config.reset(token)

    def finish(self, response: ModelResponse[Any]) -> ExtendedModelResponse[Any]:
        """Hold the reply to the tool budget and add its usage to the turn's."""
        reply = _reply(response.result)
        check_reply(self.preset, self.turn, reply)
        usage = call_usage("aggregator", self.preset.aggregator, reply)
        return ExtendedModelResponse(response, Command(update={"usage": usage}))


def _acting_spec(model: BaseChatModel) -> ModelSpec:
    """The agent's model as a `ModelSpec`, named as LangSmith names it."""
    params = model._get_ls_params()
    return ModelSpec(
        provider=params.get("ls_provider") or model._llm_type,
        model=params.get("ls_model_name") or type(model).__name__,
    )


def _reply(messages: Sequence[BaseMessage]) -> AIMessage:
    """The model's reply among the messages of a response (structured output adds a tool one)."""
    return next(m for m in messages if isinstance(m, AIMessage))
