"""The chat models of one preset, built once on first use and reused for every call.

Building lazily means a graph can be built, drawn or served without API keys; reusing the
instances keeps each model's HTTP connection pool warm across turns.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_NOSTREAM

from moa_graph.config import ModelSpec, Preset
from moa_graph.providers import ModelFactory

__all__ = ["AGGREGATOR_TAG", "REFERENCE_TAG", "PresetModels"]

REFERENCE_TAG = "moa:reference"
"""Tag on every reference model call (they are also tagged `nostream`)."""
AGGREGATOR_TAG = "moa:aggregator"
"""Tag on every aggregator call."""


class PresetModels:
    """Lazily built, cached chat models for a preset's references and aggregator."""

    def __init__(
        self,
        preset: Preset,
        *,
        reference_factory: ModelFactory,
        aggregator_factory: ModelFactory,
    ) -> None:
        self.preset = preset
        self._reference_factory = reference_factory
        self._aggregator_factory = aggregator_factory
        self._references: dict[int, BaseChatModel] = {}
        self._aggregator: BaseChatModel | None = None
        self._lock = threading.Lock()

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


def reference_config(index: int, spec: ModelSpec) -> RunnableConfig:
    """Run config of a reference call: LangSmith name, tags and `moa_*` metadata."""
    return {
        "run_name": f"moa_reference:{spec.label}",
        "tags": [REFERENCE_TAG, TAG_NOSTREAM],
        "metadata": {"moa_index": index, "moa_label": spec.label, "moa_role": "reference"},
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
