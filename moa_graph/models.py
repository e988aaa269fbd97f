"""The chat models of one preset and the aggregator's tools, built once and reused.

Building lazily means a graph can be built, drawn or served without API keys; reusing the
instances keeps each model's HTTP connection pool warm across turns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.constants import TAG_NOSTREAM

from moa_graph import direct
from moa_graph.config import ModelSpec, Preset, ProviderSpec
from moa_graph.providers import ModelFactory, ProviderTableFactory, default_model_factory
from moa_graph.transport import closings

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "AGGREGATOR_TAG",
    "GATE_TAG",
    "JUDGE_TAG",
    "REFERENCE_TAG",
    "PresetModels",
    "Slot",
    "gate_config",
    "judge_config",
    "reference_slots",
]

REFERENCE_TAG = "moa:reference"
"""Tag on every reference model call (they are also tagged `nostream`)."""
AGGREGATOR_TAG = "moa:aggregator"
"""Tag on every aggregator call."""
GATE_TAG = "moa:gate"
"""Tag on every gate call (also tagged `nostream`)."""
JUDGE_TAG = "moa:judge"
"""Tag on every judge call (also tagged `nostream`)."""


@dataclass(frozen=True)
class Slot:
    """One reference call of a fan-out (a reference with `samples: k` has k slots)."""

    index: int
    """Position among the preset's slots (`ReferenceAnswer.index`)."""
    model_index: int
    """Position of its model in `reference_models`."""
    spec: ModelSpec
    label: str


def reference_slots(preset: Preset) -> list[Slot]:
    """Every slot of the preset, disabled models included, in preset order."""
    slots: list[Slot] = []
    for model_index, spec in enumerate(preset.reference_models):
        for sample in range(1, spec.samples + 1):
            label = spec.label if spec.samples == 1 else f"{spec.label}#{sample}"
            slots.append(Slot(len(slots), model_index, spec, label))
    return slots


@dataclass
class _Built:
    closings: int = 0
    references: dict[int, BaseChatModel] = field(default_factory=dict)
    direct: dict[int, bool] = field(default_factory=dict)
    aggregator: BaseChatModel | None = None
    gate: BaseChatModel | None = None
    judge: Runnable[LanguageModelInput, Any] | None = None
    acting: Runnable[LanguageModelInput, BaseMessage] | None = None


class PresetModels:
    """Lazily built, cached chat models for a preset's references and aggregator.

    `tools` are what the aggregator acts with: `acting()` is the aggregator bound to them.
    Models used under an event loop are built once per loop: an async HTTP client's pooled
    connections belong to the loop that opened them, so a graph reused by a second
    `asyncio.run` (a notebook, a test) must not inherit the first loop's.
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
        self.direct_references = isinstance(reference_factory, ProviderTableFactory)
        """References come from the provider table: their `ChatOpenAI` models may be asked
        with one direct POST (`moa_graph.direct`)."""
        self.tools = list(tools)
        self.slots = reference_slots(preset)
        """The preset's slots, computed once."""
        self._reference_factory = reference_factory
        self._aggregator_factory = aggregator_factory
        self._sync = _Built()
        self._per_loop: dict[asyncio.AbstractEventLoop, _Built] = {}
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
        """The model of `reference_models[index]` (shared by that model's samples)."""
        with self._lock:
            built = self._built()
            if index not in built.references:
                spec = self.preset.reference_models[index]
                built.references[index] = self._reference_factory(spec)
            return built.references[index]

    def direct_reference(self, index: int) -> ChatOpenAI | None:
        """The model of `reference_models[index]` if it may be asked with one direct POST.

        That is a provider-table `ChatOpenAI` that sends the chat-completions request
        `moa_graph.direct` would (decided once per model), and whose calls no LLM cache
        would answer (asked per call: `set_llm_cache` may come later); else None.
        """
        model = self.reference(index)
        if not self.direct_references:
            return None
        from moa_graph.chat_openai import ProviderChatOpenAI  # the provider table built `model`

        with self._lock:
            built = self._built()
            if index not in built.direct:
                spec = self.preset.reference_models[index]
                built.direct[index] = isinstance(
                    model, ProviderChatOpenAI
                ) and direct.speaks_plain_chat(model, spec)
            plain = built.direct[index]
        # A cached model goes through ChatOpenAI, which looks the call up and stores it.
        if not plain or direct.uses_llm_cache(model):
            return None
        return model  # type: ignore[return-value]

    def aggregator(self) -> BaseChatModel:
        """The aggregator model, without tools bound."""
        with self._lock:
            built = self._built()
            if built.aggregator is None:
                built.aggregator = self._aggregator_factory(self.preset.aggregator)
            return built.aggregator

    def gate(self) -> BaseChatModel | None:
        """The preset's gate model (`gate: {model: ...}`), or None."""
        if self.preset.gate is None:
            return None
        with self._lock:
            built = self._built()
            if built.gate is None:
                built.gate = self._reference_factory(self.preset.gate.model)
            return built.gate

    def judge(self) -> Runnable[LanguageModelInput, Any]:
        """The preset's judge, asked for `JudgeFindings` (with the raw reply).

        Raises:
            ValueError: The preset has no judge.
        """
        if self.preset.judge is None:
            raise ValueError(f"preset {self.preset.name!r} has no judge")
        from moa_graph.judge import JudgeFindings

        with self._lock:
            built = self._built()
            if built.judge is None:
                model = self._reference_factory(self.preset.judge.model)
                built.judge = model.with_structured_output(JudgeFindings, include_raw=True)
            return built.judge

    def acting(self) -> Runnable[LanguageModelInput, BaseMessage]:
        """The aggregator bound to `tools` (the bare aggregator when there are none)."""
        model = self.aggregator()
        with self._lock:
            built = self._built()
            if built.acting is None:
                built.acting = model.bind_tools(self.tools) if self.tools else model
            return built.acting

    def tool(self, name: str) -> BaseTool | None:
        """The tool called `name`, if the aggregator has it."""
        return next((tool for tool in self.tools if tool.name == name), None)

    def _built(self) -> _Built:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._sync
        built = self._per_loop.get(loop)
        if built is None or built.closings != closings():
            # New loop, or its shared HTTP clients were closed (`aclose_http_clients`).
            # Models hold their loop (through their HTTP client): forget closed loops.
            for old in [old for old in self._per_loop if old.is_closed()]:
                del self._per_loop[old]
            built = self._per_loop[loop] = _Built(closings())
        return built


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


def gate_config(spec: ModelSpec) -> RunnableConfig:
    """Run config of a gate call: `moa_gate:<label>`, kept out of `messages` streams."""
    return {
        "run_name": f"moa_gate:{spec.label}",
        "tags": [GATE_TAG, TAG_NOSTREAM],
        "metadata": {"moa_label": spec.label, "moa_role": "gate"},
    }


def judge_config(spec: ModelSpec) -> RunnableConfig:
    """Run config of the judge's call: `moa_judge:<label>`, kept out of `messages` streams."""
    return {
        "run_name": f"moa_judge:{spec.label}",
        "tags": [JUDGE_TAG, TAG_NOSTREAM],
        "metadata": {"moa_label": spec.label, "moa_role": "judge"},
    }
