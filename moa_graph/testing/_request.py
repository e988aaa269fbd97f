"""Reading a chat request: message text, the user's latest words, offered tools, arithmetic.

Pure functions over the request JSON, shared by the answer policy, the usage count and the
Responses API adapter. Nothing here decides what to answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.tools import evaluate_arithmetic

__all__ = [
    "count_tokens",
    "find_expression",
    "guidance_references",
    "is_guidance",
    "last_user_text",
    "offered_tools",
    "safe_eval",
    "text_of",
]

_GUIDANCE_REFERENCE = re.compile(r"^Reference \d+ — ", re.MULTILINE)


def text_of(content: Any) -> str:
    """Message content as plain text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") in {"text", "input_text"}
        ]
        return " ".join(p for p in parts if p)
    return ""


def is_guidance(message: Mapping[str, Any]) -> bool:
    """A MoA guidance message: a user turn that the user did not write."""
    text = text_of(message.get("content")) if message.get("role") == "user" else ""
    return text.startswith(GUIDANCE_TITLE)


def last_user_text(messages: list[Mapping[str, Any]]) -> str | None:
    """The user's latest words, passing over a MoA guidance message (a user turn too)."""
    for message in reversed(messages):
        if message.get("role") == "user" and not is_guidance(message):
            return text_of(message.get("content"))
    return None


def guidance_references(messages: list[Mapping[str, Any]]) -> int | None:
    """How many reference answers a MoA guidance message carries (None: no guidance)."""
    for message in messages:
        if is_guidance(message):
            return len(_GUIDANCE_REFERENCE.findall(text_of(message.get("content"))))
    return None


def offered_tools(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The request's function tools: name → `function` object (name, parameters, strict)."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = dict(function)
    return tools


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


# A run of characters that can appear in an arithmetic expression; a candidate must also have an
# operator between two operands, so that "version 2.0" or "(see above)" are not expressions.
_EXPR_RUN = re.compile(r"[\d.()+\-*/ \t]+")
_HAS_OPERATOR = re.compile(r"[\d.)]\s*(?:\*\*|[-+*/])\s*[-+(]*\s*[\d.]")


def _trim_expression(run: str) -> str:
    """Strip the prose punctuation a sentence leaves around an expression."""
    expr = run.strip().rstrip(".").strip()
    # Sentences like "(that is 2 + 3)" leave unbalanced brackets at the ends; drop them.
    while expr.endswith(")") and expr.count(")") > expr.count("("):
        expr = expr[:-1].rstrip()
    while expr.startswith("(") and expr.count("(") > expr.count(")"):
        expr = expr[1:].lstrip()
    return expr


def find_expression(text: str) -> str | None:
    """Find the first arithmetic expression in a sentence.

    Args:
        text: Free text, e.g. "What is 17 * 23?".

    Returns:
        The expression as written (e.g. "17 * 23"), or `None` when there is none.
    """
    for match in _EXPR_RUN.finditer(text):
        expr = _trim_expression(match.group())
        if _HAS_OPERATOR.search(expr):
            return expr
    return None


def safe_eval(expression: str) -> str | None:
    """The value of a plain arithmetic expression as text ("391"), or None when it is not one.

    The same evaluator as the `calculator` tool, so the stand-in and the tool agree.
    """
    try:
        return str(evaluate_arithmetic(expression))
    except ValueError:
        return None
