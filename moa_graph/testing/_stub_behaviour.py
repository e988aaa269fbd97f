"""What the stand-in server answers: behaviour models, the deterministic reply, its wire shapes.

Also the per-server behaviour table with its bookkeeping (`StubState`) and the behaviour file
reader (`load_stub_config`). Kept apart from `moa_graph.testing.server` so the HTTP plumbing
(threads, event loop, aiohttp) and the synchronous request → answer logic can be read and
changed on their own; nothing here awaits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import threading
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError

from moa_graph.errors import ConfigError
from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.tools import evaluate_arithmetic

__all__ = [
    "RECORD_LIMIT",
    "Answer",
    "BehaviourLike",
    "Fault",
    "FaultKind",
    "ModelBehaviour",
    "StubState",
    "bad_tool_args_answer",
    "coerce_behaviour",
    "completion_body",
    "completion_chunks",
    "count_tokens",
    "error_body",
    "find_expression",
    "load_stub_config",
    "plan_answer",
    "safe_eval",
    "usage_of",
]

FaultKind = Literal[
    "status",
    "reset",
    "hang",
    "malformed",
    "cut_stream",
    "no_choices",
    "bad_tool_args",
    "trickle",
    "endless_stream",
]
"""The faults: `status` (an HTTP error, with `Retry-After`), `reset` (the connection dropped
unanswered), `hang` (an answer after `hang_s`), `malformed` (a body that is not a completion),
`cut_stream` (a stream dropped after three chunks; non-streaming: `reset`), `no_choices`,
`bad_tool_args` (a tool call whose arguments are not JSON), `trickle` (the whole response,
status line and headers included, one byte every `interval_s`: each read gets data in time,
so only a bound on the whole request ends it) and `endless_stream` (a stream whose chunks,
one every `interval_s`, never end; non-streaming: a body that never ends). The slow faults
end when the client disconnects or the server stops."""

RECORD_LIMIT = 200
"""Recorded request bodies kept per model; older ones are dropped."""
_MAX_SUMMARY = 80
_GUIDANCE_REFERENCE = re.compile(r"^Reference \d+ — ", re.MULTILINE)
# Truncated *and* mis-bracketed: LangChain's streaming parser repairs a merely truncated object
# (`{"expression": "17 *` becomes `{"expression": "17 *"}`), but gives up on a wrong bracket.
_BAD_ARGUMENTS = '{"expression": "17 *"]'


class Fault(BaseModel):
    """A failure the server injects for one model instead of (or before) its normal answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: FaultKind
    """Which failure: an HTTP error status, a dropped connection, a hang, a broken body, a
    trickle, an endless stream, etc. (see `FaultKind`)."""
    status: int = Field(default=500, ge=400, le=599)
    """HTTP status for `kind="status"`."""
    retry_after: float | None = Field(default=None, ge=0)
    """Seconds sent in a `Retry-After` header with `kind="status"`; no header when `None`."""
    message: str | None = None
    """For `kind="status"`: the error message in the body (default: names the status and model),
    e.g. a long provider error that echoes the request's key."""
    times: int | None = Field(default=None, ge=0)
    """Fail only the first N requests for the model, then answer normally; `None` = always."""
    rate: float | None = Field(default=None, ge=0, le=1)
    """Fail each request with this probability (`0.05`: about 5 in 100), drawn from an RNG
    per model seeded by the server's `seed`, so each model fails the same requests of its
    sequence on every run; `None` = every request. With `times`, at most N requests fail."""
    hang_s: float = Field(default=3600.0, ge=0)
    """For `kind="hang"`: how long to sleep before answering (a client timeout should fire)."""
    interval_s: float = Field(default=0.5, gt=0)
    """For `kind="trickle"`: seconds between bytes; for `kind="endless_stream"`: between
    chunks."""


