"""The lean reference call: one chat-completions POST through the model's own OpenAI client.

References need no tools, no streaming and no structured output: messages in, text and usage
out. Through `ChatOpenAI.ainvoke` one call costs ~2.5 ms of client CPU (LangChain's callback
and config machinery, the OpenAI SDK's request transform and response models, a thread hop
to build the result); posting the same JSON through the same OpenAI client (its timeouts, its
retries honouring `Retry-After`, its error types and its HTTP pool) costs ~0.9 ms. On one
event loop that CPU is serial, so it sits on the critical path of every fan-out
(benchmarks/findings.md, fix 1).

It is used only for references built from the provider table (a plain `ChatOpenAI` whose
settings come from the `ModelSpec`), and only when no callback handler would see the call: a
LangSmith tracer, `astream_events`, a usage callback or any handler the caller passed sends
the reference through the model's own `ainvoke`, so what they observe is unchanged. (Under
`MoAChatModel` only tracers and event streams are handed the inner runs, `moa_graph.runs`:
a plain handler there sees the one MoA run, and the references stay direct.)

What else `ChatOpenAI` would do around the request is kept: a rate limit set on the model
(`moa_graph.limits`) is waited for before each POST, and a model whose calls an LLM cache
would answer (`set_llm_cache(...)`, or the model's own `cache`) is not asked here at all
(`uses_llm_cache`): it goes through `ChatOpenAI`, which looks the call up and stores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManager, Callbacks
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables.config import ensure_config

try:  # LangGraph's handler for stream_mode="messages" (a private module)
    from langgraph.pregel._messages import StreamMessagesHandler as _MessagesHandler
except ImportError:  # pragma: no cover - then every handler counts as watching
    _MessagesHandler = ()  # type: ignore[assignment,misc]

from moa_graph import limits
from moa_graph.config import ModelSpec

if TYPE_CHECKING:
    import openai
    from langchain_openai import ChatOpenAI
    from openai._types import RequestOptions

__all__ = [
    "apost",
    "is_observed",
    "post",
    "request_body",
    "speaks_plain_chat",
    "uses_llm_cache",
]

_PATH = "/chat/completions"


def is_observed(callbacks: Callbacks = None) -> bool:
    """Whether a callback handler would see a model call made here.

    `callbacks` are the caller's (None: the run's, from the LangChain context). LangGraph's
    handler for `stream_mode="messages"` does not count: references are tagged `nostream`.
    """
    inherited = callbacks if callbacks is not None else ensure_config().get("callbacks")
    manager = AsyncCallbackManager.configure(inherited, None, False)
    return any(not isinstance(h, _MessagesHandler) for h in manager.handlers)


def uses_llm_cache(model: BaseChatModel) -> bool:
    """Whether `model.invoke` would look its calls up in an LLM cache.

    As `BaseChatModel` decides: the model's own `cache` when it is one, else (`cache` None or
    True) the global one from `set_llm_cache`; `cache=False` never caches. `cache=True`
    without a global cache is `ChatOpenAI`'s error to raise, so it counts as caching too.
    """
    if isinstance(model.cache, BaseCache) or model.cache is True:
        return True
    return model.cache is None and get_llm_cache() is not None


def speaks_plain_chat(model: ChatOpenAI, spec: ModelSpec) -> bool:
    """Whether `model` sends exactly `request_body(spec, ...)` to `/chat/completions`.

    `ChatOpenAI` adapts requests to some OpenAI models (the Responses API for some, no
    `temperature` for reasoning models, `developer` for the system role of o-series): those
    stay on `ChatOpenAI`. Asked once per model, with a probe conversation.
    """
    probe = [SystemMessage("probe"), HumanMessage("probe")]
    try:
        payload = model._get_request_payload(probe)
        return not model._use_responses_api(payload) and payload == request_body(spec, probe)
    except Exception:  # a langchain-openai without these (private) methods: stay on ainvoke
        return False


def request_body(spec: ModelSpec, messages: Sequence[BaseMessage]) -> dict[str, Any]:
    """The JSON `ChatOpenAI` would send for this spec (non-streaming, no tools)."""
    body: dict[str, Any] = {
        "model": spec.model,
        "stream": False,
        "messages": convert_to_openai_messages(list(messages)),
    }
    if spec.max_tokens is not None:
        body["max_completion_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    return body


async def apost(
    client: openai.AsyncOpenAI,
    spec: ModelSpec,
    messages: Sequence[BaseMessage],
    *,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> AIMessage:
    """Ask one reference (async), after waiting for the client's rate limit, if any.

    Args:
        client: The model's OpenAI client (`ChatOpenAI.root_async_client`).
        spec: The reference's spec (model name and sampling settings).
        messages: The advisor's input.
        timeout: Each attempt's timeout (None: the client's own).
        max_retries: Retries after a failed attempt (None: the client's own).

    Raises:
        openai.APIError: Whatever the OpenAI client raises (after its retries).
        ValueError: The provider answered with an error instead of a completion.
        KeyError: The reply is not a chat completion (`describe_error`: malformed).
    """
    options = _options(timeout, max_retries)
    limiter = limits.attached(client)
    if limiter is not None:
        await limiter.aacquire()
    raw = await client.post(
        _PATH, body=request_body(spec, messages), cast_to=bytes, options=options
    )
    return _reply(raw)


def post(
    client: openai.OpenAI,
    spec: ModelSpec,
    messages: Sequence[BaseMessage],
    *,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> AIMessage:
    """Ask one reference (sync); see `apost`."""
    options = _options(timeout, max_retries)
    limiter = limits.attached(client)
    if limiter is not None:
        limiter.acquire()
    raw = client.post(_PATH, body=request_body(spec, messages), cast_to=bytes, options=options)
    return _reply(raw)


def _options(timeout: float | None, max_retries: int | None) -> RequestOptions:
    options: RequestOptions = {}
    if timeout is not None:
        options["timeout"] = max(timeout, 0.001)
    if max_retries is not None:
        options["max_retries"] = max_retries
    return options


def _reply(raw: bytes) -> AIMessage:
    """The completion as the `AIMessage` `ChatOpenAI` would return (text, tool calls, usage).

    An error object instead of a completion raises `ValueError` with the provider's message
    (as `ChatOpenAI` does); a body without a message raises `KeyError`/`IndexError`, one
    that is not JSON `json.JSONDecodeError`: `describe_error` names those malformed.
    """
    data = json.loads(raw)
    if isinstance(data, dict) and data.get("error") and not data.get("choices"):
        raise ValueError(data["error"])
    message = data["choices"][0]["message"]
    if not isinstance(message, dict):
        raise KeyError("choices[0].message")
    calls = message.get("tool_calls") or []
    return AIMessage(
        content=message.get("content") or "",
        # References get no tools, so any call is unusable: kept raw, for the protocol check.
        invalid_tool_calls=[
            {
                "type": "invalid_tool_call",
                "name": (call.get("function") or {}).get("name"),
                "args": (call.get("function") or {}).get("arguments"),
                "id": call.get("id"),
                "error": None,
            }
            for call in calls
        ],
        usage_metadata=_usage(data.get("usage")),
        response_metadata={"model_name": data.get("model"), "model_provider": "openai"},
    )


def _usage(usage: dict[str, Any] | None) -> UsageMetadata | None:
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    # Details only where the provider gave them, as langchain-openai reports them.
    return UsageMetadata(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=usage.get("total_tokens") or prompt + completion,
        input_token_details={} if cached is None else {"cache_read": cached},
        output_token_details={} if reasoning is None else {"reasoning": reasoning},
    )
