"""The Responses API (`POST /v1/responses`) on top of the chat answer policy.

A Responses request is read as the equivalent chat request (`instructions` → a system
message; `input` as a string or as items: messages with text parts, `function_call` items as
an assistant's tool calls, `function_call_output` items as tool results; flat function
`tools` and `tool_choice`; `text.format` → `response_format`; `max_output_tokens` → the
token limit), validated and answered like one, and the answer is sent back as a `response`
object with `message` and `function_call` output items and `input_tokens`/`output_tokens`
usage, or streamed as the typed events OpenAI sends (`response.created`, ...,
`response.output_text.delta`, `response.function_call_arguments.delta`, ...,
`response.completed`). Stateless: `previous_response_id` is refused with a 400.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from moa_graph.testing._answer import Answer
from moa_graph.testing._request import text_of
from moa_graph.testing._validation import InvalidRequest
from moa_graph.testing._wire import pieces, usage_of

__all__ = ["chat_request_of", "complete_response", "response_body", "response_events"]

_ROLES = {"user", "assistant", "system", "developer"}


def chat_request_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request equivalent to a Responses request.

    Raises:
        InvalidRequest: When `input` or its items are not what OpenAI accepts, or the request
            needs stored state (`previous_response_id`).
    """
    if body.get("previous_response_id"):
        raise InvalidRequest(
            "the stand-in keeps no responses: send the whole conversation as 'input'",
            param="previous_response_id",
        )
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            _add_item(messages, item, index)
    else:
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = [
        {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
        for tool in body.get("tools") or []
        if isinstance(tool, Mapping) and tool.get("type") == "function"
    ]
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None and tools:
        chat["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None and tools:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    text_format = (body.get("text") or {}).get("format")
    if isinstance(text_format, Mapping) and text_format.get("type") == "json_schema":
        spec = {k: v for k, v in text_format.items() if k != "type"}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(text_format, Mapping):
        chat["response_format"] = {"type": text_format.get("type")}
    for key in ("temperature", "seed"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    return chat


def _add_item(messages: list[dict[str, Any]], item: Any, index: int) -> None:
    where = f"input[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value for '{where}.role': {role!r}.", param=f"{where}.role"
            )
        content = item.get("content")
        if isinstance(content, list):  # input_text / output_text parts
            content = " ".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and "text" in part
            )
        messages.append({"role": role, "content": content if isinstance(content, str) else ""})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments")},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else text_of(output)
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
    elif kind != "reasoning":  # reasoning items carry nothing the stand-in reads
        raise InvalidRequest(f"Invalid value for '{where}.type': {kind!r}.", param=f"{where}.type")


def _output_items(answer: Answer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if answer.content is not None and (answer.content or not answer.tool_calls):
        items.append(
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": answer.content,
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        )
    for call in answer.tool_calls:
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{uuid.uuid4().hex[:24]}",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    return items


def response_body(
    body: Mapping[str, Any],
    chat: Mapping[str, Any],
    answer: Answer | None,
    *,
    model: str,
    response_id: str,
    created: int,
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `response` object: completed with `answer`, or in progress when it is `None`."""
    usage = usage_of(chat, answer) if answer is not None else None
    status = "in_progress" if answer is None else "incomplete" if answer.truncated else "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output if output is not None else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": body.get("metadata") or {},
        "usage": None
        if usage is None
        else {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        },
    }


def complete_response(
    body: Mapping[str, Any],
    chat: Mapping[str, Any],
    answer: Answer,
    *,
    model: str,
    response_id: str,
    created: int,
) -> dict[str, Any]:
    """The finished `response` object of a non-streamed request."""
    return response_body(
        body,
        chat,
        answer,
        model=model,
        response_id=response_id,
        created=created,
        output=_output_items(answer),
    )


def response_events(
    body: Mapping[str, Any],
    chat: Mapping[str, Any],
    answer: Answer,
    *,
    model: str,
    response_id: str,
    created: int,
) -> Iterator[dict[str, Any]]:
    """The typed events of a streamed response, each with its `sequence_number`."""
    items = _output_items(answer)
    opening = response_body(body, chat, None, model=model, response_id=response_id, created=created)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    for index, item in enumerate(items):
        events.extend(_item_events(item, index))
    events.append(
        {
            "type": "response.completed",
            "response": response_body(
                body,
                chat,
                answer,
                model=model,
                response_id=response_id,
                created=created,
                output=items,
            ),
        }
    )
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}


def _item_events(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    place = {"output_index": index, "item_id": item["id"]}
    if item["type"] == "function_call":
        arguments = item["arguments"]
        return [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "arguments": "", "status": "in_progress"},
            },
            {"type": "response.function_call_arguments.delta", **place, "delta": arguments},
            {
                "type": "response.function_call_arguments.done",
                **place,
                "arguments": arguments,
                "name": item["name"],
            },
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
    part = item["content"][0]
    text = part["text"]
    where = {**place, "content_index": 0}
    return [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in (pieces(text) if text else [])
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
