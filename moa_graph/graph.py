"""`build_moa_graph`: a MoA preset as a LangGraph `StateGraph`.

    START -> fan_out -> reference (one Send per reference, in parallel) -> join -> aggregator
    aggregator -> tools -> aggregator (until the aggregator answers) -> END

References run once per user turn; the tool loop returns to `aggregator`, not `fan_out`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from moa_graph.config import MoAConfig, Preset, load_config
from moa_graph.models import PresetModels
from moa_graph.nodes import MoANodes
from moa_graph.providers import ModelFactory, default_model_factory
from moa_graph.state import MoAState

__all__ = ["ConfigSource", "build_moa_graph", "resolve_preset"]

ConfigSource = MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None
"""A `MoAConfig`, or anything `load_config` takes."""


def build_moa_graph(
    preset: Preset | str,
    *,
    tools: Sequence[BaseTool] = (),
    config: ConfigSource = None,
    model_factory: ModelFactory | None = None,
    name: str = "moa",
) -> StateGraph[MoAState]:
    """Build the (uncompiled) MoA graph for a preset; compile it with your checkpointer.

    Args:
        preset: A `Preset`, or the name of one in `config`.
        tools: Tools bound to the aggregator and run by the `tools` node. References never
            get tools.
        config: Where a preset name is looked up and extra providers come from: a
            `MoAConfig` or anything `load_config` takes (None: discovery, only when needed).
        model_factory: Builds a chat model from a `ModelSpec`, replacing the built-in
            provider table (tests, or users with their own model objects).
        name: Set as the `name` of the aggregator's messages, so a parent graph can tell
            which agent answered.

    Returns:
        The `StateGraph` builder with nodes `fan_out`, `reference`, `join`, `aggregator`
        and `tools`.

    Example:
        >>> from langgraph.checkpoint.memory import InMemorySaver
        >>> graph = build_moa_graph("review", tools=[calculator]).compile(  # doctest: +SKIP
        ...     checkpointer=InMemorySaver()
        ... )
        >>> graph.invoke({"messages": [("user", "What is 17 * 23?")]},  # doctest: +SKIP
        ...              {"configurable": {"thread_id": "1"}})
    """
    resolved, loaded = resolve_preset(preset, config)
    providers = loaded.providers if loaded else None
    models = PresetModels(
        resolved,
        reference_factory=model_factory or default_model_factory(providers, reference=True),
        aggregator_factory=model_factory or default_model_factory(providers, reference=False),
    )
    nodes = MoANodes(models, tools=tools, name=name)

    builder = StateGraph(MoAState)
    builder.add_node("fan_out", nodes.fan_out, destinations=("reference", "aggregator"))
    builder.add_node("reference", RunnableLambda(nodes.reference, afunc=nodes.areference))
    builder.add_node("join", nodes.join)
    builder.add_node("aggregator", RunnableLambda(nodes.aggregator, afunc=nodes.aaggregator))
    builder.add_node("tools", ToolNode(list(tools), handle_tool_errors=True))
    builder.add_edge(START, "fan_out")
    builder.add_edge("reference", "join")
    builder.add_edge("join", "aggregator")
    builder.add_conditional_edges("aggregator", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "aggregator")
    return builder


def resolve_preset(
    preset: Preset | str, config: ConfigSource = None
) -> tuple[Preset, MoAConfig | None]:
    """Return the `Preset` to run and the config it came from.

    The config is None for a `Preset` object given without one.

    Raises:
        ConfigError: The config cannot be loaded or has no such preset.
    """
    if isinstance(preset, Preset) and config is None:
        return preset, None
    loaded = config if isinstance(config, MoAConfig) else load_config(config)
    return (preset if isinstance(preset, Preset) else loaded.preset(preset)), loaded
