"""The trimmed view of a conversation that reference models see.

References advise on what the user and the assistant said; the caller's system prompt and
the tool traffic are the acting model's business and only cost references tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    MessageLikeRepresentation,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.messages.utils import count_tokens_approximately, trim_messages

from moa_graph.prompts import CONTEXT_CUT, REFERENCE_CONTINUE_PROMPT

__all__ = [
    "DEFAULT_OUTPUT_RESERVE",
    "DEFAULT_TOOL_RESULT_BUDGET",
    "fit_to_window",
    "last_human_index",
    "message_text",
    "preview",
    "reference_messages",
]

DEFAULT_TOOL_RESULT_BUDGET = 4000
"""Characters of a tool result that references re-run mid-turn see."""

DEFAULT_OUTPUT_RESERVE = 1024
"""Tokens left for a model's answer when its `max_tokens` is unset (context fit, budgets)."""

_CHARS_PER_TOKEN = 4
"""`count_tokens_approximately`'s rate, to turn a token budget into characters to keep."""


def fit_to_window(
    messages: Sequence[BaseMessage], *, context_window: int, reserve: int
) -> list[BaseMessage]:
    """`messages` trimmed to `context_window - reserve` tokens (approximately counted).

    A leading system message is kept; the oldest turns go first, and what is kept starts on
    a user message (`trim_messages(strategy="last", start_on="human")`). The last message is
    always kept: when it alone is too long, its middle is cut with a visible marker.
    """
    budget = context_window - reserve
    if count_tokens_approximately(messages) <= budget:
        return list(messages)
    system = list(messages[:1]) if messages and messages[0].type == "system" else []
    rest = list(messages[len(system) :])
    room = budget - count_tokens_approximately(system)
    kept = trim_messages(
        rest,
        max_tokens=max(room, 0),
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
    )
    if not kept and rest:
        kept = [_cut_to(rest[-1], room)]
    return [*system, *kept]


def _cut_to(message: BaseMessage, tokens: int) -> BaseMessage:
    """`message` with its text cut in the middle to about `tokens` tokens."""
    text = message_text(message)
    keep = max((tokens - 8) * _CHARS_PER_TOKEN - len(CONTEXT_CUT), 2)
    while True:
        half = keep // 2
        marker = CONTEXT_CUT.format(omitted=len(text) - 2 * half)
        cut = message.model_copy(update={"content": f"{text[:half]}{marker}{text[-half:]}"})
        if keep <= 2 or count_tokens_approximately([cut]) <= tokens:
            return cut
        keep = keep * 3 // 4


def reference_messages(
    messages: Sequence[MessageLikeRepresentation],
    *,
    tool_activity: bool = False,
    tool_result_budget: int = DEFAULT_TOOL_RESULT_BUDGET,
) -> list[BaseMessage]:
    """Return the trimmed conversation a reference model sees.

    System and tool messages are dropped, and so are assistant turns that only carry tool
    calls; no `tool_calls` are copied; content-part lists are flattened to their text; user
    and assistant text stay in order. A view that would end on an assistant turn gets a
    short user instruction appended. If nothing is left, the last user message is used.
    The advisor system prompt that the graph adds is not part of the view.

    Args:
        messages: LangChain messages or OpenAI-style dicts (`{"role": ..., "content": ...}`).
        tool_activity: Also show the current turn's tool traffic (for references re-run
            mid-turn): each tool call as a line `[called tool: name(args)]` on its assistant
            turn, each result as a user turn with a head-and-tail preview.
        tool_result_budget: Characters of each tool result (and call arguments) shown.

    Example:
        >>> view = reference_messages([
        ...     {"role": "system", "content": "long system prompt"},
        ...     {"role": "user", "content": "do the thing"},
        ...     {"role": "assistant", "content": "", "tool_calls": [
        ...         {"id": "c1", "type": "function",
        ...          "function": {"name": "f", "arguments": "{}"}}]},
        ...     {"role": "tool", "tool_call_id": "c1", "content": "tool result"},
        ... ])
        >>> [(m.type, m.content) for m in view]
        [('human', 'do the thing')]
    """
    converted = convert_to_messages(list(messages))
    turn = last_human_index(converted)
    view: list[BaseMessage] = []
    for i, message in enumerate(converted):
        text = message_text(message)
        if tool_activity and turn is not None and i > turn:
            text = _with_tool_activity(message, text, tool_result_budget)
            if isinstance(message, ToolMessage) and text:
                view.append(HumanMessage(content=text))
                continue
        if not text:
            continue
        if isinstance(message, HumanMessage):
            view.append(HumanMessage(content=text))
        elif isinstance(message, AIMessage):
            view.append(AIMessage(content=text))
    if not view:
        last = last_human_index(converted)
        # e.g. a user turn of images only: pass it whole rather than send nothing
        return [] if last is None else [HumanMessage(content=converted[last].content)]
    if isinstance(view[-1], AIMessage):
        view.append(HumanMessage(content=REFERENCE_CONTINUE_PROMPT))
    return view


def preview(text: str, budget: int) -> str:
    """`text` if it fits `budget` characters, else its head and tail around an omission mark."""
    if len(text) <= budget:
        return text
    half = max(budget // 2, 1)
    omitted = len(text) - 2 * half
    return f"{text[:half]}\n[... {omitted} chars omitted ...]\n{text[-half:]}"


def _with_tool_activity(message: BaseMessage, text: str, budget: int) -> str:
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [
            f"[called tool: {call['name']}({preview(json.dumps(call['args']), budget)})]"
            for call in message.tool_calls
        ]
        return "\n".join([text, *calls] if text else calls)
    if isinstance(message, ToolMessage):
        name = f" {message.name}" if message.name else ""
        return f"[tool result{name}]\n{preview(text, budget)}"
    return text


def message_text(message: BaseMessage) -> str:
    """The text of a message: its string content, or its text parts joined by newlines."""
    content = message.content
    if isinstance(content, str):
        return content.strip()
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n".join(parts).strip()


def last_human_index(messages: Sequence[BaseMessage]) -> int | None:
    """Index of the latest human message (where the current turn begins), or None."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i
    return None
