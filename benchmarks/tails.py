"""Figure 7, stragglers under heavy tails: wait for all, a references deadline, or a quorum.

Every reference's latency is drawn per request from a lognormal by the stand-in
(`latency: {lognormal: {median, sigma}}`, its seeded RNG), so any reference can be the
straggler of a turn, and one turn in a few has one far out in the tail. The graph
(`ainvoke`) runs the same turns under each policy: wait for all N, `references_deadline_s`,
and `quorum: K` for K = N/2 and N-1, each with no grace and a small `quorum_grace_s`.

**The K-th answer's time** is read from the references' own `latency_ms` (each measured by
the client from its request's start to its parsed answer): the K-th smallest among the
turn's `ok` answers is when the quorum was reached, as far as the references themselves can
tell. What the graph adds around them (starting the fan-out, cutting the others, the join,
the aggregator's request) is what the bound's 10% has to cover. Each turn gets its own
bound, from what the policy should have waited for:

- wait for all: the slowest answer;
- a deadline: the deadline when a reference was cut, else the slowest answer;
- quorum K: the K-th answer plus the grace when a reference was cut, else the slowest;

plus the aggregator's latency. The target compares each turn's wall time with its own bound
(p99 over turns of wall / bound), rather than a p99 with a p99.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from benchmarks.measure import median, percentile
from benchmarks.plan import Plan
from benchmarks.stand_in import StandIn
from benchmarks.timing import measured, rotated, summarise, warm
from benchmarks.worker import Backend
from benchmarks.workload import lognormal_table, preset_supports
from moa_graph.testing._stub_behaviour import LogNormal

__all__ = ["tail_policies", "tails_figure"]

Log = Callable[[str], None]
_KEYS = ("references_deadline_s", "quorum", "quorum_grace_s")


def tail_policies(plan: Plan) -> list[dict[str, Any]]:
    """The policies compared: a name and the `Setup` fields (`deadline_s`, `quorum`, ...)."""
    n = plan.tail_refs
    policies: list[dict[str, Any]] = [
        {"policy": "wait for all", "setup": {}},
        {
            "policy": f"deadline {plan.tail_deadline_s:g} s",
            "setup": {"deadline_s": plan.tail_deadline_s},
        },
    ]
    for k in dict.fromkeys((max(n // 2, 1), max(n - 1, 1))):
        for grace in (0.0, plan.tail_grace_s):
            policies.append(
                {
                    "policy": f"quorum {k}, grace {grace:g} s",
                    "setup": {"quorum": k, "quorum_grace_s": grace},
                }
            )
    return policies


def tails_figure(backend: Backend, stand_in: StandIn, plan: Plan, log: Log) -> dict[str, Any]:
    """(7) p50 / p99 turn latency and answers kept per turn under each policy."""
    n = plan.tail_refs
    missing = [key for key in _KEYS if not preset_supports(key)]
    if missing:
        return {"pending": f"Preset has no {', '.join(missing)}", "rows": []}
    policies = tail_policies(plan)
    for name in plan.tail_contenders:
        for policy in policies:
            warm(backend, stand_in, [name], n_refs=n, **policy["setup"])
    stand_in.configure(
        lognormal_table(
            n, median_s=plan.tail_median_s, sigma=plan.tail_sigma, aggregator_s=plan.aggregator_s
        )
    )
    variants = [(name, i) for name in plan.tail_contenders for i in range(len(policies))]
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for round_ in range(plan.tail_repeats):
        for name, i in rotated(variants, round_):
            log(
                f"heavy tails  round {round_ + 1}/{plan.tail_repeats}  {name} "
                f"{policies[i]['policy']}"
            )
            cells[name, i].append(
                measured(
                    backend,
                    stand_in,
                    name,
                    n_refs=n,
                    concurrency=plan.tail_concurrency,
                    turns=plan.tail_turns,
                    stagger_s=plan.tail_stagger_s,
                    **policies[i]["setup"],
                )
            )
    rows = []
    for (name, i), runs in sorted(cells.items()):
        policy = policies[i]
        row = summarise(name, runs, policy=policy["policy"], **_setup_keys(policy["setup"]))
        row.update(_bounds(runs, policy["setup"], n_refs=n, aggregator_s=plan.aggregator_s))
        rows.append(row)
    for name in plan.tail_contenders:
        wait_all = next(r for r in rows if r["contender"] == name and r["policy"] == "wait for all")
        for row in rows:
            if row["contender"] == name:
                row["p50_vs_wait_all"] = row["p50_s"] / wait_all["p50_s"]
                row["p99_vs_wait_all"] = row["p99_s"] / wait_all["p99_s"]
    shape = LogNormal(median=plan.tail_median_s, sigma=plan.tail_sigma)
    return {
        "n_refs": n,
        "median_s": plan.tail_median_s,
        "sigma": plan.tail_sigma,
        "call_p90_s": shape.percentile(90),
        "call_p99_s": shape.percentile(99),
        "aggregator_s": plan.aggregator_s,
        "deadline_s": plan.tail_deadline_s,
        "grace_s": plan.tail_grace_s,
        "concurrency": plan.tail_concurrency,
        "turns_per_conversation": plan.tail_turns,
        "repeats": plan.tail_repeats,
        "stagger_s": plan.tail_stagger_s,
        "rows": rows,
    }


def _setup_keys(setup: dict[str, Any]) -> dict[str, Any]:
    return {
        "deadline_s": setup.get("deadline_s"),
        "quorum": setup.get("quorum"),
        "quorum_grace_s": setup.get("quorum_grace_s"),
    }


def _bounds(
    runs: list[dict[str, Any]], setup: dict[str, Any], *, n_refs: int, aggregator_s: float
) -> dict[str, Any]:
    """Per turn: what the policy should have waited for, its bound, and the wall over it."""
    deadline, quorum = setup.get("deadline_s"), setup.get("quorum")
    grace = setup.get("quorum_grace_s") or 0.0
    awaited, kth, over = [], [], []
    for run in runs:
        for wall, detail in zip(run["latencies_s"], run["details"], strict=True):
            ok = [ms / 1000 for ms in detail["ok_ms"]]
            slowest = max(ok, default=0.0)
            cut = len(ok) < n_refs
            if quorum is not None and len(ok) >= quorum:
                kth.append(ok[quorum - 1])
                wait = ok[quorum - 1] + grace if cut else slowest
            elif deadline is not None and cut:
                wait = deadline
            else:
                wait = slowest
            awaited.append(wait)
            over.append(wall / (wait + aggregator_s))
    return {
        "awaited_p50_s": median(awaited),
        "awaited_p99_s": percentile(awaited, 99),
        "kth_p50_s": median(kth),
        "kth_p99_s": percentile(kth, 99),
        "bound_p99_s": percentile(awaited, 99) + aggregator_s,
        "wall_over_bound_p50": median(over),
        "wall_over_bound_p99": percentile(over, 99),
        "wall_over_bound_max": max(over, default=float("nan")),
    }