class ModelBehaviour(BaseModel):
    """How the server answers one model name."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    latency: NonNegativeFloat | tuple[NonNegativeFloat, NonNegativeFloat] = 0.0
    """Seconds to wait before answering; a `(lo, hi)` pair draws uniformly from a seeded RNG."""
    reply: str | None = None
    """Fixed text reply that replaces the default deterministic answer."""
    fault: Fault | None = None
    """Failure to inject, if any."""


BehaviourLike = ModelBehaviour | Mapping[str, Any]


def coerce_behaviour(value: ModelBehaviour | Mapping[str, Any]) -> ModelBehaviour:
    """Accept a `ModelBehaviour` or the plain mapping a config file holds.

    Args:
        value: A behaviour or its mapping form.

    Returns:
        The validated behaviour.

    Raises:
        pydantic.ValidationError: When the mapping has unknown keys or bad values.
    """
    if isinstance(value, ModelBehaviour):
        return value
    return ModelBehaviour.model_validate(dict(value))


# --- reading the request -------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Message content as plain text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        ]
        return " ".join(p for p in parts if p)
    return ""


def _is_guidance(message: Mapping[str, Any]) -> bool:
    """A MoA guidance message: a user turn that the user did not write."""
    text = _text_of(message.get("content")) if message.get("role") == "user" else ""
    return text.startswith(GUIDANCE_TITLE)


def _last_user_text(messages: list[Mapping[str, Any]]) -> str | None:
    """The user's latest words, passing over a MoA guidance message (a user turn too)."""
    for message in reversed(messages):
        if message.get("role") == "user" and not _is_guidance(message):
            return _text_of(message.get("content"))
    return None


def _guidance_references(messages: list[Mapping[str, Any]]) -> int | None:
    """How many reference answers a MoA guidance message carries (None: no guidance)."""
    for message in messages:
        if _is_guidance(message):
            return len(_GUIDANCE_REFERENCE.findall(_text_of(message.get("content"))))
    return None


