"""The issue's targets, judged against one run's results: met, missed, pending or reported.

These are printed by the harness and written to the report; they are not timed tests.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["CPU_LEVEL", "evaluate"]

Status = Literal["met", "missed", "pending", "reported"]

CPU_LEVEL = 100
"""Concurrency at which client CPU per turn is judged (the largest level up to it)."""
_OVERHEAD_LIMITS = {8: 0.05, 64: 0.10}
_THROUGHPUT_SHARE = 0.80
_CPU_SHARE = 0.60
_DEADLINE_SLACK = 0.10
_HEALTHY_SHARE = 0.95
"""With a deadline, the share of the healthy references (all but the straggler) that must
still answer: a deadline that meets its latency bound by cutting healthy references off
has not met the target."""
_PREFIX_SHARE = 0.95
_QUORUM_P50_SHARE = 0.60
"""Quorum's p50 turn latency over wait-all's, under heavy-tailed references."""
_QUORUM_SLACK = 0.10
"""Each quorum turn within (K-th answer + grace + aggregator) x 1.10, at the p99."""


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target that this run's results can speak to, one row per contender."""
    targets: list[dict[str, Any]] = []
    if "fanout" in results:
        targets += _overhead(results["fanout"])
    if "concurrency" in results:
        targets += _throughput(results["concurrency"])
        targets += _cpu(results["concurrency"])
        targets += _raw_ratio(results["concurrency"])
    if "stragglers" in results:
        targets += _deadline(results["stragglers"])
    if "tails" in results:
        targets += _tails(results["tails"])
    if "cost" in results:
        targets += _cost(results["cost"])
    if "prefix" in results:
        targets += _prefix(results["prefix"])
    return targets


def _row(
    target: str,
    contender: str,
    status: Status,
    value: str,
    limit: str,
    detail: str = "",
) -> dict[str, Any]:
    return {
        "target": target,
        "contender": contender,
        "status": status,
        "value": value,
        "limit": limit,
        "detail": detail,
    }


def _judge(ok: bool) -> Status:
    return "met" if ok else "missed"


def _moa(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["family"] == "moa_graph"]


