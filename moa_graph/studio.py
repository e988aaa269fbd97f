"""The graph LangGraph Studio opens: `langgraph.json` names this module's `graph` as `moa`.

Run `moa-graph dev` (or `langgraph dev`) in the repository. The server's config is the file
chosen when it starts (`$MOA_GRAPH_CONFIG`, which `moa-graph dev --config` sets, else
discovery); each run picks one of its presets by name in the assistant's configuration
panel (`MoAContext`). The server brings its own checkpointer, so the graph is compiled
without one.

`graph` is a graph factory: the server calls it with each run's raw context before it
drops the keys the context schema lacks, so a client still sending a retired key such as
`config_path` gets an error naming it instead of a run on a config it did not choose.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph_sdk.runtime import ServerRuntime

from moa_graph.context import MoAContext
from moa_graph.graph import build_studio_graph
from moa_graph.providers import warm_up
from moa_graph.state import MoAState

__all__ = ["graph", "moa"]

warm_up()  # while the server starts, not in the first run
moa = build_studio_graph().compile(name="moa")
"""The compiled MoA graph with `context_schema=MoAContext`, which `graph` serves."""


_LANGGRAPH_KEYS = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map"})
"""LangGraph's own keys: a run sent with `config.configurable` (the older form of `context`)
arrives with its context copied from there, and these may legitimately sit beside it."""


def graph(
    runtime: ServerRuntime[Any],
) -> CompiledStateGraph[MoAState, MoAContext, MoAState, MoAState]:
    """The MoA graph for one call of the server; a run whose context has unknown keys fails.

    Raises:
        ConfigError: The run's context has a key `MoAContext` lacks (naming it).
    """
    execution = runtime.execution_runtime
    if execution is not None and isinstance(execution.context, dict):
        MoAContext.coerce({k: v for k, v in execution.context.items() if k not in _LANGGRAPH_KEYS})
    return moa
