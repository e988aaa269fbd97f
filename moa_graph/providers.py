"""Provider wiring: from a `ModelSpec` to a LangChain chat model.

Every built-in provider is an OpenAI-compatible endpoint reached through
`langchain_openai.ChatOpenAI` with its `base_url` and the key from an environment variable.
Any other provider name falls back to `langchain.chat_models.init_chat_model` when that
integration is installed. Keys are read from the environment only when a model is built,
and the values read are remembered so `scrub_secrets` can keep them out of error texts.

Table models are `moa_graph.chat_openai.ProviderChatOpenAI`: a `ChatOpenAI` whose LangSmith
runs name the table's provider (`ls_provider="openrouter"`, ...) instead of `"openai"`.
Rate limits (`moa_graph.limits`) are set on each model as its `rate_limiter`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from moa_graph import limits
from moa_graph.config import ModelSpec, ProviderSpec
from moa_graph.errors import ConfigError
from moa_graph.transport import AsyncHttpClientFactory, async_http_client, sync_http_client

__all__ = [
    "BUILTIN_PROVIDERS",
    "DEFAULT_AGGREGATOR_TIMEOUT_S",
    "DEFAULT_REFERENCE_TIMEOUT_S",
    "ModelFactory",
    "ProviderTableFactory",
    "default_model_factory",
    "missing_api_keys",
    "provider_table",
    "scrub_secrets",
    "warm_up",
]

ModelFactory = Callable[[ModelSpec], BaseChatModel]
"""Builds the chat model for one `ModelSpec`; pass your own to `build_moa_graph`."""

DEFAULT_REFERENCE_TIMEOUT_S = 120.0
"""Timeout of each request of a reference model when its spec sets none (in total: see
`moa_graph.transport`)."""
DEFAULT_AGGREGATOR_TIMEOUT_S = 300.0
"""Timeout of each request of the aggregator when its spec sets none (in total)."""
_MAX_RETRIES = 2
"""Retries by the OpenAI client itself (with backoff, honouring `Retry-After`)."""
_NO_KEY = "not-needed"
"""Placeholder for local endpoints: the OpenAI client insists on some key."""

BUILTIN_PROVIDERS: Mapping[str, ProviderSpec] = {
    "openai": ProviderSpec(base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
    "openrouter": ProviderSpec(
        base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY"
    ),
    "together": ProviderSpec(
        base_url="https://api.together.xyz/v1", api_key_env="TOGETHER_API_KEY"
    ),
    "groq": ProviderSpec(base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY"),
    "deepseek": ProviderSpec(
        base_url="https://api.deepseek.com/v1", api_key_env="DEEPSEEK_API_KEY"
    ),
    "fireworks": ProviderSpec(
        base_url="https://api.fireworks.ai/inference/v1", api_key_env="FIREWORKS_API_KEY"
    ),
    "mistral": ProviderSpec(base_url="https://api.mistral.ai/v1", api_key_env="MISTRAL_API_KEY"),
    "xai": ProviderSpec(base_url="https://api.x.ai/v1", api_key_env="XAI_API_KEY"),
    "ollama": ProviderSpec(base_url="http://localhost:11434/v1"),
    "vllm": ProviderSpec(base_url="http://localhost:8000/v1"),
    "lmstudio": ProviderSpec(base_url="http://localhost:1234/v1"),
    "custom": ProviderSpec(),  # needs base_url on the model spec
}
"""The OpenAI-compatible providers known without configuration (README: provider table)."""

_seen_secrets: set[str] = set()


def default_model_factory(
    providers: Mapping[str, ProviderSpec] | None = None,
    *,
    reference: bool = True,
    http_client: AsyncHttpClientFactory | None = None,
) -> ProviderTableFactory:
    """Return the factory `build_moa_graph` uses when the caller passes none.

    Args:
        providers: Extra or overriding providers (a config's `providers:`), on top of
            `BUILTIN_PROVIDERS`.
        reference: Chooses the default timeout: references fail fast, the aggregator waits.
        http_client: Makes the async HTTP client for a base URL, shared by the models on
            that URL within one event loop (default: the OpenAI client's aiohttp transport;
            `lambda url: openai.DefaultAsyncHttpxClient()` gives its httpx one). See
            `moa_graph.transport`. The default bounds each request by its model's `timeout`
            in total; a client of yours is bounded as its transport does (httpx: per read),
            unless that transport is wrapped in `moa_graph.bounds.BoundedAsyncTransport`.
            Sync calls always use moa_graph's bounded client.
    """
    return ProviderTableFactory(
        provider_table(providers),
        timeout=DEFAULT_REFERENCE_TIMEOUT_S if reference else DEFAULT_AGGREGATOR_TIMEOUT_S,
        http_client=http_client,
    )


def provider_table(
    providers: Mapping[str, ProviderSpec] | None = None,
) -> dict[str, ProviderSpec]:
    """`BUILTIN_PROVIDERS` with a config's `providers:` on top.

    An entry with a `base_url` replaces the provider of its name; one without (say, only a
    rate limit for `openai`) keeps the built-in's endpoint and key variable.
    """
    table = dict(BUILTIN_PROVIDERS)
    for name, spec in (providers or {}).items():
        builtin = table.get(name)
        if builtin is not None and spec.base_url is None:
            spec = builtin.model_copy(update=spec.model_dump(exclude_unset=True))
        table[name] = spec
    return table


class ProviderTableFactory:
    """Builds `ChatOpenAI` models from a provider table (see `default_model_factory`).

    A class rather than a closure so that `PresetModels` can tell its models apart from a
    caller's own: only these are asked directly (`moa_graph.direct`).
    """

    def __init__(
        self,
        table: Mapping[str, ProviderSpec],
        *,
        timeout: float,
        http_client: AsyncHttpClientFactory | None = None,
    ) -> None:
        self.table = table
        self.timeout = timeout
        self.http_client = http_client

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        """The chat model for `spec`: `ChatOpenAI` for a table provider, else LangChain's."""
        provider = self.table.get(spec.provider)
        if provider is None:
            return _init_chat_model(spec, known=self.table)
        base_url = spec.base_url or provider.base_url
        if not base_url:
            raise ConfigError(f"{spec.label}: provider {spec.provider!r} needs a 'base_url'")
        from moa_graph.chat_openai import ProviderChatOpenAI

        rate_limiter = limits.rate_limiter(spec, provider)
        model = ProviderChatOpenAI(
            provider_name=spec.provider,
            rate_limiter=rate_limiter,
            model=spec.model,
            base_url=base_url,
            api_key=SecretStr(_api_key(spec, provider)),
            temperature=spec.temperature,
            max_completion_tokens=spec.max_tokens,
            timeout=spec.timeout or self.timeout,
            max_retries=_MAX_RETRIES if spec.max_retries is None else spec.max_retries,
            stream_usage=True,
            # The running loop's client for this URL (PresetModels builds models per loop):
            # langchain-openai otherwise shares one process-wide, whose connections die
            # with the first event loop.
            http_async_client=async_http_client(base_url, factory=self.http_client),
            # Both clients bound each request by `timeout` in total, not per read.
            http_client=sync_http_client(base_url),
        )
        # The direct path posts through these clients: their requests wait for the limiter too.
        limits.attach(model.root_client, rate_limiter)
        limits.attach(model.root_async_client, rate_limiter)
        return model


def warm_up() -> None:
    """Import and set up the OpenAI client stack now instead of in the first turn.

    Models are built at their first call, so the first turn after start-up also pays for
    importing `langchain_openai` and `openai` and for the first `ChatOpenAI` (0.3-0.8 s,
    benchmarks/findings.md, fix 8). A server calls this while it starts (Studio's graph
    does); a notebook or script may call it before its first question.
    """
    from langchain_openai import ChatOpenAI

    # Nothing is sent: the client connects on its first request.
    ChatOpenAI(model="warm-up", base_url="http://127.0.0.1:9/v1", api_key=SecretStr(_NO_KEY))


def missing_api_keys(
    specs: list[ModelSpec], providers: Mapping[str, ProviderSpec] | None = None
) -> list[str]:
    """Names of the environment variables these models need that are not set, in order."""
    table = provider_table(providers)
    missing: list[str] = []
    for spec in specs:
        provider = table.get(spec.provider)
        var = spec.api_key_env or (provider.api_key_env if provider else None)
        if var and not os.environ.get(var) and var not in missing:
            missing.append(var)
    return missing


def scrub_secrets(text: str) -> str:
    """Replace every API key value this process has read with `***`.

    Also the forms an error text can echo a key in: trimmed, URL-encoded, and escaped as in
    JSON or a Python repr. Longest first, so a key that contains another goes whole.
    """
    import json
    from urllib.parse import quote, quote_plus

    forms: set[str] = set()
    for secret in _seen_secrets:
        for value in (secret, secret.strip()):
            forms |= {
                value,
                quote(value, safe=""),
                quote_plus(value, safe=""),
                json.dumps(value)[1:-1],
                json.dumps(value)[1:-1].replace("/", "\\/"),
                repr(value)[1:-1],
            }
    for form in sorted(filter(None, forms), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _api_key(spec: ModelSpec, provider: ProviderSpec) -> str:
    var = spec.api_key_env or provider.api_key_env
    if var is None:
        return _NO_KEY
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{spec.label}: environment variable {var} is not set")
    _seen_secrets.add(value)
    return value


def _init_chat_model(spec: ModelSpec, *, known: Mapping[str, ProviderSpec]) -> BaseChatModel:
    unknown = ConfigError(
        f"{spec.label}: unknown provider {spec.provider!r}; known providers: "
        f"{', '.join(sorted(known))} (or install the LangChain integration for it)"
    )
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise unknown from None
    kwargs: dict[str, Any] = {
        key: value
        for key, value in {
            "temperature": spec.temperature,
            "max_tokens": spec.max_tokens,
            "timeout": spec.timeout,
            "max_retries": spec.max_retries,
            "base_url": spec.base_url,
            "rate_limiter": limits.rate_limiter(spec),
        }.items()
        if value is not None
    }
    try:
        model: BaseChatModel = init_chat_model(f"{spec.provider}:{spec.model}", **kwargs)
    except ImportError as exc:  # the provider is known to LangChain but its package is missing
        raise ConfigError(f"{spec.label}: {exc}") from None
    except ValueError:
        raise unknown from None
    return model
