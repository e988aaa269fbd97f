"""Progress events on `stream_mode="custom"`.

One event when each reference starts and ends, one when the aggregator starts a step, and
one when a turn's gate decides (when the turn has one).
The CLI's live view is built from these and nothing else.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from langgraph.config import get_stream_writer
from typing_extensions import TypedDict

__all__ = ["AggregatorEvent", "GateEvent", "JudgeEvent", "ReferenceEvent", "emit"]


class ReferenceEvent(TypedDict):
    """A reference started (`status="running"`) or ended (`ok`, `failed`, `skipped`)."""

    type: Literal["moa_reference"]
    index: int
    label: str
    status: Literal["running", "ok", "failed", "skipped"]
    latency_ms: float | None
    layer: int


class AggregatorEvent(TypedDict):
    """The aggregator started a step of the turn (step 1, then once per tool round)."""

    type: Literal["moa_aggregator"]
    label: str
    status: Literal["running"]
    references_ok: NotRequired[int]


class GateEvent(TypedDict):
    """The turn's gate decided whether its references run (`moa_graph.gate`)."""

    type: Literal["moa_gate"]
    decision: Literal["consult", "skip"]
    by: Literal["preset", "run", "callable", "model"]
    latency_ms: float | None
    """The gate model's call; None when no model was asked."""
    failed: bool
    """The gate model failed or timed out (the turn consults)."""


class JudgeEvent(TypedDict):
    """The judge started (`running`) or ended (`ok`, `failed`) (`moa_graph.judge`)."""

    type: Literal["moa_judge"]
    status: Literal["running", "ok", "failed"]
    label: str
    latency_ms: float | None


def emit(event: ReferenceEvent | AggregatorEvent | GateEvent | JudgeEvent) -> None:
    """Send an event to `stream_mode="custom"`; a no-op outside a streamed LangGraph run."""
    try:
        writer = get_stream_writer()
    except (RuntimeError, KeyError):  # outside a LangGraph run, e.g. MoAChatModel on its own
        return
    writer(event)
