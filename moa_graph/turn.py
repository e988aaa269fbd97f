"""The MoA turn: every decision a front-end needs, in one place.

The graph's nodes (`moa_graph.nodes`), `MoAChatModel` and `MoAMiddleware` are adapters
over this module: they store what ran where their host keeps state (graph state, a cache,
the agent's state) and call models their host's way, but what is decided comes from here.

A turn begins at the latest human message. Each aggregator call in it is a *step*: step 1
answers the human message, and each tool round (an assistant turn with tool calls and its
results) adds one.

- **When references run** (`due_fan_out`, `fanout_due`, `serving_step`): at the turn's
  first step (wherever the turn is picked up), and under `every_step` / `every_n:N` again
  at steps 1+N, 1+2N, ...; never twice for one step.
- **Whether the turn consults at all** (`moa_graph.gate`: the run's choice, a callable, a
  gate model), **which slots run** (`enabled_slots`; `moa_graph.budget` leaves out what
  does not fit the reference budget), **what they see** (`reference_view`: the preset's
  `reference_input` scope; each slot's input fitted to its `context_window`), and **when a
  layer is done** (`moa_graph.quorum`).
- **Layers** (`next_layer`): a layer follows while the preset has more and the previous
  one had answers, which it builds on (`answered`); then the **judge**, if the preset has
  one (`moa_graph.judge`: the last layer's answers, anonymised and shuffled).
- **Where the guidance goes and what the acting model gets** (`aggregator_request`):
  the conversation with the guidance after the turn's human message (or where a re-run's
  references ran), the `moa_aggregator` event, a note naming the tool calls that ran since
  a re-run's guidance was written (so the model does not repeat a call the advice
  predates), and on the last step of a spent tool budget a note to answer now (the notes'
  texts: `moa_graph.notes`).
- **The tool budget** (`Preset.max_tool_rounds`, `check_reply`): it counts tool rounds
  (assistant messages of the turn that call tools). Once it is spent, the acting model (when
  it has tools) is asked once more with its tools still described but `tool_choice="none"`
  and a note to answer now, so a looping agent ends with an answer and nothing already paid
  is thrown away. A reply that calls tools even then ends the turn with `MoAToolLoopError`.

Running the references is `moa_graph.references` (one slot) and `moa_graph.panel` (a whole
panel, for the front-ends that run it in one call); their answers are `ReferenceAnswer`s.

Adding a stage (a judge, a quorum) means a decision here, its prompt in `prompts.py`, and
each adapter calling it where its host runs that stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from moa_graph.config import Preset
from moa_graph.errors import MoAToolLoopError
from moa_graph.events import AggregatorEvent, emit
from moa_graph.failures import aggregator_error
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.models import PresetModels, Slot
from moa_graph.notes import predates_note, tool_budget_note, tool_calls
from moa_graph.privacy import model_text
from moa_graph.state import Judgement, ReferenceAnswer, last_layer, layer_answers
from moa_graph.trimming import last_human_index, reference_messages

__all__ = [
    "AggregatorRequest",
    "FanOut",
    "aggregator_event",
    "aggregator_request",
    "aggregator_step",
    "answered",
    "answering_model",
    "asks_gate",
    "check_reply",
    "consults",
    "due_fan_out",
    "enabled_slots",
    "fanout_due",
    "guidance_step",
    "judges",
    "next_layer",
    "reference_view",
    "serving_step",
    "stored_request",
    "tool_rounds",
    "tools_spent",
    "turn_marker",
    "turn_start",
]


def turn_start(messages: Sequence[BaseMessage]) -> int:
    """Index of the turn's human message: the latest one.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = last_human_index(messages)
    if at is None:
        raise ValueError("MoA answers a user turn, but the conversation has no user message")
    return at


def aggregator_step(messages: Sequence[BaseMessage], turn_at: int | None = None) -> int:
    """The aggregator step about to run in the turn: 1, then one more per tool round.

    Args:
        messages: The conversation as stored (no guidance in it).
        turn_at: `turn_start(messages)`, if the caller has it already.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = turn_start(messages) if turn_at is None else turn_at
    return 1 + sum(message.type == "ai" for message in messages[at + 1 :])


def turn_marker(messages: Sequence[BaseMessage], turn_at: int) -> str:
    """What marks the turn as having had its references: its human message's id (or index)."""
    return messages[turn_at].id or f"#{turn_at}"


def serving_step(preset: Preset, step: int, first_step: int) -> int:
    """The step whose fan-out serves step `step` of a turn whose first fan-out ran at `first_step`.

    Per turn, the first one; under a re-running schedule (`every_step` is N = 1) the latest
    of steps 1, 1+N, 1+2N, ... up to `step`, or the first one if that came later (a turn
    picked up mid-way).
    """
    interval = preset.fanout_interval
    if interval is None:
        return first_step
    return max(first_step, step - (step - 1) % interval)