def _overhead(figure: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    raw = {r["n_refs"]: r for r in figure["rows"] if r["contender"] == "raw-aiohttp"}
    for n, limit in _OVERHEAD_LIMITS.items():
        for row in _moa([r for r in figure["rows"] if r["n_refs"] == n]):
            detail = f"p50 {_ms(row['p50_s'])} vs floor {_ms(figure['floor_s'])}"
            if n in raw:
                detail += f"; raw-aiohttp {_pct(raw[n]['overhead_p50'])}"
            out.append(
                _row(
                    f"overhead over the floor at N={n}",
                    row["contender"],
                    _judge(row["overhead_p50"] <= limit),
                    _pct(row["overhead_p50"]),
                    f"<= {_pct(limit)}",
                    detail,
                )
            )
    return out


def _top_level(figure: dict[str, Any]) -> int:
    return int(max(figure["levels"]))


def _throughput(figure: dict[str, Any]) -> list[dict[str, Any]]:
    c = _top_level(figure)
    out = []
    for row in _moa([r for r in figure["rows"] if r["concurrency"] == c]):
        share = row.get("throughput_vs_langchain_floor", math.nan)
        out.append(
            _row(
                f"throughput at C={c} vs hand-gathered ChatOpenAI (same transport), no errors",
                row["contender"],
                _judge(share >= _THROUGHPUT_SHARE and row["errors"] == 0),
                f"{_pct(share)}, {row['errors']} errors",
                f">= {_pct(_THROUGHPUT_SHARE)}, 0 errors",
                f"{row['turns_per_s']:.1f} turns/s vs {row.get('langchain_floor')}",
            )
        )
    return out


def _cpu(figure: dict[str, Any]) -> list[dict[str, Any]]:
    c = max((level for level in figure["levels"] if level <= CPU_LEVEL), default=None)
    if c is None:
        return []
    out = []
    for row in _moa([r for r in figure["rows"] if r["concurrency"] == c]):
        share = row.get("cpu_vs_chatopenai", math.nan)
        out.append(
            _row(
                f"client CPU per turn at C={c} vs default-transport ChatOpenAI",
                row["contender"],
                _judge(share <= _CPU_SHARE),
                _pct(share),
                f"<= {_pct(_CPU_SHARE)}",
                f"{row['cpu_ms_per_turn']:.1f} ms/turn",
            )
        )
    return out


def _raw_ratio(figure: dict[str, Any]) -> list[dict[str, Any]]:
    c = _top_level(figure)
    out = []
    for row in _moa([r for r in figure["rows"] if r["concurrency"] == c]):
        out.append(
            _row(
                f"ratio to the raw aiohttp floor at C={c}",
                row["contender"],
                "reported",
                f"throughput {_pct(row.get('throughput_vs_raw', math.nan))}, "
                f"CPU x{row.get('cpu_vs_raw', math.nan):.1f}",
                "(reported)",
            )
        )
    return out


def _deadline(figure: dict[str, Any]) -> list[dict[str, Any]]:
    bound = (figure["deadline_s"] + figure["aggregator_s"]) * (1 + _DEADLINE_SLACK)
    limit = (
        f"p99 <= {_ms(bound)} (deadline + aggregator + {_pct(_DEADLINE_SLACK)}), "
        f">= {_pct(_HEALTHY_SHARE)} of healthy references answer"
    )
    target = f"p99 with a {_ms(figure['deadline_s'])} references deadline, C={{c}}"
    out = [
        _row(
            target, item["contender"], "pending", "-", limit, "Preset has no references_deadline_s"
        )
        for item in figure["pending"]
    ]
    for row in _moa(figure["rows"]):
        if row["deadline_s"] is None:
            continue
        healthy = row["healthy_answered_share"]
        out.append(
            _row(
                target.format(c=row["concurrency"]),
                row["contender"],
                _judge(row["p99_s"] <= bound and healthy >= _HEALTHY_SHARE and not row["errors"]),
                f"p99 {_ms(row['p99_s'])}, {_pct(healthy)} of healthy references answered",
                limit,
                f"{row['answered_per_turn']:.1f} of {figure['n_refs']} answered per turn; "
                f"{row['errors']} errors",
            )
        )
    return out


def _tails(figure: dict[str, Any]) -> list[dict[str, Any]]:
    if figure.get("pending"):
        return [
            _row("heavy tails: quorum vs wait-all", "graph", "pending", "-", "-", figure["pending"])
        ]
    out = []
    for row in figure["rows"]:
        wait_all = next(
            r
            for r in figure["rows"]
            if r["contender"] == row["contender"] and r["policy"] == "wait for all"
        )
        kept = f"{row['answered_per_turn']:.1f} of {figure['n_refs']} answers kept per turn"
        if row["quorum"] is None:
            if row["deadline_s"] is not None:
                out.append(
                    _row(
                        f"heavy tails: p50 with a {_ms(row['deadline_s'])} deadline vs wait-all",
                        row["contender"],
                        "reported",
                        f"x{row['p50_vs_wait_all']:.2f}",
                        "(reported)",
                        f"p50 {_ms(row['p50_s'])} vs {_ms(wait_all['p50_s'])}; {kept}",
                    )
                )
            continue
        name = f"quorum {row['quorum']}, grace {_ms(row['quorum_grace_s'])}"
        clean = not row["errors"]
        out.append(
            _row(
                f"heavy tails: p50 with {name} vs wait-all",
                row["contender"],
                _judge(row["p50_vs_wait_all"] <= _QUORUM_P50_SHARE and clean),
                f"x{row['p50_vs_wait_all']:.2f}",
                f"<= x{_QUORUM_P50_SHARE:.2f}",
                f"p50 {_ms(row['p50_s'])} vs {_ms(wait_all['p50_s'])}; {kept}",
            )
        )
        out.append(
            _row(
                f"heavy tails: p99 with {name} vs K-th answer + grace + aggregator",
                row["contender"],
                _judge(row["wall_over_bound_p99"] <= 1 + _QUORUM_SLACK and clean),
                f"x{row['wall_over_bound_p99']:.2f} (p99 over turns)",
                f"<= x{1 + _QUORUM_SLACK:.2f}",
                f"p99 {_ms(row['p99_s'])}; K-th answer p50 {_ms(row['kth_p50_s'])}, "
                f"p99 {_ms(row['kth_p99_s'])}; {row['errors']} errors",
            )
        )
    return out


def _cost(figure: dict[str, Any]) -> list[dict[str, Any]]:
    if figure.get("pending"):
        return [_row("cost per turn vs always consult", "graph", "pending", "-", "-")]
    out = []
    for row in figure["rows"][1:]:
        every = row["by_kind"]
        out.append(
            _row(
                f"cost per turn vs always consult: {row['policy']}",
                "graph",
                "reported",
                f"x{every['all']['cost_vs_always']:.2f}",
                "(reported)",
                f"trivial x{every['trivial']['cost_vs_always']:.2f}, "
                f"hard x{every['hard']['cost_vs_always']:.2f}; "
                f"{every['all']['calls_per_turn']:.1f} calls per turn",
            )
        )
    return out


def _prefix(figure: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in ("graph", "chat_model"):
        share = figure[name]["min_cached_share"]
        out.append(
            _row(
                "aggregator prompt-prefix stability over the tool loop (worst step)",
                name.replace("_", "-"),
                _judge(share >= _PREFIX_SHARE),
                f"{share:.3f}",
                f">= {_PREFIX_SHARE}",
            )
        )
    for key, fanout in (("graph_every_step", "every_step"), ("graph_every_n_2", "every_n:2")):
        if not figure.get(key):
            continue
        share = figure[key]["min_cached_share"]
        out.append(
            _row(
                f"aggregator prompt-prefix stability with fanout: {fanout} (worst step)",
                "graph",
                "reported",
                f"{share:.3f}",
                "(reported)",
            )
        )
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _pct(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) else f"{ratio * 100:.1f}%"
