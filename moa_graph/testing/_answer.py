"""The stand-in's answer policy: what a model says to a chat request, deterministically.

In order:

1. A model's `script` (`ModelBehaviour.script`) replays its next reply, text or tool calls,
   exactly as written; then a fixed `reply`, when set, is the text.
2. Otherwise, when `tools` are offered and `tool_choice` is not `"none"`, the answer may call
   them: a named `tool_choice` calls that function; with `"auto"` (the default) it calls each
   tool the user's latest words ask for (its name, or a distinctive word of it such as
   "weather" for `get_weather`, or arithmetic when `calculator` is offered), unless the last
   message is a tool result; `"required"` always calls one (the one asked for, else
   `calculator` for arithmetic, else the first tool). `parallel_tool_calls: false` keeps the
   first call only. Arguments are valid against the tool's JSON schema
   (`moa_graph.testing._schema_values`), filled from the user's words where they fit.
3. Otherwise a text: after a tool result, "The result is <result>."; else a short answer
   naming the model and quoting the question (with the arithmetic worked out, and the number
   of reference answers a MoA guidance message carries). `response_format` turns it into JSON:
   `json_object` gives an object (keys the user quoted, e.g. 'setup', else `answer`),
   `json_schema` a value valid against the schema.
4. Then `stop` cuts the text before the first stop sequence, and `max_completion_tokens` /
   `max_tokens` keep that many tokens (whitespace words, as the usage count) with
   `finish_reason: "length"`; tool-call arguments are never cut.

Answers are a function of the request alone, so the same request (and `seed`) gives the same
answer, and `n` choices are `n` copies of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moa_graph.testing._request import (
    find_expression,
    guidance_references,
    is_guidance,
    last_user_text,
    offered_tools,
    safe_eval,
    text_of,
)
from moa_graph.testing._schema_values import Hints, value_for
from moa_graph.testing._stub_behaviour import ScriptedReply

__all__ = ["Answer", "bad_tool_args_answer", "plan_answer"]

_MAX_SUMMARY = 80
_CALCULATOR = "calculator"
# Truncated *and* mis-bracketed: LangChain's streaming parser repairs a merely truncated object
# (`{"expression": "17 *` becomes `{"expression": "17 *"}`), but gives up on a wrong bracket.
_BAD_ARGUMENTS = '{"expression": "17 *"]'
# Words of a tool's name too common to mean the user asked for that tool.
_GENERIC_WORDS = {
    "call",
    "create",
    "fetch",
    "find",
    "function",
    "list",
    "lookup",
    "make",
    "query",
    "read",
    "search",
    "tool",
    "update",
    "with",
    "write",
    "from",
    "info",
    "data",
    "value",
}
_NAME_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_QUOTED_KEY = re.compile(r"['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]")
_WORD_END = re.compile(r"\S+")


@dataclass(frozen=True)
class Answer:
    """What the assistant says: text, or tool calls, and whether the text was cut short."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False

    @property
    def finish_reason(self) -> str:
        """`length` when cut at the token limit, `tool_calls` when calling a tool, else `stop`."""
        if self.truncated:
            return "length"
        return "tool_calls" if self.tool_calls else "stop"