def _tool_names(body: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


# --- arithmetic ----------------------------------------------------------------------------

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


# --- the answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the assistant says: text, or tool calls, and the resulting finish reason."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        """`tool_calls` when the answer calls a tool, else `stop`."""
        return "tool_calls" if self.tool_calls else "stop"


def _call_id(body: Mapping[str, Any]) -> str:
    # Derived from the request rather than a counter so that concurrent runs get the same ids.
    digest = hashlib.sha256(
        json.dumps([body.get("model"), body.get("messages")], sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"call_{digest[:24]}"


def _tool_call(body: Mapping[str, Any], name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": _call_id(body),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def plan_answer(body: Mapping[str, Any], *, model: str, reply: str | None = None) -> Answer:
    """Decide the deterministic answer to a chat request.

    Args:
        body: The request JSON (`messages`, optional `tools`).
        model: The requested model name, quoted in plain answers.
        reply: A fixed reply that overrides the rules below.

    Returns:
        A tool result echo, a `calculator` tool call, or a short text naming the model.
    """
    if reply is not None:
        return Answer(content=reply)
    messages: list[Mapping[str, Any]] = list(body.get("messages") or [])
    # A re-run's guidance follows the tool results it advises on: look past it.
    last: Mapping[str, Any] = next((m for m in reversed(messages) if not _is_guidance(m)), {})
    if last.get("role") == "tool":
        return Answer(content=f"The result is {_text_of(last.get('content'))}.")
    user_text = _last_user_text(messages)
    expression = find_expression(user_text) if user_text else None
    if expression and "calculator" in _tool_names(body):
        arguments = json.dumps({"expression": expression})
        return Answer(content=None, tool_calls=[_tool_call(body, "calculator", arguments)])
    if user_text is None:
        return Answer(content=f"[{model}] No question was asked.")
    summary = " ".join(user_text.split())
    if len(summary) > _MAX_SUMMARY:
        summary = summary[: _MAX_SUMMARY - 3].rstrip() + "..."
    text = f'[{model}] Answer to "{summary}".'
    weighed = _guidance_references(messages)
    if weighed is not None:
        text = f'[{model}] Answer to "{summary}", weighing {weighed} reference answers.'
    value = safe_eval(expression) if expression else None
    if value is not None:
        text += f" {expression} = {value}."
    return Answer(content=text)


def bad_tool_args_answer(body: Mapping[str, Any]) -> Answer:
    """A tool call whose `arguments` string is truncated, invalid JSON.

    Args:
        body: The request JSON; the call goes to its first offered tool, else `calculator`.

    Returns:
        The broken tool call.
    """
    names = _tool_names(body)
    return Answer(
        content=None,
        tool_calls=[_tool_call(body, names[0] if names else "calculator", _BAD_ARGUMENTS)],
    )


# --- wire shapes ---------------------------------------------------------------------------


def error_body(message: str, *, type_: str, code: str | None = None) -> dict[str, Any]:
    """An error in the OpenAI JSON shape.

    Args:
        message: Human-readable description.
        type_: OpenAI error type, e.g. `invalid_request_error`.
        code: Optional machine-readable code.

    Returns:
        `{"error": {"message", "type", "param", "code"}}`.
    """
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def usage_of(body: Mapping[str, Any], answer: Answer) -> dict[str, int]:
    """Token usage counted as whitespace words of the prompt and of the answer."""
    prompt = sum(
        count_tokens(_text_of(m.get("content")))
        for m in body.get("messages") or []
        if isinstance(m, Mapping)
    )
    completion = count_tokens(answer.content or "") + sum(
        count_tokens(c["function"]["name"] + " " + c["function"]["arguments"])
        for c in answer.tool_calls
    )
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
    """A non-streaming `chat.completion` response.

    Args:
        body: The request JSON, for the usage count.
        answer: What to say.
        model: Model name echoed back.
        completion_id: The `id` field.
        created: Unix timestamp.
        with_choices: `False` gives an otherwise valid completion whose `choices` is empty.

    Returns:
        The response JSON.
    """
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": None,
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice] if with_choices else [],
        "usage": usage_of(body, answer),
    }


def _pieces(text: str) -> list[str]:
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
        body: The request JSON (`stream_options.include_usage` adds a final usage chunk).
        answer: What to say.
        model: Model name echoed back.
        completion_id: The `id` shared by all chunks.
        created: Unix timestamp.

    Yields:
        Role chunk, content or tool-call deltas, the finish chunk, then the usage chunk if asked.
    """

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""})
    if answer.content:
        for piece in _pieces(answer.content):
            yield chunk({"content": piece})
    for index, call in enumerate(answer.tool_calls):
        head = {"name": call["function"]["name"], "arguments": ""}
        yield chunk(
            {
                "tool_calls": [
                    {"index": index, "id": call["id"], "type": "function", "function": head}
                ]
            }
        )
        arguments = call["function"]["arguments"]
        middle = max(1, len(arguments) // 2)
        for part in (arguments[:middle], arguments[middle:]):
            if part:
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield chunk({}, answer.finish_reason)
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        yield {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage_of(body, answer),
        }


# --- the server's table and bookkeeping ----------------------------------------------------


class StubState:
    """Behaviour table, counters and recorded requests, shared by the handlers and the owner.

    The lock guards plain dictionary updates only and is never held across an `await`, so the
    owner thread (`configure`, `stats`, ...) and the event loop never wait on each other for long.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, BehaviourLike] | None,
        default: BehaviourLike | None,
        seed: int,
    ) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelBehaviour] = {}
        self._default: ModelBehaviour | None = None
        self._rng = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self._disconnects: Counter[str] = Counter()
        self._faults_used: Counter[str] = Counter()
        self._seed = seed
        self._fault_draws: dict[str, random.Random] = {}
        self._records: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._sequence = itertools.count(1)
        self.configure(models or {}, default=default)

    def configure(
        self,
        models: Mapping[str, BehaviourLike],
        *,
        default: BehaviourLike | None = None,
        replace: bool = False,
    ) -> None:
        """Merge (or with `replace`, swap in) behaviours; see `StubServer.configure`."""
        # Validate everything before touching the table, so a bad entry changes nothing.
        parsed = {name: coerce_behaviour(value) for name, value in models.items()}
        parsed_default = coerce_behaviour(default) if default is not None else None
        with self._lock:
            if replace:
                self._models.clear()
            self._models.update(parsed)
            if parsed_default is not None or replace:
                self._default = parsed_default
            # A newly configured fault starts its `times` budget and `rate` sequence afresh.
            for name in parsed:
                self._faults_used.pop(name, None)
                self._fault_draws.pop(name, None)

    def model_names(self) -> list[str]:
        """Configured model names, in the order they were first configured."""
        with self._lock:
            return list(self._models)

    def admit(
        self, model: str, body: dict[str, Any]
    ) -> tuple[int, ModelBehaviour, Fault | None, float]:
        """Count and record one request; return its number, behaviour, due fault and latency."""
        with self._lock:
            number = next(self._sequence)
            self._counts[model] += 1
            self._records.setdefault(model, deque(maxlen=RECORD_LIMIT)).append((number, body))
            behaviour = self._models.get(model) or self._default or ModelBehaviour()
            fault = behaviour.fault
            if fault is not None and not self._fault_due(model, fault):
                fault = None
            latency = behaviour.latency
            delay = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        return number, behaviour, fault, delay

    def _fault_due(self, model: str, fault: Fault) -> bool:
        """Whether this request of `model` fails, within `times` and by `rate` (lock held)."""
        if fault.times is not None and self._faults_used[model] >= fault.times:
            return False
        if fault.rate is not None:
            draws = self._fault_draws.setdefault(model, random.Random(f"{self._seed}:{model}"))
            if draws.random() >= fault.rate:
                return False
        self._faults_used[model] += 1
        return True

    def stats(self) -> dict[str, int]:
        """Requests received per model name."""
        with self._lock:
            return dict(self._counts)

    def disconnected(self, model: str) -> None:
        """Note a request whose client went away before it was answered."""
        with self._lock:
            self._disconnects[model] += 1

    def disconnects(self) -> dict[str, int]:
        """Requests per model name whose client disconnected before the answer."""
        with self._lock:
            return dict(self._disconnects)

    def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Recorded bodies of one model, or of all models merged in arrival order."""
        with self._lock:
            if model is not None:
                return [body for _, body in self._records.get(model, ())]
            merged = sorted(
                itertools.chain.from_iterable(self._records.values()), key=lambda item: item[0]
            )
        return [body for _, body in merged]

    def reset(self) -> None:
        """Forget counts, recorded bodies, used fault budgets and `rate` draws (not behaviours)."""
        with self._lock:
            self._counts.clear()
            self._disconnects.clear()
            self._faults_used.clear()
            self._fault_draws.clear()
            self._records.clear()


def load_stub_config(path: str | Path) -> tuple[dict[str, ModelBehaviour], ModelBehaviour | None]:
    """Read a stub behaviour file: `{default: {...}, models: {name: {...}}}` in YAML or JSON.

    Args:
        path: The file; JSON is read as YAML, of which it is a subset.

    Returns:
        The behaviour per model name and the default behaviour (`None` when absent).

    Raises:
        ConfigError: When the file cannot be read or parsed, or a key or value is invalid;
            the message names the file and the key path.
    """
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read stub config: {exc}") from exc
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'models' and/or 'default'")
    unknown = sorted(set(raw) - {"models", "default"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (expected 'models', 'default')")
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict):
        raise ConfigError(f"{source}: models: expected a mapping of model name → behaviour")
    entries: list[tuple[str, Any]] = [(f"models.{name}", v) for name, v in models_raw.items()]
    if raw.get("default") is not None:
        entries.append(("default", raw["default"]))
    parsed: dict[str, ModelBehaviour] = {}
    for key, value in entries:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key}: expected a mapping")
        try:
            parsed[key] = coerce_behaviour(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join([key, *(str(part) for part in first["loc"])])
            raise ConfigError(f"{source}: {where}: {first['msg']}") from exc
    default = parsed.pop("default", None)
    return {key.removeprefix("models."): value for key, value in parsed.items()}, default
