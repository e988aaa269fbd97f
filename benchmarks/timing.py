"""Figures 1-3, the timed comparisons: fan-out width, concurrency, stragglers.

The cell helpers (`warm`, `measured`, `summarise`, `rotated`) also serve the heavy-tails
figure (`benchmarks.tails`).

Every figure runs its contenders cell by cell in turn (the order rotates each round), so
drift on the machine lands on all of them; the summaries pool the turns of every round and
put ratios (to the floor, to the bare-aiohttp floor, to hand-gathered `ChatOpenAI`) next
to the absolute figures.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.contenders import CONTENDERS
from benchmarks.measure import median, percentile
from benchmarks.plan import Plan
from benchmarks.stand_in import StandIn
from benchmarks.worker import Backend
from benchmarks.workload import latency_table, preset_supports

__all__ = [
    "concurrency_figure",
    "fanout_figure",
    "langchain_floor",
    "measured",
    "rotated",
    "straggler_figure",
    "summarise",
    "warm",
]

_DEADLINE_KEY = "references_deadline_s"
Log = Callable[[str], None]


def fanout_figure(backend: Backend, stand_in: StandIn, plan: Plan, log: Log) -> dict[str, Any]:
    """(1) Wall per turn against the floor `max(reference) + aggregator`, N = 1 ... 64."""
    floor = plan.reference_s + plan.aggregator_s
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    skipped = []
    for round_ in range(plan.fanout_repeats):
        for i, n in enumerate(plan.fanout_refs):
            names = []
            for name in plan.fanout_contenders:
                if name == "sequential" and n > plan.sequential_max_refs:
                    if round_ == 0:
                        skipped.append({"contender": name, "n_refs": n, "reason": _SEQ_SKIP})
                    continue
                names.append(name)
            if round_ == 0:
                warm(backend, stand_in, names, n_refs=n)
            stand_in.configure(
                latency_table(n, reference_s=plan.reference_s, aggregator_s=plan.aggregator_s)
            )
            for name in rotated(names, round_ + i):
                log(f"fan-out  round {round_ + 1}/{plan.fanout_repeats}  N={n:<3} {name}")
                cells[name, n].append(
                    measured(
                        backend, stand_in, name, n_refs=n, concurrency=1, turns=plan.fanout_turns
                    )
                )
    rows = [summarise(name, cells[name, n], n_refs=n) for (name, n) in cells]
    raw = {row["n_refs"]: row for row in rows if row["contender"] == "raw-aiohttp"}
    for row in rows:
        row["overhead_p50"] = row["p50_s"] / floor - 1
        row["overhead_p99"] = row["p99_s"] / floor - 1
        if row["n_refs"] in raw:
            row["p50_vs_raw"] = row["p50_s"] / raw[row["n_refs"]]["p50_s"]
    return {
        "floor_s": floor,
        "reference_s": plan.reference_s,
        "aggregator_s": plan.aggregator_s,
        "n_refs": list(plan.fanout_refs),
        "repeats": plan.fanout_repeats,
        "rows": _ordered(rows, "n_refs"),
        "skipped": skipped,
    }


def concurrency_figure(
    backend: Backend, stand_in: StandIn, plan: Plan, log: Log, *, shipped: str
) -> dict[str, Any]:
    """(2) Throughput, latency, client CPU and peak RSS at C concurrent conversations."""
    n = plan.concurrency_refs
    names_at: dict[int, list[str]] = {}
    skipped = []
    for c in plan.concurrency_levels:
        names_at[c] = []
        for name in plan.concurrency_contenders:
            if c > plan.max_concurrency.get(name, c):
                reason = _POOL_SKIP if name == "thread-pool-8" else _BUDGET_SKIP
                skipped.append({"contender": name, "concurrency": c, "reason": reason})
                continue
            names_at[c].append(name)
    warm(backend, stand_in, plan.concurrency_contenders, n_refs=n, turns=2)
    stand_in.configure(
        latency_table(n, reference_s=plan.reference_s, aggregator_s=plan.aggregator_s)
    )
    # One discarded turn each at the real latency: freshly forked workers otherwise bill
    # their first cell for settling in (copy-on-write pages, pools), which C = 1 shows.
    for name in plan.concurrency_contenders:
        backend.cell(name, n_refs=n, concurrency=1, turns=1)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    # Level by level, lowest first: after a C = 500 cell a worker and the stand-in spend
    # seconds closing thousands of idle keep-alive connections, which would be billed to
    # whatever cell came next. Within a level the contenders take turns, rotating.
    for i, c in enumerate(plan.concurrency_levels):
        rounds = plan.concurrency_repeats[c]
        for round_ in range(rounds):
            for name in rotated(names_at[c], round_ + i):
                log(f"concurrency  C={c:<4} round {round_ + 1}/{rounds}  {name}")
                cells[name, c].append(
                    measured(
                        backend,
                        stand_in,
                        name,
                        n_refs=n,
                        concurrency=c,
                        turns=plan.concurrency_turns[c],
                    )
                )
    rows = [summarise(name, cells[name, c], concurrency=c) for (name, c) in cells]
    by = {(row["contender"], row["concurrency"]): row for row in rows}
    for row in rows:
        c = row["concurrency"]
        raw = by.get(("raw-aiohttp", c))
        default = by.get(("chatopenai", c))
        floor = by.get((langchain_floor(row["contender"], shipped), c))
        if raw:
            row["throughput_vs_raw"] = row["turns_per_s"] / raw["turns_per_s"]
            row["cpu_vs_raw"] = row["cpu_ms_per_turn"] / raw["cpu_ms_per_turn"]
        if default:
            row["cpu_vs_chatopenai"] = row["cpu_ms_per_turn"] / default["cpu_ms_per_turn"]
        if floor:
            row["langchain_floor"] = floor["contender"]
            row["throughput_vs_langchain_floor"] = row["turns_per_s"] / floor["turns_per_s"]
    return {
        "n_refs": n,
        "reference_s": plan.reference_s,
        "aggregator_s": plan.aggregator_s,
        "levels": list(plan.concurrency_levels),
        "turns_per_conversation": {str(c): t for c, t in plan.concurrency_turns.items()},
        "repeats": {str(c): r for c, r in plan.concurrency_repeats.items()},
        "rows": _ordered(rows, "concurrency"),
        "skipped": skipped,
    }


def straggler_figure(backend: Backend, stand_in: StandIn, plan: Plan, log: Log) -> dict[str, Any]:
    """(3) One of N references at 10x latency, without and with a references deadline.

    Every contender runs at `straggler_concurrency` conversations, without and with the
    deadline; the deadline rows also run with one conversation, where the event loop has
    nothing else to do (the mechanism alone).
    """
    n = plan.straggler_refs
    slow_s = plan.reference_s * plan.straggler_factor
    supported = preset_supports(_DEADLINE_KEY)
    busy, solo = plan.straggler_concurrency, 1
    # (contender, deadline, conversations, turns per conversation)
    variants: list[tuple[str, float | None, int, int]] = []
    pending = []
    for name in plan.straggler_contenders:
        variants.append((name, None, busy, plan.straggler_turns))
        if CONTENDERS[name].family == "floor" or supported:
            variants.append((name, plan.deadline_s, busy, plan.straggler_turns))
            variants.append((name, plan.deadline_s, solo, plan.straggler_solo_turns))
        else:
            pending.append({"contender": name, "deadline_s": plan.deadline_s})
    warm(backend, stand_in, plan.straggler_contenders, n_refs=n)
    for name in plan.straggler_contenders:
        if CONTENDERS[name].family == "floor" or supported:
            warm(backend, stand_in, [name], n_refs=n, deadline_s=plan.deadline_s)
    stand_in.configure(
        latency_table(
            n, reference_s=plan.reference_s, aggregator_s=plan.aggregator_s, slow={n - 1: slow_s}
        )
    )
    cells: dict[tuple[str, float | None, int], list[dict[str, Any]]] = defaultdict(list)
    for round_ in range(plan.straggler_repeats):
        for name, deadline, conversations, turns in rotated(variants, round_):
            if conversations == solo and round_ > 0:
                continue  # one round is enough when nothing competes for the loop
            log(
                f"stragglers  round {round_ + 1}/{plan.straggler_repeats}  {name} "
                f"deadline={deadline} C={conversations}"
            )
            cells[name, deadline, conversations].append(
                measured(
                    backend,
                    stand_in,
                    name,
                    n_refs=n,
                    deadline_s=deadline,
                    concurrency=conversations,
                    turns=turns,
                )
            )
    rows = []
    for (name, deadline, conversations), runs in cells.items():
        row = summarise(name, runs, deadline_s=deadline, concurrency=conversations)
        bound = (deadline if deadline is not None else slow_s) + plan.aggregator_s
        row["bound_s"] = bound
        row["p99_vs_bound"] = row["p99_s"] / bound
        # With a deadline only the straggler should be cut: n - 1 references can answer.
        row["healthy_answered_share"] = min(
            row["answered_per_turn"] / (n - 1 if deadline else n), 1.0
        )
        rows.append(row)
    order = list(CONTENDERS)
    rows.sort(key=lambda r: (order.index(r["contender"]), r["deadline_s"] or 0, r["concurrency"]))
    return {
        "n_refs": n,
        "reference_s": plan.reference_s,
        "straggler_s": slow_s,
        "aggregator_s": plan.aggregator_s,
        "deadline_s": plan.deadline_s,
        "deadline_key_supported": supported,
        "concurrency": busy,
        "rows": rows,
        "pending": pending,
    }


def langchain_floor(name: str, shipped: str) -> str:
    """The hand-gathered `ChatOpenAI` contender with the same HTTP transport as `name`."""
    transport = CONTENDERS[name].transport
    if transport == "as shipped":
        transport = shipped
    return "chatopenai+aiohttp" if transport.startswith("aiohttp") else "chatopenai"


_SEQ_SKIP = "sequential references take N x reference latency; not run above the plan's N"
_POOL_SKIP = "needs (1 + 8) x C OS threads"
_BUDGET_SKIP = "time budget: a C=500 cell of a LangChain contender takes 25-50 s"


def warm(
    backend: Backend,
    stand_in: StandIn,
    names: Sequence[str],
    *,
    n_refs: int,
    turns: int = 1,
    **policy: Any,
) -> None:
    """Build and exercise each contender once with no injected latency (not measured).

    `policy`: the `Setup` fields past the width (`deadline_s`, `quorum`, `quorum_grace_s`).
    """
    stand_in.configure(latency_table(n_refs, reference_s=0.0, aggregator_s=0.0))
    for name in names:
        backend.warm(name, n_refs=n_refs, turns=turns, **policy)


def measured(backend: Backend, stand_in: StandIn, name: str, **params: Any) -> dict[str, Any]:
    """One cell, with the stand-in's CPU time and request counts over the same span."""
    before_stats, before_cpu = stand_in.stats(), stand_in.cpu_seconds()
    started = time.perf_counter()
    cell = backend.cell(name, **params)
    cell["outer_wall_s"] = time.perf_counter() - started
    after_stats = stand_in.stats()
    cell["server_cpu_s"] = stand_in.cpu_seconds() - before_cpu
    cell["requests"] = after_stats["total"] - before_stats["total"]
    cell["reference_requests"] = sum(
        count - before_stats["requests"].get(model, 0)
        for model, count in after_stats["requests"].items()
        if model.startswith("ref")
    )
    cell["disconnects"] = sum(after_stats["disconnects"].values()) - sum(
        before_stats["disconnects"].values()
    )
    return cell


