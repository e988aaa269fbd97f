"""The chat models of one preset and the aggregator's tools, built once and reused.

Building lazily means a graph can be built, drawn or served without API keys; reusing the
instances keeps each model's HTTP connection pool warm across turns.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.constants import TAG_NOSTREAM

from moa_graph.config import ModelSpec, Preset, ProviderSpec
from moa_graph.providers import ModelFactory, default_model_factory

__all__ = ["AGGREGATOR_TAG", "REFERENCE_TAG", "PresetModels"]

REFERENCE_TAG = "moa:reference"
"""Tag on every reference model call (they are also tagged `nostream`)."""
AGGREGATOR_TAG = "moa:aggregator"
"""Tag on every aggregator call."""


class PresetModels:
    """Lazily built, cached chat models for a preset's references and aggregator.

    `tools` are what the aggregator acts with: `acting()` is the aggregator bound to them.
    """

    def __init__(
        self,
        preset: Preset,
        *,
        reference_factory: ModelFactory,
        aggregator_factory: ModelFactory,
        tools: Sequence[BaseTool] = (),
    ) -> None:
        self.preset = preset
        self.tools = list(tools)
        self._reference_factory = reference_factory
        self._aggregator_factory = aggregator_factory
        self._references: dict[int, BaseChatModel] = {}
        self._aggregator: BaseChatModel | None = None
        self._acting: Runnable[LanguageModelInput, BaseMessage] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_preset(
        cls,
        preset: Preset,
        *,
        providers: Mapping[str, ProviderSpec] | None = None,
        model_factory: ModelFactory | None = None,
        tools: Sequence[BaseTool] = (),
    ) -> PresetModels:
        """Models from `model_factory`, else from the provider table plus `providers`."""
        return cls(
            preset,
            reference_factory=model_factory or default_model_factory(providers, reference=True),
            aggregator_factory=model_factory or default_model_factory(providers, reference=False),
            tools=tools,
        )

    def reference(self, index: int) -> BaseChatModel:
        """The model of reference slot `index` (0-based)."""
        with self._lock:
            if index not in self._references:
                spec = self.preset.reference_models[index]
                self._references[index] = self._reference_factory(spec)
            return self._references[index]

    def aggregator(self) -> BaseChatModel:
        """The aggregator model, without tools bound."""
        with self._lock:
            if self._aggregator is None:
                self._aggregator = self._aggregator_factory(self.preset.aggregator)
            return self._aggregator

    def acting(self) -> Runnable[LanguageModelInput, BaseMessage]:
        """The aggregator bound to `tools` (the bare aggregator when there are none)."""
        if self._acting is None:
            model = self.aggregator()
            self._acting = model.bind_tools(self.tools) if self.tools else model
        return self._acting

    def tool(self, name: str) -> BaseTool | None:
        """The tool called `name`, if the aggregator has it."""
        return next((tool for tool in self.tools if tool.name == name), None)


def reference_config(
    index: int, spec: ModelSpec, *, label: str | None = None, layer: int = 1
) -> RunnableConfig:
    """Run config of a reference call: LangSmith name, tags and `moa_*` metadata."""
    label = label or spec.label
    return {
        "run_name": f"moa_reference:{label}",
        "tags": [REFERENCE_TAG, TAG_NOSTREAM],
        "metadata": {
            "moa_index": index,
            "moa_label": label,
            "moa_layer": layer,
            "moa_role": "reference",
        },
    }


def aggregator_config(spec: ModelSpec, *, stream: bool = True, **extra: Any) -> RunnableConfig:
    """Run config of an aggregator call; `stream=False` keeps its tokens out of UIs."""
    config: RunnableConfig = {
        "run_name": f"moa_aggregator:{spec.label}",
        "tags": [AGGREGATOR_TAG] if stream else [AGGREGATOR_TAG, TAG_NOSTREAM],
        "metadata": {"moa_label": spec.label, "moa_role": "aggregator"},
    }
    config.update(extra)  # type: ignore[typeddict-item]
    return config