def fanout_due(preset: Preset, *, step: int, ran_step: int | None) -> bool:
    """Whether references run before step `step`, given the step this turn's latest ran for.

    Always when none ran yet this turn (`ran_step` None); then only when the schedule
    serves `step` by a fan-out of its own, and never twice for one step.
    """
    if ran_step is None:
        return True
    return ran_step != step and serving_step(preset, step, ran_step) == step


@dataclass(frozen=True)
class FanOut:
    """A fan-out the turn's schedule calls for before the step about to run."""

    turn: str
    """The turn's marker (`turn_marker`), to record as `reference_turn`."""
    step: int
    """The step it runs for (recorded as `reference_step`: where its guidance goes)."""
    fresh: bool
    """The turn's first fan-out: its `references` and `usage` start afresh."""


def due_fan_out(
    messages: Sequence[BaseMessage],
    preset: Preset,
    reference_turn: str | None,
    reference_step: int = 1,
    *,
    gated_out: bool = False,
) -> FanOut | None:
    """The fan-out due before the next step, given the turn and step the latest ran for.

    `gated_out`: the turn whose references ran was skipped by its gate (`moa_graph.gate`),
    so it re-runs none.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = turn_start(messages)
    step = aggregator_step(messages, at)
    turn = turn_marker(messages, at)
    ran_step = reference_step if reference_turn == turn else None
    if ran_step is not None and gated_out:
        return None
    if not fanout_due(preset, step=step, ran_step=ran_step):
        return None
    return FanOut(turn, step, fresh=ran_step is None)


def enabled_slots(models: PresetModels) -> list[Slot]:
    """The slots a fan-out runs, in preset order (none for a disabled preset)."""
    if not models.preset.enabled:
        return []
    return [slot for slot in models.slots if slot.spec.enabled]


def asks_gate(models: PresetModels, *, fresh: bool) -> bool:
    """Whether a fan-out asks the turn's gate: the turn's first, with references to run.

    Its decision (`moa_graph.gate`) then holds for the turn.
    """
    return fresh and bool(enabled_slots(models))


def judges(has_judge: bool, references: Sequence[ReferenceAnswer]) -> bool:
    """Whether the judge runs: the preset has one, and the last layer has an answer."""
    return has_judge and any(ref["status"] == "ok" for ref in layer_answers(references))


def reference_view(messages: Sequence[BaseMessage], preset: Preset) -> list[BaseMessage]:
    """The trimmed view the references see.

    The preset's `reference_input` scope of the history (all of it, the turn, or the latest
    N user turns), with the turn's tool activity when references re-run within it.
    """
    scope = preset.reference_turns
    if scope is not None:
        humans = [i for i, message in enumerate(messages) if message.type == "human"]
        messages = messages[humans[-scope] :] if len(humans) > scope else messages
    return reference_messages(
        messages,
        tool_activity=preset.fanout_interval is not None,
        tool_result_budget=preset.reference_tool_result_budget,
    )


def answered(
    references: Sequence[ReferenceAnswer], raw: dict[str, str] | None
) -> list[tuple[str, str]]:
    """(label, text models read) of the successful answers, in preset order."""
    ordered = sorted(references, key=lambda ref: ref["index"])
    return [(ref["label"], model_text(ref, raw)) for ref in ordered if ref["status"] == "ok"]


def next_layer(
    preset: Preset, references: Sequence[ReferenceAnswer], raw: dict[str, str] | None
) -> tuple[int, list[tuple[str, str]]] | None:
    """The layer to run after the answers so far, with the answers it builds on; None: aggregate.

    A layer follows while the preset has more and the latest layer had answers.
    """
    if not references:
        return None
    layer = last_layer(references)
    previous = answered(layer_answers(references, layer), raw)
    if layer >= preset.layers or not previous:
        return None
    return layer + 1, previous


def guidance_step(preset: Preset, reference_step: int) -> int:
    """The step whose input the guidance joins (`aggregator_input(step=...)`).

    Per turn the guidance stays after the human message (step 1), even for a turn picked up
    mid-way; a re-running schedule puts it where its references ran, so the steps in between
    only extend the cached prefix.
    """
    return reference_step if preset.fanout_interval is not None else 1


def aggregator_event(label: str, references: Sequence[ReferenceAnswer]) -> AggregatorEvent:
    """The `moa_aggregator` event of a step: how many of the last layer's references answered."""
    return {
        "type": "moa_aggregator",
        "label": label,
        "status": "running",
        "references_ok": sum(ref["status"] == "ok" for ref in layer_answers(references)),
    }


@dataclass(frozen=True)
class AggregatorRequest:
    """What the acting model is asked at one step."""

    messages: list[BaseMessage]
    """The conversation with the guidance placed (and the note to answer, on a last step)."""
    answer_now: bool
    """The tool budget is spent: ask with `tool_choice="none"` (`answering_model`)."""
    rounds: int
    """The turn's tool rounds so far."""
    bounded: bool
    """Whether the reply is held to the tool budget (`check_reply`)."""


