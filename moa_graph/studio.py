"""The graph LangGraph Studio opens: `langgraph.json` names this module's `graph` as `moa`.

Run `moa-graph dev` (or `langgraph dev`) in the repository. Each run picks its preset and
config file in the assistant's configuration panel (`MoAContext`); the server brings its own
checkpointer, so the graph is compiled without one.
"""

from __future__ import annotations

from moa_graph.graph import build_studio_graph
from moa_graph.providers import warm_up

__all__ = ["graph"]

warm_up()  # while the server starts, not in the first run
graph = build_studio_graph().compile(name="moa")
"""The compiled MoA graph with `context_schema=MoAContext`, served as `moa`."""
