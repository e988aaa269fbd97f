"""Request validation as OpenAI does it: a wrong request is a 400 in OpenAI's error shape.

The stand-in checks what OpenAI's Chat Completions endpoint rejects, so a malformed request
from moa_graph (or any client under test) fails here as it would against the real API instead
of being answered: `model` and `messages` present; each message of a known role with content
of the right type; every `tool` message answering a tool call id of the assistant message
before it, and every assistant tool call answered before the next non-tool message; `tools`
as function definitions with valid names; `tool_choice` one of `none`/`auto`/`required` or a
function that is offered, and only with `tools` (as `parallel_tool_calls`);
`response_format` `text`, `json_object` or `json_schema` with a `name` and a `schema`; a
`strict` schema (of `response_format` or of a tool) closed the way OpenAI's structured
outputs require (`additionalProperties: false` and every property `required`, in every
object); `n`, `max_tokens`, `max_completion_tokens` positive integers, `seed` an integer,
`stop` a string or up to 4 strings, `temperature` within 0..2, `stream_options` only when
streaming. Unknown top-level keys are accepted, as OpenAI accepts new parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidRequest", "check_strict_schema", "validate_chat_request"]

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CHOICE_MODES = {"none", "auto", "required"}
_MAX_STOP = 4
_MAX_N = 128


class InvalidRequest(Exception):
    """A request OpenAI would reject with 400; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _fail(message: str, param: str, code: str | None = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def validate_chat_request(body: Any) -> None:
    """Check a Chat Completions request body.

    Args:
        body: The decoded JSON.

    Raises:
        InvalidRequest: The first problem found, worded like OpenAI's message.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("you must provide a model parameter", "model", None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty list of message objects", "messages")
    _check_messages(messages)
    names = _check_tools(body.get("tools"))
    _check_tool_choice(body, names)
    _check_response_format(body.get("response_format"))
    _check_json_mode(body)
    _check_sampling(body)


def _check_messages(messages: list[Any]) -> None:
    pending: set[str] = set()  # tool call ids of the last assistant message, not yet answered
    for index, message in enumerate(messages):
        where = f"messages.[{index}]"
        if not isinstance(message, dict):
            raise _fail(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        role = message.get("role")
        if role not in _ROLES:
            raise _fail(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
                f"{where}.role",
            )
        if role != "tool" and pending:
            raise _fail(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(pending))}",
                f"{where}.role",
            )
        _check_content(message, role, where)
        if role == "assistant":
            pending = _assistant_call_ids(message, where)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _fail(
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    f"{where}.tool_call_id",
                    "missing_required_parameter",
                )
            if call_id not in pending:
                raise _fail(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceeding message with 'tool_calls' (no pending call {call_id!r}).",
                    f"{where}.role",
                )
            pending.discard(call_id)
    if pending:
        raise _fail(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(sorted(pending))}",
            "messages",
        )


def _check_content(message: Mapping[str, Any], role: str, where: str) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        if role == "assistant" or "content" not in message:
            raise _fail(
                f"Missing required parameter: '{where}.content'.",
                f"{where}.content",
                "missing_required_parameter",
            )
        raise _fail(f"Invalid type for '{where}.content': got null.", f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not all(
        isinstance(part, Mapping) and isinstance(part.get("type"), str) for part in content
    ):
        raise _fail(
            f"Invalid type for '{where}.content': expected a string or an array of content "
            "parts with a 'type'.",
            f"{where}.content",
            "invalid_type",
        )


def _assistant_call_ids(message: Mapping[str, Any], where: str) -> set[str]:
    calls = message.get("tool_calls")
    if calls is None:
        return set()
    if not isinstance(calls, list):
        raise _fail(f"Invalid type for '{where}.tool_calls'.", f"{where}.tool_calls")
    ids: set[str] = set()
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(call, Mapping)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise _fail(
                f"Invalid '{where}.tool_calls.[{number}]': expected an id and a function with "
                "a name and string arguments.",
                f"{where}.tool_calls.[{number}]",
            )
        ids.add(call["id"])
    return ids


def _check_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise _fail("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    if not tools:
        message = "Invalid 'tools': empty array. Expected an array with minimum length 1."
        raise _fail(message, "tools")
    names: set[str] = set()
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise _fail(f"Invalid value for 'tools.[{index}].type'.", f"tools.[{index}].type")
        if not isinstance(function, Mapping):
            raise _fail(
                f"Missing required parameter: 'tools.[{index}].function'.",
                f"tools.[{index}].function",
                "missing_required_parameter",
            )
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _fail(
                f"Invalid 'tools.[{index}].function.name': string does not match pattern "
                "'^[a-zA-Z0-9_-]{1,64}$'.",
                f"tools.[{index}].function.name",
                "invalid_value",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise _fail(
                f"Invalid type for 'tools.[{index}].function.parameters'.",
                f"tools.[{index}].function.parameters",
            )
        if function.get("strict") is True:
            check_strict_schema(
                parameters or {}, param=f"tools.[{index}].function.parameters", label=name
            )
        names.add(name)
    return names


def _check_tool_choice(body: Mapping[str, Any], names: set[str]) -> None:
    for key in ("tool_choice", "parallel_tool_calls"):
        if key in body and body[key] is not None and not names:
            raise _fail(
                f"Invalid value for '{key}': '{key}' is only allowed when 'tools' are specified.",
                key,
            )
    if "parallel_tool_calls" in body and not isinstance(body["parallel_tool_calls"], bool | None):
        raise _fail("Invalid type for 'parallel_tool_calls'.", "parallel_tool_calls")
    choice = body.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in _CHOICE_MODES):
        return
    function = choice.get("function") if isinstance(choice, Mapping) else None
    if (
        not isinstance(choice, Mapping)
        or choice.get("type") != "function"
        or not isinstance(function, Mapping)
    ):
        raise _fail(
            f"Invalid value for 'tool_choice': {choice!r}. Expected 'none', 'auto', 'required' "
            "or a named function.",
            "tool_choice",
        )
    if function.get("name") not in names:
        raise _fail(
            f"Invalid value for 'tool_choice': no function named {function.get('name')!r} "
            "was specified in the 'tools' parameter.",
            "tool_choice",
        )


def _check_json_mode(body: Mapping[str, Any]) -> None:
    """JSON mode needs the word "json" somewhere in the messages, as OpenAI insists."""
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_object":
        return
    if "json" not in json.dumps(body.get("messages"), ensure_ascii=False).lower():
        raise _fail(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of "
            "type 'json_object'.",
            "messages",
        )


def _check_response_format(response_format: Any) -> None:
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in {"text", "json_object"}:
        return
    if kind != "json_schema":
        raise _fail(
            f"Invalid value for 'response_format.type': {kind!r}. Supported values are: "
            "'text', 'json_object' and 'json_schema'.",
            "response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise _fail(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise _fail(
            "Invalid type for 'response_format.json_schema.schema'.",
            "response_format.json_schema.schema",
        )
    if spec.get("strict") is True:
        check_strict_schema(
            schema or {}, param="response_format.json_schema.schema", label=spec["name"]
        )


def check_strict_schema(schema: Mapping[str, Any], *, param: str, label: str) -> None:
    """Check a schema used with `strict: true` the way OpenAI's structured outputs do.

    Every object (at the root, in `properties`, `items`, `anyOf`, `$defs`/`definitions`) must
    set `additionalProperties: false` and list every property in `required`.

    Args:
        schema: The JSON schema.
        param: The request field that holds it, for the error.
        label: The schema's or tool's name, for the message.

    Raises:
        InvalidRequest: The first object that is not closed.
    """
    problem = _open_object(schema, "")
    if problem is not None:
        raise _fail(
            f"Invalid schema for {label!r}: In context={problem}, "
            + (
                "'additionalProperties' is required to be supplied and to be false."
                if "additionalProperties" in problem
                else "'required' is required to be supplied and to be an array including "
                "every key in properties."
            ),
            param,
            "invalid_json_schema",
        )


def _open_object(schema: Any, path: str) -> str | None:
    if not isinstance(schema, Mapping):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"('{path or 'root'}'), additionalProperties"
        properties = schema.get("properties") or {}
        if set(properties) - set(schema.get("required") or []):
            return f"('{path or 'root'}'), required"
    children: list[tuple[str, Any]] = []
    for key, value in (schema.get("properties") or {}).items():
        children.append((f"{path}properties/{key}/", value))
    if isinstance(schema.get("items"), Mapping):
        children.append((f"{path}items/", schema["items"]))
    for key in ("anyOf", "allOf", "oneOf"):
        for number, branch in enumerate(schema.get(key) or []):
            children.append((f"{path}{key}/{number}/", branch))
    for key in ("$defs", "definitions"):
        for name, definition in (schema.get(key) or {}).items():
            children.append((f"{path}{key}/{name}/", definition))
    for child_path, child in children:
        problem = _open_object(child, child_path)
        if problem is not None:
            return problem
    return None


def _check_sampling(body: Mapping[str, Any]) -> None:
    for key in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise _fail(f"Invalid value for '{key}': expected an integer >= 1.", key)
    n = body.get("n")
    if isinstance(n, int) and n > _MAX_N:
        raise _fail(f"Invalid value for 'n': expected at most {_MAX_N}.", "n")
    seed = body.get("seed")
    if seed is not None and type(seed) is not int:
        raise _fail("Invalid type for 'seed': expected an integer.", "seed", "invalid_type")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _fail("Invalid type for 'stop': expected a string or strings.", "stop")
        if len(stop) > _MAX_STOP:
            raise _fail(f"Invalid 'stop': expected at most {_MAX_STOP} sequences.", "stop")
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise _fail("Invalid value for 'temperature': expected a number in [0, 2].", "temperature")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise _fail("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise _fail(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
