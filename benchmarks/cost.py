"""Figure 8, cost: the per-turn gate and the reference budget on a mixed workload.

Half the user turns are trivial ("thanks!", "ok, got it"), half are hard (a review of a
pasted function, a design question with its constraints), alternating, each in a fresh
conversation of the graph (`ainvoke`). The models carry stand-in prices (`*_cost_per_mtok`
on each spec: the stand-in's models are unpriced otherwise): two expensive references, two
mid-priced ones and four cheap ones, a mid-priced aggregator and a cheap gate model. Cost
and calls per turn are the turn's `usage` (`total.cost_usd`, `total.calls`); tokens are
the stand-in's whitespace words, so the dollar figures are illustrative, the ratios are not.
Each reference answers with the same advice of `ADVICE_WORDS` words (a fixed `reply`), so
its output, and the aggregator's input, are the size of real advice, not of the stand-in's
one-line default answer.

The policies:

- **always consult**: every turn runs every reference;
- **references off**: the run's choice (`configurable={"moa_references": "off"}`), the
  aggregator alone: the floor;
- **gate (callable)**: `gate=needs_panel` on `build_moa_graph`, a rule on the turn's
  message (a question mark, or more than 12 words: consult);
- **gate (model)**: the preset's `gate: {model: ...}`, a stand-in model whose replies are
  scripted, turn by turn, with what `needs_panel` says about that turn's message (`CONSULT`
  or `SKIP`). So the gate model decides as the rule does: the row measures what asking a
  model costs (one more call per turn, its price and its latency), not a model's judgement;
- **budget cap**: `max_reference_cost_usd`, which leaves the most expensive references out
  of a fan-out whose estimate (input as sent, output at the spec's `max_tokens`) is over it;
- **gate (callable) + budget cap**.

The turns run one after another (the gate model's script follows their order), after one
unmeasured warm-up turn per policy, and each decision is checked against the rule
afterwards from the turn's own reference calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from benchmarks.measure import median
from benchmarks.plan import Plan
from benchmarks.stand_in import StandIn
from benchmarks.workload import (
    AGGREGATOR,
    PRESET,
    PROVIDER,
    latency_table,
    moa_config,
    preset_supports,
    reference_names,
)
from moa_graph import build_moa_graph
from moa_graph.gate import GATE_OPTION
from moa_graph.trimming import message_text

__all__ = ["GATE_MODEL", "POLICIES", "cost_figure", "model_prices", "needs_panel", "workload"]

Log = Callable[[str], None]
GATE_MODEL = "gate"
_MAX_TOKENS = 512
"""References' `max_tokens`: the budget estimates each answer at this many tokens."""
_TIERS = [  # (input, output) USD per million tokens, by reference index
    (5.0, 25.0),
    (5.0, 25.0),
    (1.0, 5.0),
    (1.0, 5.0),
    (0.15, 0.6),
    (0.15, 0.6),
    (0.15, 0.6),
    (0.15, 0.6),
]
_AGGREGATOR_PRICE = (3.0, 15.0)
_GATE_PRICE = (0.1, 0.4)
ADVICE_WORDS = 250
_ADVICE = " ".join(
    ["Check the invariants first, then measure the hot path under load before changing it."]
    * (ADVICE_WORDS // 14)
)
_CAP_SHARE = 0.5
"""The budget cap: this share of the always-consult estimate of a hard turn's fan-out."""

TRIVIAL = [
    "thanks!",
    "ok, got it",
    "great, that works now",
    "hi there",
    "sounds good, thank you",
]
HARD = [
    "Review this function for race conditions and tell me what you would change:\n\n"
    "```python\n"
    "class Ledger:\n"
    "    def __init__(self):\n"
    "        self.balances = {}\n"
    "        self.lock = threading.Lock()\n\n"
    "    def transfer(self, source, target, amount):\n"
    "        if self.balances.get(source, 0) < amount:\n"
    "            raise ValueError('insufficient funds')\n"
    "        with self.lock:\n"
    "            self.balances[source] -= amount\n"
    "            self.balances[target] = self.balances.get(target, 0) + amount\n"
    "```\n\n"
    "It is called from a thread pool of 32 workers handling payout requests.",
    "We run a payments API at 3,000 requests per second with a p99 target of 150 ms. "
    "Writes go to Postgres; reads of balances are 80% of traffic. Should we put a "
    "write-through cache in front of the balances table, use read replicas, or both? What "
    "would you measure first, and what failure modes worry you with each option?",
    "Our retry policy retries every 5xx three times with exponential backoff starting at "
    "100 ms. During last week's outage of the card processor, traffic to it tripled and it "
    "took 40 minutes longer to recover. Propose a retry budget design that prevents this, "
    "with the numbers you would start with and how you would roll it out safely?",
]


def needs_panel(messages: Sequence[BaseMessage]) -> bool:
    """The callable gate: consult on a question or on more than 12 words, skip small talk."""
    text = message_text(messages[-1]) if messages else ""
    return "?" in text or len(text.split()) > 12


def workload(turns: int) -> list[tuple[str, str]]:
    """`turns` user messages, alternating trivial and hard: `(kind, text)`."""
    out = []
    for i in range(turns):
        kind, pool = ("trivial", TRIVIAL) if i % 2 == 0 else ("hard", HARD)
        out.append((kind, pool[(i // 2) % len(pool)]))
    return out


def model_prices(n_refs: int) -> dict[str, dict[str, Any]]:
    """Stand-in prices (and references' `max_tokens`) per model name."""

    def priced(price: tuple[float, float]) -> dict[str, Any]:
        return {"input_cost_per_mtok": price[0], "output_cost_per_mtok": price[1]}

    keys = {
        name: {**priced(_TIERS[i % len(_TIERS)]), "max_tokens": _MAX_TOKENS}
        for i, name in enumerate(reference_names(n_refs))
    }
    keys[AGGREGATOR] = priced(_AGGREGATOR_PRICE)
    keys[GATE_MODEL] = priced(_GATE_PRICE)
    return keys


POLICIES = [
    "always consult",
    "references off",
    "gate (callable)",
    "gate (model)",
    "budget cap",
    "gate (callable) + budget cap",
]


def cost_figure(stand_in: StandIn, plan: Plan, log: Log) -> dict[str, Any]:
    """(8) Cost and calls per turn, by policy and by kind of turn."""
    missing = [key for key in ("gate", "max_reference_cost_usd") if not preset_supports(key)]
    if missing:
        return {"pending": f"Preset has no {', '.join(missing)}", "rows": []}
    return asyncio.run(_cost(stand_in, plan, log))


async def _cost(stand_in: StandIn, plan: Plan, log: Log) -> dict[str, Any]:
    n = plan.cost_refs
    prices = model_prices(n)
    turns = workload(plan.cost_turns)
    cap = _CAP_SHARE * _fanout_estimate(n, prices, HARD[0])
    rows = []
    for policy in POLICIES:
        graph = _graph(stand_in.url, n, prices, policy, cap)
        # One unmeasured turn first (no latency): the graph's first turn builds its models.
        stand_in.configure(latency_table(n, reference_s=0.0, aggregator_s=0.0))
        await graph.ainvoke({"messages": [HumanMessage(HARD[0])]})
        latencies = latency_table(n, reference_s=plan.reference_s, aggregator_s=plan.aggregator_s)
        for name in reference_names(n):
            latencies[name]["reply"] = _ADVICE
        latencies[GATE_MODEL] = {"latency": plan.gate_s, "script": _gate_script(turns)}
        stand_in.configure(latencies)
        log(f"cost  {policy}  {len(turns)} turns")
        choice = {"configurable": {GATE_OPTION: "off"}} if policy == "references off" else {}
        measured = []
        for kind, text in turns:
            started = time.perf_counter()
            out = await graph.ainvoke({"messages": [HumanMessage(text)]}, config=choice)
            measured.append(_turn(kind, text, out, time.perf_counter() - started))
        rows.append(_row(policy, measured))
    always = rows[0]
    for row in rows:
        for kind in ("all", "trivial", "hard"):
            base = always["by_kind"][kind]["cost_usd_per_turn"]
            row["by_kind"][kind]["cost_vs_always"] = (
                row["by_kind"][kind]["cost_usd_per_turn"] / base if base else float("nan")
            )
    return {
        "n_refs": n,
        "turns": len(turns),
        "prices": prices,
        "cap_usd": cap,
        "cap_share": _CAP_SHARE,
        "advice_words": len(_ADVICE.split()),
        "reference_s": plan.reference_s,
        "aggregator_s": plan.aggregator_s,
        "gate_s": plan.gate_s,
        "rows": rows,
    }


def _graph(url: str, n: int, prices: dict[str, Any], policy: str, cap: float) -> Any:
    extra: dict[str, Any] = {}
    if policy == "gate (model)":
        extra["gate"] = {"model": {"provider": PROVIDER, "model": GATE_MODEL, **prices[GATE_MODEL]}}
    if "budget cap" in policy:
        extra["max_reference_cost_usd"] = cap
    gate = needs_panel if policy.startswith("gate (callable)") else None
    config = moa_config(url, n, extra=extra, model_keys=prices)
    return build_moa_graph(PRESET, config=config, gate=gate).compile()


def _fanout_estimate(n: int, prices: dict[str, Any], text: str) -> float:
    """The budget's own estimate of an always-consult fan-out on `text`, in USD."""
    from moa_graph.budget import estimate
    from moa_graph.config import ModelSpec
    from moa_graph.references import advisor_input

    total = 0.0
    for i, name in enumerate(reference_names(n)):
        spec = ModelSpec(provider=PROVIDER, model=name, **prices[name])
        task: Any = {"index": i, "view": [HumanMessage(text)]}
        sent = advisor_input(task, spec, limit=20_000)
        total += estimate(i, spec.label, spec, sent).cost_usd or 0.0
    return total


def _gate_script(turns: list[tuple[str, str]]) -> list[str]:
    """The gate model's replies, in turn order: what `needs_panel` says of each message."""
    return ["CONSULT" if needs_panel([HumanMessage(text)]) else "SKIP" for _, text in turns]


def _turn(kind: str, text: str, out: dict[str, Any], wall_s: float) -> dict[str, Any]:
    usage = out.get("usage") or {"models": {}, "total": {}}
    calls: dict[str, int] = {}
    for model in usage["models"].values():
        calls[model["role"]] = calls.get(model["role"], 0) + model["calls"]
    references = out.get("references", [])
    return {
        "kind": kind,
        "wall_s": wall_s,
        "cost_usd": usage["total"].get("cost_usd", 0.0),
        "calls": usage["total"].get("calls", 0),
        "reference_calls": calls.get("reference", 0),
        "gate_calls": calls.get("gate", 0),
        "budget_skipped": sum(r["status"] == "skipped" for r in references),
        "consulted": calls.get("reference", 0) > 0,
        "rule_says_consult": needs_panel([HumanMessage(text)]),
        "answered": bool(message_text(out["messages"][-1])),
    }


def _row(policy: str, turns: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind = {}
    for kind in ("all", "trivial", "hard"):
        picked = [t for t in turns if kind in ("all", t["kind"])]
        count = max(len(picked), 1)
        by_kind[kind] = {
            "turns": len(picked),
            "cost_usd_per_turn": sum(t["cost_usd"] for t in picked) / count,
            "calls_per_turn": sum(t["calls"] for t in picked) / count,
            "reference_calls_per_turn": sum(t["reference_calls"] for t in picked) / count,
            "gate_calls_per_turn": sum(t["gate_calls"] for t in picked) / count,
            "budget_skipped_per_turn": sum(t["budget_skipped"] for t in picked) / count,
            "consulted_share": sum(t["consulted"] for t in picked) / count,
            "p50_s": median([t["wall_s"] for t in picked]),
        }
    gated = policy.startswith("gate")
    return {
        "policy": policy,
        "by_kind": by_kind,
        "unanswered": sum(not t["answered"] for t in turns),
        # A gate must have decided as its rule says, on every turn.
        "gate_mismatches": sum(t["consulted"] != t["rule_says_consult"] for t in turns)
        if gated
        else 0,
    }
