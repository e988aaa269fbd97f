"""The per-turn gate: whether a user turn consults the references at all.

Three ways decide, first match wins:

1. **The run** (`GateChoice`): `"on"` always consults, `"off"` never, `"auto"` (default)
   leaves it to the preset. A run chooses with `configurable={"moa_references": "off"}`
   (the graph, Studio, `MoAMiddleware`, `MoAChatModel` inside them), `MoAContext(references=...)`
   (Studio), or `MoAChatModel.invoke(..., references="off")`; nothing else about the run is
   read, and any other value is an error.
2. **A callable** given in code (`gate=` on `build_moa_graph`, `MoAChatModel`,
   `MoAMiddleware`): `gate(messages) -> bool`, True to consult.
3. **A model** (`gate: {model: ...}` on the preset): asked, with a short fixed prompt
   (`prompts.GATE_SYSTEM_PROMPT`), whether the turn's human message needs the panel. It
   answers `CONSULT` or `SKIP`; anything else, a failure or its `timeout_s`, consults (the
   gate fails open, and its event says `failed`).
   Its call is counted in `usage` (role `gate`) and announced by a `moa_gate` event.

With none of them, every turn consults. The decision is made at a turn's first fan-out and
holds for the turn: a turn that skipped its references does not re-run them mid-turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables.config import ContextThreadPoolExecutor, ensure_config

from moa_graph import prompts
from moa_graph.events import emit
from moa_graph.models import PresetModels, gate_config
from moa_graph.trimming import message_text
from moa_graph.turn import turn_start
from moa_graph.usage import Usage, call_usage

__all__ = ["GATE_OPTION", "Gate", "GateChoice", "GateDecision", "adecide", "decide", "run_choice"]

GateChoice = Literal["auto", "on", "off"]
"""What a run may choose: leave it to the preset (`auto`), always consult, or never."""
Gate = Callable[[Sequence[BaseMessage]], bool]
"""A gate in code: given the conversation, True to consult the references."""
GATE_OPTION = "moa_references"
"""The `configurable` key a run chooses with (`GateChoice`)."""


@dataclass(frozen=True)
class GateDecision:
    """Whether this turn consults its references, who decided, and what deciding cost."""

    consult: bool
    by: Literal["preset", "run", "callable", "model"]
    usage: Usage | None = None
    """The gate model's call (None: no model was asked)."""
    failed: bool = False
    """The gate model failed or timed out, so the turn consults (the gate fails open)."""


def run_choice(explicit: str | None = None, context: object = None) -> GateChoice:
    """The run's choice: `explicit` (a call option), else its `configurable`, else `context`.

    Raises:
        ValueError: The choice is not one of `auto`, `on`, `off`.
    """
    choice: Any = explicit
    if choice is None:
        choice = ensure_config().get("configurable", {}).get(GATE_OPTION)
    if choice is None:
        choice = getattr(context, "references", None)
    if choice is None or choice == "":
        return "auto"
    if choice not in get_args(GateChoice):
        raise ValueError(
            f"{GATE_OPTION} must be one of 'auto', 'on', 'off', not {str(choice)[:40]!r}"
        )
    return choice  # type: ignore[no-any-return]


def decide(
    models: PresetModels,
    messages: Sequence[BaseMessage],
    *,
    gate: Gate | None,
    choice: GateChoice,
) -> GateDecision:
    """Decide the turn (sync)."""
    decided, model = _without_model(models, messages, gate, choice)
    if decided is not None or model is None:
        return decided or GateDecision(consult=True, by="preset")
    started, ask = time.perf_counter(), _question(models, messages)
    config, timeout = gate_config(_spec(models)), _timeout(models)
    pool = ContextThreadPoolExecutor(max_workers=1)
    try:
        reply: BaseMessage | None = pool.submit(model.invoke, ask, config).result(timeout)
    except Exception:  # the gate fails open (an error, or its timeout): the references run
        reply = None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return _decided(models, reply, started)


async def adecide(
    models: PresetModels,
    messages: Sequence[BaseMessage],
    *,
    gate: Gate | None,
    choice: GateChoice,
) -> GateDecision:
    """Decide the turn (async)."""
    decided, model = _without_model(models, messages, gate, choice)
    if decided is not None or model is None:
        return decided or GateDecision(consult=True, by="preset")
    started, ask = time.perf_counter(), _question(models, messages)
    call = model.ainvoke(ask, config=gate_config(_spec(models)))
    try:
        reply: BaseMessage | None = await asyncio.wait_for(call, timeout=_timeout(models))
    except Exception:  # the gate fails open (an error, or its timeout): the references run
        reply = None
    return _decided(models, reply, started)


def _without_model(
    models: PresetModels, messages: Sequence[BaseMessage], gate: Gate | None, choice: GateChoice
) -> tuple[GateDecision | None, Any]:
    """A decision made without a model, or the gate model to ask."""
    if choice != "auto":
        return _announced(GateDecision(consult=choice == "on", by="run")), None
    if gate is not None:
        return _announced(GateDecision(consult=bool(gate(list(messages))), by="callable")), None
    return None, models.gate()


def _question(models: PresetModels, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    text = message_text(messages[turn_start(messages)])[: prompts.GATE_QUESTION_CHARS]
    return [
        SystemMessage(content=prompts.GATE_SYSTEM_PROMPT),
        HumanMessage(content=prompts.GATE_QUESTION.format(text=text)),
    ]


def _decided(models: PresetModels, reply: BaseMessage | None, started: float) -> GateDecision:
    answer = message_text(reply).strip().upper() if reply is not None else ""
    consult = not (answer.startswith("SKIP") and "CONSULT" not in answer)
    usage = call_usage("gate", _spec(models), reply)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    decision = GateDecision(consult=consult, by="model", usage=usage, failed=reply is None)
    return _announced(decision, latency_ms)


def _announced(decision: GateDecision, latency_ms: float | None = None) -> GateDecision:
    emit(
        {
            "type": "moa_gate",
            "decision": "consult" if decision.consult else "skip",
            "by": decision.by,
            "latency_ms": latency_ms,
            "failed": decision.failed,
        }
    )
    return decision


def _timeout(models: PresetModels) -> float:
    assert models.preset.gate is not None
    return models.preset.gate.timeout_s


def _spec(models: PresetModels) -> Any:
    assert models.preset.gate is not None
    return models.preset.gate.model
