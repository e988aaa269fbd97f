"""The arms of an evaluation, built from a preset: who answers each prompt.

- `moa`: the preset's MoA graph (`build_moa_graph`), references and aggregator, no tools;
- `aggregator`: the aggregator's model alone, one plain call: the baseline every other arm
  is compared with;
- `ref:<label>`: each enabled reference alone, one plain call (a sampled reference: one
  sample);
- `self-moa:<label>`: for a reference with `samples: k > 1`, Self-MoA (Li et al., 2025): the
  preset with that reference's k samples as its only references, and the same aggregator.

Every arm sees the prompt as the only user message; the graph's arms add what a MoA turn
adds (the references' advisor prompt, the guidance). Each call is bounded by its models'
`timeout`s and retries, as in the graph.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from langchain_core.messages import HumanMessage

from moa_graph.config import MoAConfig, ModelSpec, Preset
from moa_graph.errors import ConfigError
from moa_graph.evaluation.results import ArmKind, message_counts
from moa_graph.graph import build_moa_graph
from moa_graph.providers import ModelFactory, default_model_factory
from moa_graph.usage import UsageCounts

__all__ = [
    "BASELINE",
    "Arm",
    "ArmCall",
    "ArmReply",
    "arm_caller",
    "preset_arms",
    "select_arms",
]

BASELINE = "aggregator"
"""The arm every other arm is compared with: the aggregator's model alone."""


@dataclass(frozen=True)
class Arm:
    """One way of answering a prompt."""

    name: str
    kind: ArmKind
    description: str
    preset: Preset | None = None
    """The preset its graph runs (`moa`, `self-moa`)."""
    model: ModelSpec | None = None
    """The one model it asks (`aggregator`, `reference`)."""

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """The models it calls: gate, references (per sample and layer), aggregator."""
        if self.preset is None:
            return (self.model,) if self.model else ()
        preset = self.preset
        references = [s for s in preset.reference_models if s.enabled] if preset.enabled else []
        sampled = [spec for spec in references for _ in range(spec.samples)] * preset.layers
        gate = [preset.gate.model] if preset.gate else []
        return (*gate, *sampled, preset.aggregator)


@dataclass(frozen=True)
class ArmReply:
    """What one call of an arm gave back."""

    text: str
    usage: UsageCounts


ArmCall = Callable[[str], Awaitable[ArmReply]]
"""Asks an arm one prompt."""


def preset_arms(preset: Preset) -> list[Arm]:
    """Every arm a preset gives: `moa`, `aggregator`, `ref:<label>`, `self-moa:<label>`.

    Two references with one label are told apart by their position (`ref:<label>@2`).

    Example:
        >>> [arm.name for arm in preset_arms(config.preset("demo"))]  # doctest: +SKIP
        ['moa', 'aggregator', 'ref:stub:solver', 'ref:stub:guesser', 'self-moa:stub:solver']
    """
    arms = [
        Arm("moa", "moa", f"the {preset.name} preset (MoA graph)", preset=preset),
        Arm(BASELINE, "aggregator", f"{preset.aggregator.label} alone", model=preset.aggregator),
    ]
    references = [spec for spec in preset.reference_models if spec.enabled]
    labels = [spec.label for spec in references]
    named = [
        (spec, spec.label if labels.count(spec.label) == 1 else f"{spec.label}@{index}")
        for index, spec in enumerate(references, start=1)
    ]
    arms += [
        Arm(f"ref:{name}", "reference", f"{spec.label} alone", model=spec) for spec, name in named
    ]
    arms += [
        Arm(
            f"self-moa:{name}",
            "self-moa",
            f"{spec.samples} samples of {spec.label}, aggregated by {preset.aggregator.label}",
            preset=preset.model_copy(update={"reference_models": [spec]}),
        )
        for spec, name in named
        if spec.samples > 1
    ]
    return arms


def select_arms(arms: Sequence[Arm], names: Sequence[str] | None) -> list[Arm]:
    """The arms named (None: all), in the order given; the baseline is always kept, first.

    Raises:
        ConfigError: A name matches no arm; the message lists the arms there are.
    """
    if names is None:
        return list(arms)
    by_name = {arm.name: arm for arm in arms}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(f"no arm {unknown[0]!r} in this preset; arms: {', '.join(by_name)}")
    chosen = [BASELINE, *(name for name in dict.fromkeys(names) if name != BASELINE)]
    return [by_name[name] for name in chosen]


def arm_caller(
    arm: Arm, *, config: MoAConfig | None, model_factory: ModelFactory | None = None
) -> ArmCall:
    """What asks `arm` a prompt; call it in the event loop that will run the calls.

    Args:
        arm: The arm.
        config: Where its providers come from (None: the built-in provider table).
        model_factory: Builds its chat models (None: the provider table, with the
            reference and aggregator default timeouts).

    Raises:
        ConfigError: A model cannot be built (an unknown provider, a key not set).
    """
    if arm.preset is not None:
        graph = build_moa_graph(
            arm.preset, config=config, model_factory=model_factory, name=arm.name
        ).compile()

        async def ask_graph(prompt: str) -> ArmReply:
            state = await graph.ainvoke({"messages": [HumanMessage(prompt)]})
            return ArmReply(state["messages"][-1].text, state["usage"]["total"])

        return ask_graph
    spec = arm.model
    if spec is None:  # pragma: no cover - every arm has a preset or a model
        raise ValueError(f"arm {arm.name} has nothing to ask")
    factory = model_factory or default_model_factory(
        config.providers if config else None, reference=arm.kind == "reference"
    )
    model = factory(spec)

    async def ask_model(prompt: str) -> ArmReply:
        reply = await model.ainvoke([HumanMessage(prompt)])
        return ArmReply(reply.text, message_counts(reply, spec))

    return ask_model