def _call_id(body: Mapping[str, Any], index: int = 0) -> str:
    # Derived from the request rather than a counter so that concurrent runs get the same ids.
    digest = hashlib.sha256(
        json.dumps([body.get("model"), body.get("messages")], sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"call_{digest[:24]}" + (f"_{index}" if index else "")


def _tool_call(
    body: Mapping[str, Any], name: str, arguments: str, index: int = 0, call_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": call_id or _call_id(body, index),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def plan_answer(
    body: Mapping[str, Any],
    *,
    model: str,
    reply: str | None = None,
    scripted: ScriptedReply | None = None,
) -> Answer:
    """Decide the deterministic answer to a chat request (see the module docstring).

    Args:
        body: The request JSON, already validated.
        model: The requested model name, quoted in plain answers.
        reply: A fixed text reply that overrides the policy.
        scripted: The model's next scripted reply, which overrides everything.

    Returns:
        Tool calls, or a text cut by `stop` and the token limit.
    """
    if scripted is not None:
        calls = [
            _tool_call(
                body,
                call.name,
                call.arguments
                if isinstance(call.arguments, str)
                else json.dumps(call.arguments, ensure_ascii=False),
                index,
                call.id,
            )
            for index, call in enumerate(scripted.tool_calls)
        ]
        answer = Answer(content=scripted.content, tool_calls=calls)
    elif reply is not None:
        answer = Answer(content=reply)
    else:
        answer = _policy(body, model)
    return _limited(body, answer)


def _policy(body: Mapping[str, Any], model: str) -> Answer:
    messages: list[Mapping[str, Any]] = list(body.get("messages") or [])
    # A re-run's guidance follows the tool results it advises on: look past it.
    last: Mapping[str, Any] = next((m for m in reversed(messages) if not is_guidance(m)), {})
    user_text = last_user_text(messages)
    expression = find_expression(user_text) if user_text else None
    tools = offered_tools(body)
    if tools and body.get("tool_choice") != "none":
        calls = _tool_calls(
            body,
            tools,
            after_result=last.get("role") == "tool",
            user_text=user_text or "",
            expression=expression,
        )
        if calls:
            return Answer(content=None, tool_calls=calls)
    if last.get("role") == "tool":
        text = f"The result is {text_of(last.get('content'))}."
    elif user_text is None:
        text = f"[{model}] No question was asked."
    else:
        text = _text_answer(model, user_text, expression, guidance_references(messages))
    return Answer(content=_formatted(body, text, user_text or ""))


def _text_answer(model: str, user_text: str, expression: str | None, weighed: int | None) -> str:
    summary = " ".join(user_text.split())
    if len(summary) > _MAX_SUMMARY:
        summary = summary[: _MAX_SUMMARY - 3].rstrip() + "..."
    text = f'[{model}] Answer to "{summary}".'
    if weighed is not None:
        text = f'[{model}] Answer to "{summary}", weighing {weighed} reference answers.'
    value = safe_eval(expression) if expression else None
    if value is not None:
        text += f" {expression} = {value}."
    return text


def _asked_for(name: str, text: str, expression: str | None) -> bool:
    """Whether the user's words ask for tool `name`."""
    if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE):
        return True
    if name == _CALCULATOR and expression:
        return True
    words = {w.lower() for w in _NAME_WORD.findall(name)}
    distinctive = {w for w in words if len(w) >= 4 and w not in _GENERIC_WORDS}
    said = {w.lower() for w in re.findall(r"\w+", text)}
    return bool(distinctive & said)


def _tool_calls(
    body: Mapping[str, Any],
    tools: Mapping[str, Mapping[str, Any]],
    *,
    after_result: bool,
    user_text: str,
    expression: str | None,
) -> list[dict[str, Any]]:
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        names = [str(choice["function"]["name"])]
    else:
        asked = [] if after_result else [n for n in tools if _asked_for(n, user_text, expression)]
        if choice == "required" and not asked:
            asked = [_CALCULATOR if expression and _CALCULATOR in tools else next(iter(tools))]
        names = asked
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    hints = Hints.from_text(user_text, ignore=tuple(tools))
    return [
        _tool_call(
            body,
            name,
            json.dumps(value_for(tools[name].get("parameters") or {}, hints)),
            index,
        )
        for index, name in enumerate(names)
    ]


def _formatted(body: Mapping[str, Any], text: str, user_text: str) -> str:
    """The text as `response_format` asks for it: unchanged, a JSON object, or schema-valid JSON."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        keys = list(dict.fromkeys(_QUOTED_KEY.findall(user_text))) or ["answer"]
        return json.dumps({key: text for key in keys}, ensure_ascii=False)
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema") or {}
        return json.dumps(value_for(schema, Hints.from_text(user_text)), ensure_ascii=False)
    return text


def _limited(body: Mapping[str, Any], answer: Answer) -> Answer:
    """Apply `stop` and the token limit to the answer's text."""
    content = answer.content
    if content is None:
        return answer
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
    cuts = [content.find(s) for s in stops if s and s in content]
    if cuts:
        content = content[: min(cuts)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = list(_WORD_END.finditer(content))
    truncated = False
    if isinstance(limit, int) and len(words) > limit:
        content, truncated = content[: words[limit - 1].end()], True
    return Answer(content=content, tool_calls=answer.tool_calls, truncated=truncated)


def bad_tool_args_answer(body: Mapping[str, Any]) -> Answer:
    """A tool call whose `arguments` string is truncated, invalid JSON.

    Args:
        body: The request JSON; the call goes to its first offered tool, else `calculator`.

    Returns:
        The broken tool call.
    """
    names = list(offered_tools(body))
    return Answer(
        content=None,
        tool_calls=[_tool_call(body, names[0] if names else _CALCULATOR, _BAD_ARGUMENTS)],
    )
