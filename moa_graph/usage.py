"""Token usage and cost of a MoA turn: per model (role and label) and in total.

Each model call adds its `usage_metadata` to the state key `usage` through `add_usage`; a
`ModelSpec` with prices (`input_cost_per_mtok`, ...) also gets a `cost_usd`, each model at
its own rate.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from langchain_core.messages import BaseMessage

# typing_extensions' TypedDict: pydantic (and so Studio's schemas) cannot read typing's on 3.11.
from typing_extensions import TypedDict

from moa_graph.config import ModelSpec

__all__ = ["ModelUsage", "Usage", "UsageCounts", "add_usage", "call_usage", "format_usage"]

Role = Literal["reference", "aggregator"]
_COUNTS = ("calls", "input_tokens", "output_tokens", "cached_input_tokens")


class UsageCounts(TypedDict):
    """Summed counts of one or more model calls."""

    calls: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    """Input tokens the provider served from its prompt cache (part of `input_tokens`)."""
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
    cached = int((meta.get("input_token_details") or {}).get("cache_read") or 0)
    model = ModelUsage(
        role=role,
        label=spec.label,
        calls=1,
        input_tokens=int(meta.get("input_tokens") or 0),
        output_tokens=int(meta.get("output_tokens") or 0),
        cached_input_tokens=cached,
    )
    cost = _cost(spec, model)
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
    priced = [m["cost_usd"] for m in models if "cost_usd" in m]
    if priced:
        total["cost_usd"] = sum(priced)
    return total


def _cost(spec: ModelSpec, usage: UsageCounts) -> float | None:
    if spec.input_cost_per_mtok is None and spec.output_cost_per_mtok is None:
        return None
    input_rate = spec.input_cost_per_mtok or 0.0
    cached_rate = spec.cached_input_cost_per_mtok
    cached_rate = input_rate if cached_rate is None else cached_rate
    cached = usage["cached_input_tokens"]
    return (
        (usage["input_tokens"] - cached) * input_rate
        + cached * cached_rate
        + usage["output_tokens"] * (spec.output_cost_per_mtok or 0.0)
    ) / 1_000_000
