"""Decisions about one user turn that every front-end shares: its step count and tool budget.

A turn begins at the latest human message. Each aggregator call in it is a *step*: step 1
answers the human message, and each tool round (an assistant turn with tool calls and its
results) adds one. The graph's nodes and `MoAChatModel` ask these functions, so the two
front-ends count steps and spend the tool budget the same way.

Whether references are due before a step (`fanout_due`), what they see (`reference_view`)
and where their guidance goes (`guidance_step`) are decided here too, for the graph's nodes
and `MoAMiddleware` (`MoAChatModel` still keys its advice cache by its own schedule buckets).

The tool budget (`Preset.max_tool_rounds`) counts tool rounds: assistant messages of the
turn that call tools. Once it is spent, the aggregator (when it has tools) is asked once
more with its tools still described but `tool_choice="none"` and a note to answer now, so a
looping agent ends with an answer and nothing already paid is thrown away. A reply that
calls tools even then ends the turn with `MoAToolLoopError`, tools or not (a model can
call a tool it was never given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.errors import MoAToolLoopError
from moa_graph.events import AggregatorEvent
from moa_graph.state import ReferenceAnswer
from moa_graph.trimming import last_human_index, reference_messages

__all__ = [
    "FanOut",
    "aggregator_event",
    "aggregator_step",
    "answering_model",
    "check_tool_budget",
    "due_fan_out",
    "fanout_due",
    "guidance_step",
    "reference_view",
    "tool_budget_note",
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


def fanout_due(preset: Preset, *, fresh: bool, step: int) -> bool:
    """Whether references run before aggregator step `step`.

    Always at a new turn (`fresh`); within a turn only under a re-running schedule, at
    steps 1, 1+N, 1+2N, ... (`every_step` is N = 1).
    """
    interval = preset.fanout_interval
    return fresh or (interval is not None and (step - 1) % interval == 0)


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
    messages: Sequence[BaseMessage], preset: Preset, reference_turn: str | None
) -> FanOut | None:
    """The fan-out due before the next step, given the turn whose references already ran.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = turn_start(messages)
    step = aggregator_step(messages, at)
    turn = turn_marker(messages, at)
    fresh = reference_turn != turn
    return FanOut(turn, step, fresh) if fanout_due(preset, fresh=fresh, step=step) else None


def reference_view(messages: Sequence[BaseMessage], preset: Preset) -> list[BaseMessage]:
    """The trimmed view the references see; with the turn's tool activity when they re-run."""
    return reference_messages(
        messages,
        tool_activity=preset.fanout_interval is not None,
        tool_result_budget=preset.reference_tool_result_budget,
    )


def guidance_step(preset: Preset, reference_step: int) -> int:
    """The step whose input the guidance joins (`aggregator_input(step=...)`).

    Per turn the guidance stays after the human message (step 1), even for a turn picked up
    mid-way; a re-running schedule puts it where its references ran, so the steps in between
    only extend the cached prefix.
    """
    return reference_step if preset.fanout_interval is not None else 1


def aggregator_event(label: str, references: Sequence[ReferenceAnswer]) -> AggregatorEvent:
    """The `moa_aggregator` event of a step: how many of the last layer's references answered."""
    last = max((ref.get("layer", 1) for ref in references), default=1)
    return {
        "type": "moa_aggregator",
        "label": label,
        "status": "running",
        "references_ok": sum(
            ref["status"] == "ok" and ref.get("layer", 1) == last for ref in references
        ),
    }


def tool_rounds(messages: Sequence[BaseMessage], turn_at: int | None = None) -> int:
    """Tool rounds the turn has taken: its assistant messages that call tools.

    Other assistant messages (another agent's reply in a shared transcript) spend nothing.

    Raises:
        ValueError: The conversation has no user message.
    """
    at = turn_start(messages) if turn_at is None else turn_at
    return sum(bool(_tool_calls(message)) for message in messages[at + 1 :])


def tools_spent(preset: Preset, rounds: int) -> bool:
    """Whether `rounds` tool rounds use up the preset's budget: the next step must answer."""
    return rounds >= preset.max_tool_rounds


def tool_budget_note(preset: Preset) -> HumanMessage:
    """The ephemeral note that ends the aggregator's input on its last step."""
    return HumanMessage(content=prompts.TOOL_ROUNDS_SPENT.format(rounds=preset.max_tool_rounds))


def answering_model(
    aggregator: BaseChatModel, tools: Sequence[Any], **kwargs: Any
) -> Runnable[LanguageModelInput, BaseMessage]:
    """The aggregator for its last step: its tools described, `tool_choice="none"`.

    The tools stay in the request (some providers refuse a conversation with tool calls
    but no tools); a model whose `bind_tools` does not take `tool_choice` gets them plain,
    and `check_tool_budget` is the bound then. `kwargs` are other `bind_tools` options.
    """
    try:
        return aggregator.bind_tools(tools, **{**kwargs, "tool_choice": "none"})
    except (TypeError, ValueError):
        return aggregator.bind_tools(tools, **kwargs)


def check_tool_budget(preset: Preset, rounds: int, reply: BaseMessage) -> None:
    """Refuse a reply that asks for tools once the budget is spent (the loop's hard bound).

    Raises:
        MoAToolLoopError: The reply calls tools although `rounds` used up the budget.
    """
    if _tool_calls(reply) and tools_spent(preset, rounds):
        raise MoAToolLoopError(preset.name, preset.max_tool_rounds)


def _tool_calls(message: BaseMessage) -> list[Any]:
    return list(getattr(message, "tool_calls", None) or ()) + list(
        getattr(message, "invalid_tool_calls", None) or ()
    )
