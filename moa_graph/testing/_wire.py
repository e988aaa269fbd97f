"""Chat Completions wire shapes: the completion, its stream chunks, usage and errors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from moa_graph.testing._answer import Answer
from moa_graph.testing._request import count_tokens, text_of

__all__ = ["choice_count", "completion_body", "completion_chunks", "error_body", "usage_of"]

SYSTEM_FINGERPRINT = "fp_moa_graph_stub"
"""Sent with every completion, as OpenAI does; the stand-in's answers never vary by build."""


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error in the OpenAI JSON shape.

    Args:
        message: Human-readable description.
        type_: OpenAI error type, e.g. `invalid_request_error`.
        param: The request field at fault, if any.
        code: Optional machine-readable code.

    Returns:
        `{"error": {"message", "type", "param", "code"}}`.
    """
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def choice_count(body: Mapping[str, Any]) -> int:
    """How many choices the request asked for (`n`, default 1)."""
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def usage_of(body: Mapping[str, Any], answer: Answer) -> dict[str, Any]:
    """Token usage counted as whitespace words of the prompt and of the answer (times `n`)."""
    prompt = sum(
        count_tokens(text_of(m.get("content")))
        for m in body.get("messages") or []
        if isinstance(m, Mapping)
    )
    completion = count_tokens(answer.content or "") + sum(
        count_tokens(c["function"]["name"] + " " + c["function"]["arguments"])
        for c in answer.tool_calls
    )
    completion *= choice_count(body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    body: Mapping[str, Any],
    answer: Answer,
    *,
    model: str,
    completion_id: str,
    created: int,
    with_choices: bool = True,
) -> dict[str, Any]:
    """A non-streaming `chat.completion` response with `n` identical choices.

    Args:
        body: The request JSON, for `n` and the usage count.
        answer: What to say.
        model: Model name echoed back.
        completion_id: The `id` field.
        created: Unix timestamp.
        with_choices: `False` gives an otherwise valid completion whose `choices` is empty.

    Returns:
        The response JSON.
    """
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    choices = [
        {
            "index": index,
            "message": message,
            "finish_reason": answer.finish_reason,
            "logprobs": None,
        }
        for index in range(choice_count(body))
    ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices if with_choices else [],
        "usage": usage_of(body, answer),
    }


def pieces(text: str) -> list[str]:
    """Split text word by word, keeping whitespace, so the pieces join back to the text."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def completion_chunks(
    body: Mapping[str, Any],
    answer: Answer,
    *,
    model: str,
    completion_id: str,
    created: int,
) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` events of a streamed answer, without the final `[DONE]`.

    Args:
        body: The request JSON (`n` choices, one after the other;
            `stream_options.include_usage` adds a final usage chunk, and `usage: null` on
            the others, as OpenAI sends).
        answer: What to say.
        model: Model name echoed back.
        completion_id: The `id` shared by all chunks.
        created: Unix timestamp.

    Yields:
        Per choice: role chunk, content or tool-call deltas, the finish chunk; then the usage
        chunk if asked.
    """
    options = body.get("stream_options")
    with_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            ],
        }
        if with_usage:
            event["usage"] = None
        return event

    for choice in range(choice_count(body)):
        yield chunk(choice, {"role": "assistant", "content": ""})
        if answer.content:
            for piece in pieces(answer.content):
                yield chunk(choice, {"content": piece})
        for index, call in enumerate(answer.tool_calls):
            head = {"name": call["function"]["name"], "arguments": ""}
            yield chunk(
                choice,
                {
                    "tool_calls": [
                        {"index": index, "id": call["id"], "type": "function", "function": head}
                    ]
                },
            )
            arguments = call["function"]["arguments"]
            middle = max(1, len(arguments) // 2)
            for part in (arguments[:middle], arguments[middle:]):
                if part:
                    yield chunk(
                        choice, {"tool_calls": [{"index": index, "function": {"arguments": part}}]}
                    )
        yield chunk(choice, {}, answer.finish_reason)
    if with_usage:
        yield {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": usage_of(body, answer),
        }
