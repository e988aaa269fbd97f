"""Figure 6: `import moa_graph` time and build+compile time, each in fresh interpreters.

Import time is timed inside a fresh `python` (so interpreter start-up is not in it) and,
for scale, as the whole process's wall time next to a bare `python -c pass`. Where it goes
comes from one `-X importtime` run (self time per package). Build+compile is
`build_moa_graph(...).compile()` of an 8-reference preset with one tool: the first in a
fresh process, then warm repeats.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

from benchmarks.measure import median

__all__ = ["startup_figure"]

_IMPORT = "import time; t = time.perf_counter(); import moa_graph; print(time.perf_counter() - t)"
_BUILD = """
import time
started = time.perf_counter()
import moa_graph
imported = time.perf_counter() - started
import json, sys
from moa_graph import build_moa_graph, load_config
from moa_graph.tools import calculator
refs = [{"provider": "vllm", "model": f"ref{i}"} for i in range(8)]
config = load_config({"moa": {"presets": {"bench": {
    "reference_models": refs, "aggregator": {"provider": "vllm", "model": "agg"}}}}})
def build():
    t = time.perf_counter()
    build_moa_graph("bench", tools=[calculator], config=config).compile()
    return time.perf_counter() - t
first = build()
warm = [build() for _ in range(int(sys.argv[1]))]
from moa_graph import ModelSpec
from moa_graph.providers import default_model_factory
factory = default_model_factory()
t = time.perf_counter()
import langchain_openai
lc_openai = time.perf_counter() - t
t = time.perf_counter()
factory(ModelSpec(provider="vllm", model="m0"))
first_model = time.perf_counter() - t
t = time.perf_counter()
for i in range(1, 9):
    factory(ModelSpec(provider="vllm", model=f"m{i}"))
more_models = time.perf_counter() - t
print(json.dumps({
    "import_s": imported, "first_s": first, "warm_s": warm, "langchain_openai_s": lc_openai,
    "first_model_s": first_model, "eight_more_models_s": more_models,
}))
"""
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")
_TOP_IMPORTS = 12


def startup_figure(
    *, import_repeats: int, build_repeats: int, detail: bool = True
) -> dict[str, Any]:
    """Medians over fresh processes of the import time, and build+compile times.

    `detail=False` (quick runs) skips the whole-process timings and the `-X importtime` run.
    """
    build = json.loads(_python("-c", _BUILD, str(build_repeats)))
    in_process = [build["import_s"]]
    in_process += [float(_python("-c", _IMPORT)) for _ in range(import_repeats - 1)]
    figure: dict[str, Any] = {
        "import_repeats": import_repeats,
        "import_s": median(in_process),
        "import_s_samples": in_process,
        "process_wall_s": None,
        "bare_python_wall_s": None,
        "heaviest_imports": {"packages": [], "moa_graph_modules": []},
        "build_compile": {
            "refs": 8,
            "tools": 1,
            "first_s": build["first_s"],
            "warm_median_s": median(build["warm_s"]),
            "warm_repeats": build_repeats,
        },
        # Models are built lazily, on a graph's first turn: 8 references + the aggregator.
        "first_turn_models": {
            "import_langchain_openai_s": build["langchain_openai_s"],
            "first_chatopenai_s": build["first_model_s"],
            "eight_more_chatopenai_s": build["eight_more_models_s"],
        },
    }
    if detail:
        figure["process_wall_s"] = median(
            [_wall("-c", "import moa_graph") for _ in range(import_repeats)]
        )
        figure["bare_python_wall_s"] = median([_wall("-c", "pass") for _ in range(import_repeats)])
        figure["heaviest_imports"] = _heaviest_imports()
    return figure


def _python(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip().splitlines()[-1]


def _wall(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, check=True, timeout=120)
    return time.perf_counter() - started


def _heaviest_imports() -> dict[str, list[dict[str, Any]]]:
    """Self import time summed per top-level package, and per moa_graph module, in one run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import moa_graph"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    packages: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match is None:
            continue
        module, self_us = match.group(2), int(match.group(1))
        package = module.split(".")[0]
        packages[package] = packages.get(package, 0) + self_us
        if package == "moa_graph":
            own[module] = self_us
    return {"packages": _top(packages), "moa_graph_modules": _top(own)}


def _top(times: dict[str, int]) -> list[dict[str, Any]]:
    ranked = sorted(times.items(), key=lambda item: -item[1])[:_TOP_IMPORTS]
    return [{"name": name, "self_ms": us / 1000} for name, us in ranked]
