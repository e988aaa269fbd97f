"""`build_moa_graph`: a MoA preset as a LangGraph `StateGraph` (and `build_studio_graph`).

    START -> fan_out -> reference (one Send per slot, in parallel) -> join -> aggregator
    join -> reference (the next layer, for presets with `layers` > 1)
    join -> judge -> aggregator (for presets with a `judge`)
    aggregator -> tools -> aggregator (until the aggregator answers) -> END
    tools -> fan_out (instead, for `fanout: every_step | every_n:N`)

By default references run once per user turn and the tool loop returns to `aggregator`.
Both builders make this same graph; they differ in where the preset comes from: fixed when
the graph is built, or named by each run's `MoAContext` (what Studio shows and edits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import tools_condition
from typing_extensions import TypedDict

from moa_graph.config import Preset
from moa_graph.context import MoAContext
from moa_graph.gate import Gate
from moa_graph.models import PresetModels
from moa_graph.nodes import AGGREGATOR, FAN_OUT, JOIN, JUDGE, REFERENCE, TOOLS, MoANodes
from moa_graph.providers import ModelFactory
from moa_graph.resolvers import (
    ConfigSource,
    ContextPreset,
    FixedPreset,
    PresetResolver,
    resolve_preset,
)
from moa_graph.state import MoAOutput, MoAState

try:  # what LangGraph's own ToolNode is built on (a private module: guarded)
    from langgraph._internal._runnable import RunnableCallable
except ImportError:  # pragma: no cover - a LangGraph without it: the public, slower wrapper
    RunnableCallable = None  # type: ignore[assignment,misc]

__all__ = ["StudioInput", "build_moa_graph", "build_studio_graph"]


class StudioInput(TypedDict):
    """What a run of the Studio graph takes: the conversation, ending on a user turn."""

    # typing_extensions' TypedDict: on Python 3.11 pydantic cannot make a JSON schema from
    # typing's, and Studio draws its input form from this schema.
    messages: Annotated[list[AnyMessage], add_messages]


def build_moa_graph(
    preset: Preset | str,
    *,
    tools: Sequence[BaseTool] = (),
    config: ConfigSource = None,
    model_factory: ModelFactory | None = None,
    name: str = "moa",
    gate: Gate | None = None,
) -> StateGraph[MoAState]:
    """Build the (uncompiled) MoA graph for a preset; compile it with your checkpointer.

    Args:
        preset: A `Preset`, or the name of one in `config`.
        tools: Tools bound to the aggregator and run by the `tools` node. References never
            get tools. (A config's `tools:` key is for Studio and the CLI; pass
            `config.preset_tools(name)` to use it here.)
        config: Where a preset name is looked up and extra providers come from: a
            `MoAConfig` or anything `load_config` takes (None: discovery, only when needed).
        model_factory: Builds a chat model from a `ModelSpec`, replacing the built-in
            provider table (tests, or users with their own model objects).
        name: The agent's name: set as the `name` of the aggregator's messages, so a parent
            graph can tell which agent answered, and of the compiled graph (unless
            `compile(name=...)` says otherwise), as a supervisor expects.
        gate: Decides per user turn whether the references run: `gate(messages) -> bool`,
            True to consult (`moa_graph.gate`; a run's `moa_references` choice comes first).

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
    models = PresetModels.for_preset(
        resolved, providers=providers, model_factory=model_factory, tools=tools
    )
    return _moa_graph(FixedPreset(models), name=name, gate=gate)


def build_studio_graph(
    *,
    config: ConfigSource = None,
    model_factory: ModelFactory | None = None,
    name: str = "moa",
) -> StateGraph[MoAState, MoAContext]:
    """Build the (uncompiled) MoA graph whose preset each run chooses through `MoAContext`.

    This is the graph `langgraph dev` serves (`moa_graph.studio:graph`). A run names a
    preset of the server's config (`MoAContext(preset=...)`, empty: its default preset) and
    nothing else: the config, with its tools (`tools:`, else `calculator`), providers and
    key variables, is the one given here, trusted like the code that builds the graph.
    A config file is read again when it changes; an unknown preset name is a `ConfigError`
    listing the available ones.

    Args:
        config: The server's config: a file path (or None: discovery at each run,
            `$MOA_GRAPH_CONFIG` first), both re-read when the file changes, or a
            `MoAConfig` or mapping, fixed.
        model_factory: Builds a chat model from a `ModelSpec`, replacing the built-in
            provider table.
        name: Set as the `name` of the aggregator's messages.

    Returns:
        The `StateGraph` builder with the same nodes as `build_moa_graph`,
        `context_schema=MoAContext` and an input of `messages` only.

    Raises:
        ConfigError: `config` is a mapping that breaks a rule (a file is read at each run).

    Example:
        >>> graph = build_studio_graph(config="moa.yaml").compile()  # doctest: +SKIP
        >>> graph.invoke({"messages": [("user", "What is 17 * 23?")]},  # doctest: +SKIP
        ...              context=MoAContext(preset="review"))
    """
    return _moa_graph(
        ContextPreset(config=config, model_factory=model_factory),
        name=name,
        context_schema=MoAContext,
        input_schema=StudioInput,
    )


def _moa_graph(
    resolver: PresetResolver,
    *,
    name: str,
    context_schema: type[Any] | None = None,
    input_schema: type[Any] | None = None,
    gate: Gate | None = None,
) -> StateGraph[Any, Any]:
    nodes = MoANodes(resolver, name=name, gate=gate)
    builder = _AgentGraph(
        name,
        MoAState,
        context_schema=context_schema,
        input_schema=input_schema,
        output_schema=MoAOutput,
    )
    builder.add_node(
        FAN_OUT, _node(nodes.fan_out, nodes.afan_out), destinations=(REFERENCE, AGGREGATOR)
    )
    builder.add_node(REFERENCE, _node(nodes.reference, nodes.areference))
    builder.add_node(JOIN, _node(nodes.join, nodes.ajoin))
    builder.add_node(JUDGE, _node(nodes.judge, nodes.ajudge))
    builder.add_node(AGGREGATOR, _node(nodes.aggregator, nodes.aaggregator))
    builder.add_node(TOOLS, resolver.tool_node())
    builder.add_edge(START, FAN_OUT)
    builder.add_edge(REFERENCE, JOIN)
    builder.add_conditional_edges(
        JOIN,
        _node(nodes.after_join, nodes.aafter_join, router=True),
        [REFERENCE, JUDGE, AGGREGATOR],
    )
    builder.add_edge(JUDGE, AGGREGATOR)
    builder.add_conditional_edges(AGGREGATOR, tools_condition, {TOOLS: TOOLS, END: END})
    builder.add_conditional_edges(
        TOOLS,
        _node(nodes.after_tools, nodes.aafter_tools, router=True),
        {FAN_OUT: FAN_OUT, AGGREGATOR: AGGREGATOR},
    )
    return builder


class _AgentGraph(StateGraph[Any, Any, Any, Any]):
    """A `StateGraph` whose compiled graph is named after its agent unless `compile` names it.

    A supervisor (`langgraph_supervisor.create_supervisor`) tells its agents apart by the
    compiled graph's `name`, which `StateGraph` otherwise leaves as `"LangGraph"`.
    """

    def __init__(self, agent: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agent = agent

    def compile(
        self, *args: Any, name: str | None = None, **kwargs: Any
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        """Compile as `StateGraph.compile` does; `name` defaults to the agent's."""
        return super().compile(*args, name=name or self.agent, **kwargs)


def _node(
    func: Callable[..., Any], afunc: Callable[..., Awaitable[Any]], *, router: bool = False
) -> Runnable[Any, Any]:
    """A node (or router) with a sync and an async body, called directly.

    LangGraph already traces each node as a run of its own; `RunnableLambda` would open a
    second, nested run and inspect the functions' signatures on every call (~0.45 ms per
    call, measured in benchmarks/findings.md, fix 4). `RunnableCallable` is what LangGraph's
    own `ToolNode` is built on. A router is traced: LangGraph runs it outside the node's
    run context, and its run is what gives it one (the resolver reads the run's context).
    """
    if RunnableCallable is None:  # pragma: no cover
        return RunnableLambda(func, afunc=afunc)
    return RunnableCallable(func, afunc, trace=router, recurse=False)
