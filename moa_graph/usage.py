"""Token usage and cost of a MoA turn: per model (role and label) and in total.

Each model call adds its `usage_metadata` to the state key `usage` through `add_usage`,
LangChain's token details (`input_token_details`, `output_token_details`: cache reads and
writes, reasoning, audio) included. A priced model (`moa_graph.prices`: genai-prices' table,
or the spec's own `*_cost_per_mtok`) also gets a `cost_usd`, each model at its own rates.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from langchain_core.messages import BaseMessage

# typing_extensions' TypedDict: pydantic (and so Studio's schemas) cannot read typing's on 3.11.
from typing_extensions import TypedDict

from moa_graph.config import ModelSpec
from moa_graph.prices import cost_usd

__all__ = ["ModelUsage", "Usage", "UsageCounts", "add_usage", "call_usage", "format_usage"]

Role = Literal["reference", "aggregator", "gate", "judge"]
_COUNTS = ("calls", "input_tokens", "output_tokens", "cached_input_tokens")


class UsageCounts(TypedDict):
    """Summed counts of one or more model calls."""

    calls: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    """Input tokens the provider served from its prompt cache (part of `input_tokens`)."""
    input_token_details: NotRequired[dict[str, int]]
    """`UsageMetadata.input_token_details` summed per key (`cache_read`, `cache_creation`,
    `audio`, ...): parts of `input_tokens`; present once a call reported any."""
    output_token_details: NotRequired[dict[str, int]]
    """`UsageMetadata.output_token_details` summed per key (`reasoning`, `audio`): parts of
    `output_tokens`; present once a call reported any."""
    cost_usd: NotRequired[float]
    """Present when the model (or, in `total`, any model) has prices."""


class ModelUsage(UsageCounts):
    """Usage of one model in one role."""

    role: Role
    label: str


class Usage(TypedDict):
    """The state key `usage`: this turn's usage per `"<role> <label>"`, plus totals."""

    models: dict[str, ModelUsage]
    total: UsageCounts


def call_usage(role: Role, spec: ModelSpec, message: BaseMessage | None) -> Usage:
    """The usage of one call (a failed call counts as a call with no tokens)."""
    meta: dict[str, Any] = dict(getattr(message, "usage_metadata", None) or {})
    inputs, outputs = (
        _details(meta.get("input_token_details")),
        _details(meta.get("output_token_details")),
    )
    model = ModelUsage(
        role=role,
        label=spec.label,
        calls=1,
        input_tokens=int(meta.get("input_tokens") or 0),
        output_tokens=int(meta.get("output_tokens") or 0),
        cached_input_tokens=inputs.get("cache_read", 0),
    )
    if inputs:
        model["input_token_details"] = inputs
    if outputs:
        model["output_token_details"] = outputs
    cost = cost_usd(
        spec,
        input_tokens=model["input_tokens"],
        output_tokens=model["output_tokens"],
        input_token_details=inputs,
        output_token_details=outputs,
    )
    if cost is not None:
        model["cost_usd"] = cost
    return {"models": {f"{role} {spec.label}": model}, "total": _sum([model])}


def add_usage(current: Usage | None, update: Usage | None) -> Usage:
    """Reducer of `usage`: `None` starts a fresh turn, a `Usage` is added in.

    The work is the size of the update (one model per reference answer), not of the turn.
    """
    if update is None:
        return {"models": {}, "total": _sum([])}
    if not current:
        return update
    models = dict(current["models"])
    for key, value in update["models"].items():
        old = models.get(key)
        models[key] = ModelUsage(**value) if old is None else {**old, **_added(old, value)}
    return {"models": models, "total": _added(current["total"], update["total"])}


def _added(a: UsageCounts, b: UsageCounts) -> UsageCounts:
    """The counts of `a` and `b` summed; a cost when either has one."""
    total = UsageCounts(
        calls=a["calls"] + b["calls"],
        input_tokens=a["input_tokens"] + b["input_tokens"],
        output_tokens=a["output_tokens"] + b["output_tokens"],
        cached_input_tokens=a["cached_input_tokens"] + b["cached_input_tokens"],
    )
    _add_details(total, a)
    _add_details(total, b)
    if "cost_usd" in a or "cost_usd" in b:
        total["cost_usd"] = a.get("cost_usd", 0.0) + b.get("cost_usd", 0.0)
    return total


def format_usage(usage: Usage | None) -> str:
    """One line: calls, tokens and, when priced, cost."""
    total = usage["total"] if usage else _sum([])
    line = (
        f"{total['calls']} calls, {total['input_tokens']} input tokens"
        f" ({total['cached_input_tokens']} cached), {total['output_tokens']} output tokens"
    )
    if "cost_usd" in total:
        line += f", ${total['cost_usd']:.4f}"
    return line


def _sum(models: list[ModelUsage]) -> UsageCounts:
    total = UsageCounts(calls=0, input_tokens=0, output_tokens=0, cached_input_tokens=0)
    for model in models:
        for count in _COUNTS:
            total[count] += model[count]  # type: ignore[literal-required]
        _add_details(total, model)
    priced = [m["cost_usd"] for m in models if "cost_usd" in m]
    if priced:
        total["cost_usd"] = sum(priced)
    return total


def _details(details: Any) -> dict[str, int]:
    """The integer counts of a `UsageMetadata` details mapping (None and zero left out)."""
    if not isinstance(details, dict):
        return {}
    return {
        str(key): int(value)
        for key, value in details.items()
        if isinstance(value, int) and not isinstance(value, bool) and value
    }


def _add_details(total: UsageCounts, counts: UsageCounts) -> None:
    """Add the token details of `counts` into `total`'s (new dicts: inputs stay untouched)."""
    if "input_token_details" in counts:
        total["input_token_details"] = _merged(
            total.get("input_token_details"), counts["input_token_details"]
        )
    if "output_token_details" in counts:
        total["output_token_details"] = _merged(
            total.get("output_token_details"), counts["output_token_details"]
        )


def _merged(a: dict[str, int] | None, b: dict[str, int]) -> dict[str, int]:
    merged = dict(a or {})
    for key, value in b.items():
        merged[key] = merged.get(key, 0) + value
    return merged
