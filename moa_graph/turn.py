"""Decisions about one user turn that every front-end shares: its step count and tool budget.

A turn begins at the latest human message. Each aggregator call in it is a *step*: step 1
answers the human message, and each tool round (an assistant turn with tool calls and its
results) adds one. The graph's nodes and `MoAChatModel` ask these functions, so the two
front-ends count steps and spend the tool budget the same way.

The tool budget (`Preset.max_tool_rounds`) is spent on the aggregator's last step: it is
asked once more with its tools still described but `tool_choice="none"` and a note to
answer now, so a looping agent ends with an answer and nothing already paid is thrown away.
A model that calls tools even then ends the turn with `MoAToolLoopError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.errors import MoAToolLoopError
from moa_graph.trimming import last_human_index

__all__ = [
    "aggregator_step",
    "answering_model",
    "check_tool_budget",
    "last_tool_step",
    "tool_budget_note",
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


def last_tool_step(preset: Preset, step: int) -> bool:
    """Whether step `step` has spent the preset's tool rounds: it must answer, not call tools."""
    return step - 1 >= preset.max_tool_rounds


def tool_budget_note(preset: Preset) -> HumanMessage:
    """The ephemeral note that ends the aggregator's input on its last step."""
    return HumanMessage(content=prompts.TOOL_ROUNDS_SPENT.format(rounds=preset.max_tool_rounds))


def answering_model(
    aggregator: BaseChatModel, tools: Sequence[BaseTool]
) -> Runnable[LanguageModelInput, BaseMessage]:
    """The aggregator for its last step: its tools described, `tool_choice="none"`.

    The tools stay in the request (some providers refuse a conversation with tool calls
    but no tools); a model whose `bind_tools` does not take `tool_choice` gets them plain,
    and `check_tool_budget` is the bound then.
    """
    if not tools:
        return aggregator
    try:
        return aggregator.bind_tools(tools, tool_choice="none")
    except (TypeError, ValueError):
        return aggregator.bind_tools(tools)


def check_tool_budget(preset: Preset, step: int, reply: BaseMessage) -> None:
    """Refuse a reply that asks for tools on the last step (the loop's hard bound).

    Raises:
        MoAToolLoopError: The reply calls tools although its step had none left.
    """
    calls = getattr(reply, "tool_calls", None) or getattr(reply, "invalid_tool_calls", None)
    if calls and last_tool_step(preset, step):
        raise MoAToolLoopError(preset.name, preset.max_tool_rounds)