def summarise(name: str, runs: list[dict[str, Any]], **key: Any) -> dict[str, Any]:
    """Pool the cells of one contender and one setting into one row."""
    info = CONTENDERS[name]
    latencies = [latency for run in runs for latency in run["latencies_s"]]
    turns = sum(run["turns"] for run in runs)
    per_turn = max(turns, 1)
    return {
        "contender": name,
        **key,
        "family": info.family,
        "transport": info.transport,
        "clients": info.clients,
        "cells": len(runs),
        "turns": turns,
        "errors": sum(run["errors"] for run in runs),
        "error_samples": sorted({s for run in runs for s in run["error_samples"]})[:3],
        "p50_s": median(latencies),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies, default=float("nan")),
        "turns_per_s": median([run["turns"] / run["wall_s"] for run in runs]),
        "cpu_ms_per_turn": median([1000 * run["cpu_s"] / max(run["turns"], 1) for run in runs]),
        "cpu_ms_per_turn_cells": [1000 * run["cpu_s"] / max(run["turns"], 1) for run in runs],
        "server_cpu_ms_per_turn": 1000 * sum(run["server_cpu_s"] for run in runs) / per_turn,
        "peak_rss_mb": runs[0]["peak_rss_mb"],
        "start_rss_mb": runs[0]["start_rss_mb"],
        "reference_calls_per_turn": sum(run["reference_requests"] for run in runs) / per_turn,
        "answered_per_turn": sum(run["answered"] for run in runs) / per_turn,
        "disconnects": sum(run["disconnects"] for run in runs),
    }


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """`items` rotated left by `by`: each round starts with another contender."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def _ordered(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    order = list(CONTENDERS)
    return sorted(rows, key=lambda row: (row[key], order.index(row["contender"])))
