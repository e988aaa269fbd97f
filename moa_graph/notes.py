"""The ephemeral notes that end the acting model's input at some steps (never stored).

- `tool_budget_note`: the preset's `max_tool_rounds` are spent: answer now.
- `predates_note`: under `every_step` / `every_n`, between two fan-outs, the guidance was
  written before the turn's latest tool calls: it names them, so the acting model does not
  repeat a call only because older advice suggests it. Being the input's tail, the note
  keeps the previous step's request a prefix of this one (the provider's prompt cache).

Tool names and arguments come from a model's reply (or a caller's own messages): names are
kept only when they look like names, everything is JSON-escaped (no line breaks) and
defused, so nothing in them can pass for another guidance section.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.quoting import defuse
from moa_graph.trimming import last_human_index

__all__ = ["predates_note", "tool_budget_note", "tool_calls"]

_LISTED_CALLS = 8
"""How many of the tool calls since the guidance its note names (the rest are counted)."""
_ARGUMENTS_CHARS = 120
_TOOL_NAME = re.compile(r"[\w.-]{1,64}")


def tool_calls(message: BaseMessage) -> list[Any]:
    """A message's tool calls, valid and invalid ones."""
    return list(getattr(message, "tool_calls", None) or ()) + list(
        getattr(message, "invalid_tool_calls", None) or ()
    )


def tool_budget_note(preset: Preset) -> HumanMessage:
    """The note that ends the input once the preset's tool rounds are spent."""
    return HumanMessage(content=prompts.TOOL_ROUNDS_SPENT.format(rounds=preset.max_tool_rounds))


def predates_note(messages: Sequence[BaseMessage], step: int) -> list[HumanMessage]:
    """The note for guidance written at `step` of the turn (empty when nothing came after).

    The tool calls it names are those of the turn's assistant messages after its first
    `step - 1`: the steps the guidance was written after.
    """
    at = last_human_index(messages)
    replies = [m for m in messages[(at or 0) + 1 :] if m.type == "ai"]
    calls = [call for message in replies[step - 1 :] for call in tool_calls(message)]
    if not calls:
        return []
    listed = [_shown(call) for call in calls[:_LISTED_CALLS]]
    if len(calls) > _LISTED_CALLS:
        listed.append(f"{len(calls) - _LISTED_CALLS} more")
    text = prompts.ADVICE_PREDATES.format(step=step, calls=", ".join(listed))
    return [HumanMessage(content=text)]


def _shown(call: dict[str, Any]) -> str:
    name = str(call.get("name"))
    name = name if _TOOL_NAME.fullmatch(name) else "(a tool)"
    text = json.dumps(call.get("args", call.get("args_json", "")), ensure_ascii=False)
    if len(text) > _ARGUMENTS_CHARS:
        text = text[:_ARGUMENTS_CHARS] + "..."
    return f"{name}({defuse(text)})"
