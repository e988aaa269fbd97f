"""One benchmark run: every figure in order, then the JSON, the report and the plots.

Layout under the output folder `OUT` (`docs/` for the full run):
`OUT/benchmarks.md`, `OUT/benchmarks/results.json`, `OUT/benchmarks/*.png`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.cost import cost_figure
from benchmarks.plan import Plan
from benchmarks.plots import write_plots
from benchmarks.report import write_report
from benchmarks.stand_in import StandIn
from benchmarks.startup import startup_figure
from benchmarks.tails import tails_figure
from benchmarks.targets import evaluate
from benchmarks.timing import concurrency_figure, fanout_figure, straggler_figure
from benchmarks.transcript import prefix_and_tokens
from benchmarks.worker import Backend, InlineBackend, ProcessBackend
from benchmarks.workload import preset_supports

__all__ = ["FIGURES", "render", "run", "shipped_transport"]

FIGURES = ("fanout", "concurrency", "stragglers", "tails", "cost", "transcript", "startup")
"""What `--only` can name; `transcript` gives figures 4 (tokens) and 5 (prefix)."""
_PRESET_KEYS = (
    "references_deadline_s",
    "fanout",
    "quorum",
    "quorum_grace_s",
    "gate",
    "max_reference_cost_usd",
)
_PACKAGES = ("langgraph", "langchain-core", "langchain-openai", "openai", "httpx2", "aiohttp")
Log = Callable[[str], None]


def run(
    plan: Plan, out: Path, *, only: Iterable[str] = FIGURES, log: Log = print
) -> dict[str, Any]:
    """Run the figures in `only`, write everything under `out`, return the results."""
    wanted = set(only)
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": _meta(plan)}
    with StandIn() as stand_in:
        log(f"stand-in server (pid {stand_in.pid}) on {stand_in.url}")
        timed: list[tuple[str, list[str], Callable[[Backend], dict[str, Any]]]] = [
            ("fanout", plan.fanout_contenders, lambda b: fanout_figure(b, stand_in, plan, log)),
            (
                "concurrency",
                plan.concurrency_contenders,
                lambda b: concurrency_figure(
                    b, stand_in, plan, log, shipped=results["meta"]["shipped_transport"]
                ),
            ),
            (
                "stragglers",
                plan.straggler_contenders,
                lambda b: straggler_figure(b, stand_in, plan, log),
            ),
            ("tails", plan.tail_contenders, lambda b: tails_figure(b, stand_in, plan, log)),
        ]
        # In one process every contender lives on one event loop for the whole run: clients
        # are bound to the loop they were first used on (see docs/benchmarks.md, findings).
        shared = None if plan.isolate else InlineBackend(stand_in.url, _all_names(plan))
        try:
            for key, names, figure in timed:
                if key not in wanted:
                    continue
                backend = shared or _processes(stand_in.url, names, log)
                try:
                    results[key] = figure(backend)
                finally:
                    if backend is not shared:
                        backend.close()
        finally:
            if shared is not None:
                shared.close()
        if "cost" in wanted:
            log("cost and calls per turn: the gate and the reference budget")
            results["cost"] = cost_figure(stand_in, plan, log)
        if "transcript" in wanted:
            log("tokens and prompt-prefix stability on the agent transcript")
            results.update(
                asyncio.run(
                    prefix_and_tokens(stand_in, n_refs=plan.transcript_refs, steps=plan.tool_steps)
                )
            )
    if "startup" in wanted:
        log("import and build+compile times")
        results["startup"] = startup_figure(
            import_repeats=plan.import_repeats,
            build_repeats=plan.build_repeats,
            detail=plan.startup_detail,
        )
    results["targets"] = evaluate(results)
    results["meta"]["duration_s"] = time.perf_counter() - started
    render(results, out)
    return results


def render(results: dict[str, Any], out: Path) -> Path:
    """Write results.json, the plots and the Markdown report under `out`; return the report."""
    assets = out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "results.json").write_text(
        json.dumps(_finite(results), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    plots = write_plots(results, assets)
    report = out / "benchmarks.md"
    write_report(results, report, plots=plots)
    return report


def shipped_transport() -> str:
    """The HTTP transport of the `ChatOpenAI` moa_graph builds when given no `model_factory`."""
    from moa_graph import ModelSpec
    from moa_graph.providers import default_model_factory

    async def build() -> Any:  # models get their async client under an event loop
        return default_model_factory()(ModelSpec(provider="vllm", model="probe"))

    model = asyncio.run(build())
    client = getattr(getattr(model, "root_async_client", None), "_client", None)
    transport = getattr(client, "_transport", None)
    names = []
    while transport is not None and len(names) < 5:  # wrappers (moa_graph.bounds) first
        names.append(type(transport).__name__)
        transport = getattr(transport, "transport", None)
    if any("aiohttp" in name.lower() for name in names):
        return "aiohttp" + (f" (inside {names[0]})" if len(names) > 1 else "")
    return "httpx (langchain-openai default)" if client is not None else "unknown"


def _processes(url: str, names: list[str], log: Log) -> Backend:
    log(f"starting {len(names)} worker processes")
    return ProcessBackend(url, names)


def _all_names(plan: Plan) -> list[str]:
    names = [
        *plan.fanout_contenders,
        *plan.concurrency_contenders,
        *plan.straggler_contenders,
        *plan.tail_contenders,
    ]
    return list(dict.fromkeys(names))


def _meta(plan: Plan) -> dict[str, Any]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "plan": plan.name,
        "plan_sizes": asdict(plan),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "executable": sys.executable,
        "versions": versions,
        "isolated": plan.isolate,
        "shipped_transport": shipped_transport(),
        "preset_keys": {key: preset_supports(key) for key in _PRESET_KEYS},
    }


def _finite(value: Any) -> Any:
    """NaN and infinities become None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
