"""The graph LangGraph Studio opens: `langgraph.json` names this module's `graph` as `moa`.

Run `moa-graph dev` (or `langgraph dev`) in the repository. The server's config is the file
chosen when it starts (`$MOA_GRAPH_CONFIG`, which `moa-graph dev --config` sets, else
discovery); each run picks one of its presets by name in the assistant's configuration
panel (`MoAContext`). The server brings its own checkpointer, so the graph is compiled
without one.

`graph` is a graph factory: the server calls it with each run's raw context before it
drops the keys the context schema lacks, so a client still setting the retired
`config_path` gets an error naming it instead of a run on a config it did not choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph_sdk.runtime import ServerRuntime

from moa_graph.config import config_file
from moa_graph.context import MoAContext
from moa_graph.errors import ConfigError
from moa_graph.graph import build_studio_graph
from moa_graph.providers import warm_up
from moa_graph.state import MoAState

__all__ = ["graph", "moa"]


def _server_config() -> Path | None:
    """The config file found now, as the server starts (None: discovery at each run)."""
    try:
        return config_file().absolute()
    except ConfigError:
        return None  # each run says what to set; `moa-graph dev` refuses to start instead


warm_up()  # while the server starts, not in the first run
moa = build_studio_graph(config=_server_config()).compile(name="moa")
"""The compiled MoA graph with `context_schema=MoAContext`, which `graph` serves."""


def graph(
    runtime: ServerRuntime[Any],
) -> CompiledStateGraph[MoAState, MoAContext, MoAState, MoAState]:
    """The MoA graph for one call of the server; a run whose context sets a retired key fails.

    Raises:
        ConfigError: The run's context sets `config_path` (naming it).
    """
    execution = runtime.execution_runtime
    if execution is not None and isinstance(execution.context, dict):
        MoAContext.coerce(execution.context)
    return moa
