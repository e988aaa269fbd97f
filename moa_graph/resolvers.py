"""Where a MoA graph's preset comes from: fixed when the graph is built, or chosen per run.

The nodes ask their resolver for the current run's `PresetModels` (the preset's models and
the aggregator's tools). `FixedPreset` (`build_moa_graph`) always answers the same.
`ContextPreset` (`build_studio_graph`) reads the run's `MoAContext` and loads that preset from
that config file, cached per (config file, preset) until the file changes, so a Studio
user switches presets without restarting the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import INVALID_TOOL_NAME_ERROR_TEMPLATE, ToolCallRequest
from langgraph.runtime import get_runtime
from langgraph.types import Command

from moa_graph.config import MoAConfig, config_file, load_config
from moa_graph.context import MoAContext
from moa_graph.models import PresetModels
from moa_graph.providers import ModelFactory
from moa_graph.tools import calculator

__all__ = ["ContextPreset", "FixedPreset", "PresetResolver", "configured_tools"]

_ToolResult = ToolMessage | Command[Any]


class PresetResolver(Protocol):
    """Gives the MoA nodes the models of the preset the current run uses."""

    def models(self) -> PresetModels:
        """The current run's models; called from sync nodes."""
        ...

    async def amodels(self) -> PresetModels:
        """The current run's models; called from async nodes."""
        ...

    def tool_node(self) -> ToolNode:
        """The graph's `tools` node, running the current run's tools."""
        ...


def configured_tools(config: MoAConfig, preset: str | None = None) -> list[BaseTool]:
    """The aggregator's tools in Studio and the CLI: the config's `tools:`, else `calculator`.

    Raises:
        ConfigError: No preset has that name.
    """
    tools = config.preset_tools(preset)
    # A config without `tools:` keeps the example tool, so a question like "What is 17 * 23?"
    # is a real tool round trip out of the box (and the CLI behaves as it always has).
    return [calculator] if tools is None else tools


class FixedPreset:
    """One preset, chosen when the graph is built."""

    def __init__(self, models: PresetModels) -> None:
        self._models = models

    def models(self) -> PresetModels:
        """The preset's models, whatever the run."""
        return self._models

    async def amodels(self) -> PresetModels:
        """The preset's models, whatever the run."""
        return self._models

    def tool_node(self) -> ToolNode:
        """A `ToolNode` over the preset's tools; tool errors go back to the model."""
        return ToolNode(self._models.tools, handle_tool_errors=True)


class ContextPreset:
    """The preset the run's `MoAContext` names, loaded from the config file it names."""

    def __init__(self, *, model_factory: ModelFactory | None = None) -> None:
        self._model_factory = model_factory
        self._cache: dict[tuple[str, str], tuple[int | None, PresetModels]] = {}
        self._lock = threading.Lock()

    def models(self) -> PresetModels:
        """The models of the preset the current run's context names.

        Raises:
            ConfigError: The config file is missing or invalid, or has no such preset.
        """
        return self._load(_run_context())

    async def amodels(self) -> PresetModels:
        """Like `models`, with the file reading off the event loop."""
        # Reading the YAML and importing its tools block; `langgraph dev` refuses blocking
        # calls on its event loop.
        return await asyncio.to_thread(self._load, _run_context())

    def tool_node(self) -> ToolNode:
        """A `ToolNode` that looks each call's tool up in the current run's preset."""
        return ToolNode(
            [], handle_tool_errors=True, wrap_tool_call=self._call, awrap_tool_call=self._acall
        )

    def _call(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], _ToolResult]
    ) -> _ToolResult:
        routed = _route(request, self._load(_as_context(request.runtime.context)))
        return routed if isinstance(routed, ToolMessage) else execute(routed)

    async def _acall(
        self,
        request: ToolCallRequest,
        execute: Callable[[ToolCallRequest], Awaitable[_ToolResult]],
    ) -> _ToolResult:
        context = _as_context(request.runtime.context)
        routed = _route(request, await asyncio.to_thread(self._load, context))
        return routed if isinstance(routed, ToolMessage) else await execute(routed)

    def _load(self, context: MoAContext) -> PresetModels:
        path = config_file(context.config_path or None).absolute()
        key, stamp = (str(path), context.preset), _modified(path)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        config = load_config(path)
        preset = config.preset(context.preset or None)
        models = PresetModels.for_preset(
            preset,
            providers=config.providers,
            model_factory=self._model_factory,
            tools=configured_tools(config, preset.name),
        )
        with self._lock:
            self._cache[key] = (stamp, models)
        return models


def _run_context() -> MoAContext:
    return _as_context(get_runtime(MoAContext).context)


def _as_context(context: object) -> MoAContext:
    if context is None:
        return MoAContext()
    if isinstance(context, MoAContext):
        return context
    # A parent graph without a context schema passes the run's context on as a plain dict.
    if isinstance(context, Mapping):
        return MoAContext(**context)
    raise TypeError(f"the MoA graph's context must be a MoAContext, not {type(context).__name__}")


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None  # load_config reports the missing file, naming it


def _route(request: ToolCallRequest, models: PresetModels) -> ToolCallRequest | ToolMessage:
    """The request with its tool filled in, or the error the model sees for an unknown tool."""
    name = request.tool_call["name"]
    tool = models.tool(name)
    if tool is not None:
        return request.override(tool=tool)
    available = ", ".join(tool.name for tool in models.tools)
    return ToolMessage(
        INVALID_TOOL_NAME_ERROR_TEMPLATE.format(requested_tool=name, available_tools=available),
        name=name,
        tool_call_id=request.tool_call["id"],
        status="error",
    )
