"""Model prices: genai-prices' table by default, a model's `*_cost_per_mtok` keys on top.

`genai-prices` (pydantic's maintained price table, shipped with the package and read offline)
knows the models of most hosted providers, with their cache-read, cache-write and reasoning
rates, long-context tiers and off-peak hours. A model is looked up under its provider's
genai-prices id (`GENAI_PROVIDER_IDS`: `xai` is `x-ai`, ...); a price key set on the
`ModelSpec` replaces that one rate, the others stay the table's. A model neither knows (a
local or stand-in model, a provider of your own) is unpriced: its usage has no `cost_usd`,
and `unpriced_models` / `price_note` say so, once, for a CLI or an application to show.

Costs follow LangChain's `UsageMetadata`: `input_tokens` include cached reads and cache
writes (`input_token_details.cache_read`, `.cache_creation`), `output_tokens` include
reasoning (`output_token_details.reasoning`), each priced at its own rate where the model has
one, else at the plain input or output rate.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moa_graph.config import ModelSpec

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice

__all__ = [
    "GENAI_PROVIDER_IDS",
    "cost_usd",
    "default_price",
    "is_priced",
    "price_note",
    "unpriced_models",
]

GENAI_PROVIDER_IDS: Mapping[str, str] = {
    # The built-in provider table (moa_graph.providers); local ones are not priced.
    "openai": "openai",
    "openrouter": "openrouter",
    "together": "together",
    "groq": "groq",
    "deepseek": "deepseek",
    "fireworks": "fireworks",
    "mistral": "mistral",
    "xai": "x-ai",
    # Common `init_chat_model` providers.
    "anthropic": "anthropic",
    "azure_openai": "azure",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "cohere": "cohere",
    "google_genai": "google",
    "google_vertexai": "google",
    "mistralai": "mistral",
    "perplexity": "perplexity",
}
"""Our provider names and the genai-prices provider ids their models are priced under."""

_OVERRIDES = {
    "input_cost_per_mtok": "input_mtok",
    "output_cost_per_mtok": "output_mtok",
    "cached_input_cost_per_mtok": "cache_read_mtok",
    "cache_write_cost_per_mtok": "cache_write_mtok",
    "reasoning_cost_per_mtok": "output_reasoning_mtok",
}
"""`ModelSpec` price keys and the genai-prices rates they replace."""

_INPUT_DETAILS = {
    "cache_read": "cache_read_tokens",
    "cache_creation": "cache_write_tokens",
    "ephemeral_5m_input_tokens": "cache_write_5m_tokens",
    "ephemeral_1h_input_tokens": "cache_write_1h_tokens",
}
"""LangChain's `input_token_details` keys and genai-prices' usage keys (audio is priced as
text: cached audio would need a split LangChain does not report)."""
_OUTPUT_DETAILS = {"reasoning": "output_reasoning_tokens"}

_PART_OF: Mapping[str, tuple[str, ...]] = {
    "input_tokens": (),
    "output_tokens": (),
    "cache_read_tokens": ("input_tokens",),
    "cache_write_tokens": ("input_tokens",),
    "cache_write_5m_tokens": ("input_tokens", "cache_write_tokens"),
    "cache_write_1h_tokens": ("input_tokens", "cache_write_tokens"),
    "output_reasoning_tokens": ("output_tokens",),
}
"""Each usage key and the counts it is a part of (a cache read is also an input token)."""

_logger = logging.getLogger(__name__)
_told: set[str] = set()


def default_price(spec: ModelSpec) -> ModelInfo | None:
    """genai-prices' entry for this model under its provider (None: it has none).

    Example:
        >>> default_price(ModelSpec(provider="xai", model="grok-3")).id
        'grok-3'
    """
    return _lookup(spec.provider, spec.model)


def is_priced(spec: ModelSpec) -> bool:
    """Whether calls of `spec` get a `cost_usd`: from genai-prices or its own price keys."""
    return _has_own_prices(spec) or default_price(spec) is not None


def unpriced_models(specs: Iterable[ModelSpec]) -> list[str]:
    """Labels of the models no price is known for, each once, in order."""
    labels: list[str] = []
    for spec in specs:
        if not is_priced(spec) and spec.label not in labels:
            labels.append(spec.label)
    return labels


def price_note(specs: Iterable[ModelSpec]) -> str | None:
    """One line naming the unpriced models and how to price them (None: all are priced).

    For `moa-graph presets` and the like: say it once, where the preset is shown.

    Example:
        >>> price_note([ModelSpec(provider="ollama", model="qwen3")]).split(":")[0]
        'no price known for ollama'
        >>> price_note([ModelSpec(provider="openai", model="gpt-4o")]) is None
        True
    """
    labels = unpriced_models(specs)
    if not labels:
        return None
    its = "its usage has" if len(labels) == 1 else "their usage has"
    return (
        f"no price known for {', '.join(labels)}: {its} no cost (set input_cost_per_mtok and "
        "output_cost_per_mtok on the model to price it)"
    )


def cost_usd(
    spec: ModelSpec,
    *,
    input_tokens: int,
    output_tokens: int,
    input_token_details: Mapping[str, int] | None = None,
    output_token_details: Mapping[str, int] | None = None,
) -> float | None:
    """The cost in USD of one call's tokens at `spec`'s prices (None: unpriced).

    Counts as in LangChain's `UsageMetadata`: the details are parts of the input and output
    tokens. A usage the price table cannot split (a detail larger than its total) is left
    unpriced rather than failing the turn.
    """
    resolved = _price(spec)
    if resolved is None:
        return None
    price, key = resolved
    counts: dict[str, int] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    parts = ((input_token_details, _INPUT_DETAILS), (output_token_details, _OUTPUT_DETAILS))
    for details, keys in parts:
        for name, value in (details or {}).items():
            if name in keys and value:
                counts[keys[name]] = value
    split = counts.get("cache_write_5m_tokens", 0) + counts.get("cache_write_1h_tokens", 0)
    if split > counts.get("cache_write_tokens", 0):  # the TTL split without its total
        counts["cache_write_tokens"] = split
    try:
        if not _consistent(counts):
            return _calc(price, counts)  # raises, naming what does not fit
        flat, band = _at_tier(price, counts["input_tokens"])
        rates = _rates((*key, band), flat)
        return sum(count * rates[name] for name, count in counts.items())
    except (ValueError, ArithmeticError) as exc:
        _tell_once(f"cost:{spec.label}", "cannot price a call of %s: %s", spec.label, exc)
        return None


def _price(spec: ModelSpec) -> tuple[ModelPrice, tuple[ModelSpec, int]] | None:
    """The rates of one call now, and a key naming them for `_rates`.

    The table's rates at this time of day (off-peak hours differ), then the spec's own.
    """
    from genai_prices.types import ModelPrice

    info = default_price(spec)
    own = _own_prices(spec)
    if info is None:
        if not own:
            _tell_once(spec.label, "no price known for %s: its usage has no cost", spec.label)
            return None
        return ModelPrice(**own), (spec, 0)
    table = info.get_prices(datetime.now(UTC))  # one of the table's own, long-lived objects
    if not own:
        return table, (spec, id(table))
    rates = {name: value for name, value in vars(table).items() if not name.startswith("_")}
    return ModelPrice(**(rates | own)), (spec, id(table))


def _calc(price: ModelPrice, counts: Mapping[str, int]) -> float:
    from genai_prices import Usage

    return float(price.calc_price(Usage(**counts))["total_price"])


def _at_tier(price: ModelPrice, input_tokens: int) -> tuple[ModelPrice, tuple[int, ...]]:
    """Flat rates for a call of `input_tokens`, and which tier of each tiered rate that is.

    Long-context prices are cliffs (genai-prices' `TieredPrices`): the call's input tokens
    choose one tier, whose rate then applies to all of its tokens of that kind.
    """
    from genai_prices.types import ModelPrice, TieredPrices

    tiered = {n: v for n, v in vars(price).items() if isinstance(v, TieredPrices)}
    if not tiered:
        return price, ()
    flat, band = dict(vars(price)), []
    for name, value in tiered.items():
        crossed = [tier for tier in value.tiers if input_tokens > tier.start]
        flat[name] = crossed[-1].price if crossed else value.base
        band.append(len(crossed))
    return ModelPrice(**flat), tuple(band)


def _consistent(counts: Mapping[str, int]) -> bool:
    """Whether each part fits in what it is part of (else genai-prices says what is wrong)."""
    cache = counts.get("cache_read_tokens", 0) + counts.get("cache_write_tokens", 0)
    return (
        cache <= counts["input_tokens"]
        and counts.get("output_reasoning_tokens", 0) <= counts["output_tokens"]
    )


_rate_cache: dict[tuple[Any, ...], dict[str, float]] = {}


def _rates(key: tuple[Any, ...], price: ModelPrice) -> dict[str, float]:
    """USD per token of each usage key under flat prices, as genai-prices computes them.

    A flat price is linear in the counts, so one token of each kind (with what it is part
    of) gives its marginal rate; the sum over a call's counts is then the call's cost. That
    is genai-prices' result for a tenth of its CPU (~10 us instead of 100-300 us), which
    counts on every reference call.
    """
    rates = _rate_cache.get(key)
    if rates is None:
        rates = {}
        for name, parents in _PART_OF.items():
            base = dict.fromkeys(parents, 1)
            rates[name] = _calc(price, base | {name: 1}) - (_calc(price, base) if base else 0.0)
        if len(_rate_cache) > 4096:
            _rate_cache.clear()
        _rate_cache[key] = rates
    return rates


def _own_prices(spec: ModelSpec) -> dict[str, Any]:
    rates: dict[str, Any] = {}
    for key, rate in _OVERRIDES.items():
        value = getattr(spec, key)
        if value is not None:
            rates[rate] = Decimal(str(value))
    return rates


def _has_own_prices(spec: ModelSpec) -> bool:
    return any(getattr(spec, key) is not None for key in _OVERRIDES)


@functools.lru_cache(maxsize=1024)
def _lookup(provider: str, model: str) -> ModelInfo | None:
    provider_id = GENAI_PROVIDER_IDS.get(provider)
    if provider_id is None:
        return None
    from genai_prices.data_snapshot import get_snapshot

    try:
        _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    return info


def _tell_once(key: str, message: str, *args: object) -> None:
    if key not in _told:
        _told.add(key)
        _logger.info(message, *args)
