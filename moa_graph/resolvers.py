"""Where a MoA graph's preset comes from: fixed when the graph is built, or chosen per run.

The nodes ask their resolver for the current run's `PresetModels` (the preset's models and
the aggregator's tools). `FixedPreset` (`build_moa_graph`) always answers the same.
`ContextPreset` (`build_studio_graph`) looks the preset the run's `MoAContext` names up in
the server's config: the one its builder gave, else the file discovery finds
(`$MOA_GRAPH_CONFIG` first). A run chooses a preset by name and nothing else: the config
file, and with it every tool import path, base URL and key variable, is the server
owner's. The file is read again when it changes, so presets switch and edits apply
without a restart; the models are built once per preset and file version.
"""

from __future__ import annotations

import asyncio
import os
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

from moa_graph.config import MoAConfig, Preset, config_file, load_config
from moa_graph.context import MoAContext
from moa_graph.models import PresetModels
from moa_graph.providers import ModelFactory
from moa_graph.tools import calculator

__all__ = [
    "ConfigSource",
    "ContextPreset",
    "FixedPreset",
    "PresetResolver",
    "configured_tools",
    "resolve_preset",
]

_ToolResult = ToolMessage | Command[Any]

ConfigSource = MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None
"""A `MoAConfig`, or anything `load_config` takes."""


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
    """The preset the run's `MoAContext` names, among the presets of the server's config."""

    def __init__(
        self,
        *,
        config: MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        model_factory: ModelFactory | None = None,
    ) -> None:
        self._model_factory = model_factory
        # A path (or discovery, for None) is the server's own file: read again when it
        # changes. A MoAConfig or a mapping is fixed.
        self._path = None if config is None else _as_path(config)
        self._fixed: _Loaded | None = None
        if self._path is None and config is not None:
            loaded = config if isinstance(config, MoAConfig) else load_config(config)
            self._fixed = _Loaded(None, loaded)
        self._file: _Loaded | None = None
        self._lock = threading.Lock()

    def models(self) -> PresetModels:
        """The models of the preset the current run's context names.

        Raises:
            ConfigError: The server's config is missing or invalid, or has no such preset
                (the message lists the available ones), or the context has an unknown key.
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
        routed = _route(request, self._load(MoAContext.coerce(request.runtime.context)))
        return routed if isinstance(routed, ToolMessage) else execute(routed)

    async def _acall(
        self,
        request: ToolCallRequest,
        execute: Callable[[ToolCallRequest], Awaitable[_ToolResult]],
    ) -> _ToolResult:
        context = MoAContext.coerce(request.runtime.context)
        routed = _route(request, await asyncio.to_thread(self._load, context))
        return routed if isinstance(routed, ToolMessage) else await execute(routed)

    def _load(self, context: MoAContext) -> PresetModels:
        loaded = self._config()
        preset = loaded.config.preset(context.preset or None)  # unknown: lists the presets
        with self._lock:
            models = loaded.models.get(preset.name)
        if models is None:
            models = PresetModels.for_preset(
                preset,
                providers=loaded.config.providers,
                model_factory=self._model_factory,
                tools=configured_tools(loaded.config, preset.name),
            )
            with self._lock:
                loaded.models[preset.name] = models
        return models

    def _config(self) -> _Loaded:
        """The server's config: the fixed one, else its file, loaded again once it changed."""
        if self._fixed is not None:
            return self._fixed
        path = (self._path or config_file()).absolute()
        stamp = (path, _modified(path))
        with self._lock:
            if self._file is not None and self._file.stamp == stamp:
                return self._file
        loaded = _Loaded(stamp, load_config(path))
        with self._lock:
            self._file = loaded
        return loaded


class _Loaded:
    """A config as loaded, with the models built so far for its presets (by name)."""

    def __init__(self, stamp: tuple[Path, int | None] | None, config: MoAConfig) -> None:
        self.stamp = stamp
        self.config = config
        self.models: dict[str, PresetModels] = {}


def _as_path(config: object) -> Path | None:
    return Path(config) if isinstance(config, str | os.PathLike) else None


def _run_context() -> MoAContext:
    return MoAContext.coerce(get_runtime(MoAContext).context)


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
