"""A fan-out's reference budget: which references to leave out so its estimate fits.

With `max_reference_cost_usd` and/or `max_reference_input_tokens` on a preset, each
fan-out (each layer, each re-run) is estimated before it starts: every slot's input tokens
as `count_tokens_approximately` counts what it will be sent (context fit included), and its
cost at the model's prices (`moa_graph.prices`) for that input and an answer of its
`max_tokens` (else `DEFAULT_OUTPUT_RESERVE`). The most expensive slots are left out, one at
a time, until the estimate fits; at least one always runs. Each slot left out is recorded
as `skipped` with the reason, so the downgrade shows in `references`, the events and the CLI.
An unpriced model counts as free under the cost cap (its cost cannot be estimated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

from moa_graph import prompts
from moa_graph.config import ModelSpec, Preset
from moa_graph.prices import cost_usd
from moa_graph.trimming import DEFAULT_OUTPUT_RESERVE

__all__ = ["SlotEstimate", "estimate", "left_out"]


@dataclass(frozen=True)
class SlotEstimate:
    """One slot's expected input tokens and cost in a fan-out."""

    index: int
    label: str
    input_tokens: int
    cost_usd: float | None
    """None: the model has no prices."""


def estimate(index: int, label: str, spec: ModelSpec, sent: Sequence[BaseMessage]) -> SlotEstimate:
    """The estimate of a slot that will be sent `sent`."""
    tokens = count_tokens_approximately(sent)
    output = spec.max_tokens or DEFAULT_OUTPUT_RESERVE
    return SlotEstimate(
        index, label, tokens, cost_usd(spec, input_tokens=tokens, output_tokens=output)
    )


def left_out(preset: Preset, estimates: Sequence[SlotEstimate]) -> dict[int, str]:
    """The slots (by index) to leave out of the fan-out, each with the `skipped` text."""
    cost_cap, token_cap = preset.max_reference_cost_usd, preset.max_reference_input_tokens
    kept = list(estimates)
    dropped: dict[int, str] = {}
    while len(kept) > 1:
        cost = sum(e.cost_usd or 0.0 for e in kept)
        tokens = sum(e.input_tokens for e in kept)
        if cost_cap is not None and cost > cost_cap:
            worst = max(kept, key=lambda e: (e.cost_usd or 0.0, e.index))
            reason = (
                f"left out to fit max_reference_cost_usd {cost_cap:g}: the fan-out was "
                f"estimated at ${cost:.6f}, this reference at ${worst.cost_usd or 0.0:.6f}"
            )
        elif token_cap is not None and tokens > token_cap:
            worst = max(kept, key=lambda e: (e.input_tokens, e.index))
            reason = (
                f"left out to fit max_reference_input_tokens {token_cap}: the fan-out was "
                f"estimated at {tokens} input tokens, this reference at {worst.input_tokens}"
            )
        else:
            break
        kept.remove(worst)
        dropped[worst.index] = prompts.BUDGET_SKIPPED.format(reason=reason)
    return dropped
