"""The MoA turn every contender runs: model names, latencies, the preset, the guidance text.

A turn is N reference calls and one aggregator call. The references are `ref0` ... `ref{N-1}`
and the aggregator is `agg`, all on one stand-in (one base URL), so a contender may share one
HTTP client across them. Baselines send what moa_graph sends: the advisor system prompt and
the user's question to each reference, then the question and the same guidance text
(rendered by moa_graph's `render_guidance`) to the aggregator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moa_graph import MoAConfig, ModelSpec, Preset, ReferenceAnswer, load_config
from moa_graph.guidance import render_guidance
from moa_graph.prompts import REFERENCE_SYSTEM_PROMPT

__all__ = [
    "AGGREGATOR",
    "PRESET",
    "PROVIDER",
    "REFERENCE_SYSTEM_PROMPT",
    "guidance",
    "latency_table",
    "lognormal_table",
    "moa_config",
    "preset_supports",
    "reference_names",
]

PROVIDER = "stub"
"""Provider name of the stand-in in every benchmark config."""
PRESET = "bench"
AGGREGATOR = "agg"


def reference_names(n_refs: int) -> list[str]:
    """Model names of the references: `ref0` ... `ref{n-1}`."""
    return [f"ref{i}" for i in range(n_refs)]


def latency_table(
    n_refs: int, *, reference_s: float, aggregator_s: float, slow: dict[int, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Stand-in behaviour: every reference at `reference_s` (or `slow[i]`), the aggregator."""
    table = {
        name: {"latency": (slow or {}).get(i, reference_s)}
        for i, name in enumerate(reference_names(n_refs))
    }
    table[AGGREGATOR] = {"latency": aggregator_s}
    return table


def lognormal_table(
    n_refs: int, *, median_s: float, sigma: float, aggregator_s: float
) -> dict[str, dict[str, Any]]:
    """Stand-in behaviour: every reference lognormal (drawn per request), the aggregator fixed."""
    tail = {"latency": {"lognormal": {"median": median_s, "sigma": sigma}}}
    table: dict[str, dict[str, Any]] = {name: dict(tail) for name in reference_names(n_refs)}
    table[AGGREGATOR] = {"latency": aggregator_s}
    return table


def preset_supports(key: str) -> bool:
    """Whether `Preset` has the key `key` yet (keys other engineers are adding)."""
    return key in Preset.model_fields


def moa_config(
    url: str,
    n_refs: int,
    *,
    aggregator: str = AGGREGATOR,
    extra: dict[str, Any] | None = None,
    model_keys: dict[str, dict[str, Any]] | None = None,
) -> MoAConfig:
    """Preset `bench` on provider `stub` at `url`; `extra` adds preset keys (if supported).

    `model_keys` adds keys to the model specs by model name (prices, `max_tokens`).
    """
    keys = model_keys or {}

    def spec(name: str) -> dict[str, Any]:
        return {"provider": PROVIDER, "model": name, **keys.get(name, {})}

    preset: dict[str, Any] = {
        "reference_models": [spec(name) for name in reference_names(n_refs)],
        "aggregator": spec(aggregator),
    }
    preset.update({k: v for k, v in (extra or {}).items() if preset_supports(k)})
    return load_config(
        {"moa": {"providers": {PROVIDER: {"base_url": url}}, "presets": {PRESET: preset}}}
    )


def guidance(answers: Sequence[str | None]) -> str:
    """The guidance text moa_graph renders for these answers (None: no answer)."""
    spec = ModelSpec(provider=PROVIDER, model=AGGREGATOR)
    preset = Preset(name=PRESET, reference_models=[spec], aggregator=spec)
    references = [
        ReferenceAnswer(
            index=i,
            label=f"{PROVIDER}:ref{i}",
            status="ok" if text is not None else "failed",
            text=text if text is not None else "[failed]",
        )
        for i, text in enumerate(answers)
    ]
    return render_guidance(preset, references)