def aggregator_request(
    preset: Preset,
    messages: Sequence[BaseMessage],
    references: Sequence[ReferenceAnswer],
    *,
    raw: dict[str, str] | None,
    reference_step: int,
    consulted: bool,
    tools: bool,
    bounded: bool = True,
    judgement: Judgement | None = None,
) -> AggregatorRequest:
    """The acting model's input at this step; emits the step's `moa_aggregator` event.

    Args:
        preset: The preset (its `aggregator` names the acting model in the guidance).
        messages: The conversation as stored (no guidance in it).
        references: The answers of the turn's latest fan-out.
        raw: The unredacted texts (`reference_raw`).
        reference_step: The step the latest fan-out ran for.
        consulted: The preset has references to run (False: the conversation is sent as is).
        tools: The acting model has tools.
        bounded: The caller lets the tool budget bound this step (False when it forces a
            tool choice of its own: structured output, `tool_choice="required"`).
        judgement: The judge's findings on the latest fan-out, which join the guidance.
    """
    emit(aggregator_event(preset.aggregator.label, references))
    stored = list(messages)
    rounds = tool_rounds(stored)
    shown = stored
    if consulted:
        guidance = render_guidance(preset, references, raw=raw, judgement=judgement)
        place = guidance_step(preset, reference_step)
        shown = aggregator_input(stored, guidance, step=place)
        if preset.fanout_interval is not None:  # guidance that later tool calls may outdate
            shown += predates_note(stored, place)
    answer_now = bounded and tools and tools_spent(preset, rounds)
    if answer_now:
        shown.append(tool_budget_note(preset))
    return AggregatorRequest(shown, answer_now, rounds, bounded)


def consults(models: PresetModels, *, gated_out: bool) -> bool:
    """Whether the acting model gets guidance: the preset runs references, its gate let it."""
    return bool(enabled_slots(models)) and not gated_out


def stored_request(
    preset: Preset,
    models: PresetModels,
    state: Mapping[str, Any],
    *,
    tools: bool,
    bounded: bool = True,
) -> AggregatorRequest:
    """`aggregator_request` from a state that keeps the turn as the graph's does.

    The graph's state and `MoAMiddleware`'s share these keys: `messages`, `references`,
    `reference_raw`, `reference_step`, `reference_gate`, `judgement`. `preset` names the
    acting model (the middleware's is the agent's own).
    """
    return aggregator_request(
        preset,
        state["messages"],
        state.get("references") or [],
        raw=state.get("reference_raw"),
        reference_step=state.get("reference_step", 1),
        consulted=consults(models, gated_out=state.get("reference_gate") == "skip"),
        tools=tools,
        bounded=bounded,
        judgement=state.get("judgement"),
    )


def check_reply(
    preset: Preset, request: AggregatorRequest, reply: BaseMessage, *, runs_tools: bool = False
) -> None:
    """Refuse a reply the turn cannot go on with.

    Args:
        preset: The preset.
        request: What the acting model was asked.
        reply: Its reply.
        runs_tools: The front-end runs the tool calls itself (the graph): a reply whose only
            tool calls have invalid arguments can neither run nor end the turn.

    Raises:
        MoAToolLoopError: The reply calls tools although the budget is spent.
        MoAAggregatorError: `runs_tools`, and the reply has only invalid tool calls.
    """
    if request.bounded and tool_calls(reply) and tools_spent(preset, request.rounds):
        raise MoAToolLoopError(preset.name, preset.max_tool_rounds)
    invalid = getattr(reply, "invalid_tool_calls", None)
    if runs_tools and invalid and not getattr(reply, "tool_calls", None):
        # Nothing to run and nothing to say: fail the step (resumably) rather than end
        # the turn on a reply that is neither an answer nor a usable tool call.
        names = ", ".join(str(call.get("name")) for call in invalid)
        error = ValueError(f"tool call with invalid JSON arguments ({names})")
        raise aggregator_error(preset.aggregator.label, error)


def tool_rounds(messages: Sequence[BaseMessage], turn_at: int | None = None) -> int:
    """Tool rounds the turn has taken: its assistant messages that call tools.

    Other assistant messages (another agent's reply in a shared transcript) spend nothing.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = turn_start(messages) if turn_at is None else turn_at
    return sum(bool(tool_calls(message)) for message in messages[at + 1 :])


def tools_spent(preset: Preset, rounds: int) -> bool:
    """Whether `rounds` tool rounds use up the preset's budget: the next step must answer."""
    return rounds >= preset.max_tool_rounds


def answering_model(
    aggregator: BaseChatModel, tools: Sequence[Any], **kwargs: Any
) -> Runnable[LanguageModelInput, BaseMessage]:
    """The aggregator for its last step: its tools described, `tool_choice="none"`.

    The tools stay in the request (some providers refuse a conversation with tool calls
    but no tools); a model whose `bind_tools` does not take `tool_choice` gets them plain,
    and `check_reply` is the bound then. `kwargs` are other `bind_tools` options.
    """
    try:
        return aggregator.bind_tools(tools, **{**kwargs, "tool_choice": "none"})
    except (TypeError, ValueError):
        return aggregator.bind_tools(tools, **kwargs)
