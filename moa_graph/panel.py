"""Running a whole panel of references: every enabled slot of every layer, in parallel.

The graph runs a panel as `reference` tasks (one `Send` per slot, `join` between layers);
`MoAChatModel` and `MoAMiddleware` run it here, in one call. Both take each layer's tasks
from `layer_tasks` and ask `moa_graph.turn.next_layer` whether another layer follows, so a
panel runs the same layers, on the same inputs, whichever front-end runs it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from langchain_core.callbacks import Callbacks
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import ContextThreadPoolExecutor

from moa_graph.budget import estimate, left_out
from moa_graph.judge import ajudge, judge
from moa_graph.models import PresetModels
from moa_graph.references import Outcome, acall_reference, advisor_input, call_reference
from moa_graph.state import Judgement, ReferenceAnswer, ReferenceTask, raw_key
from moa_graph.turn import enabled_slots, next_layer
from moa_graph.usage import Usage, add_usage

__all__ = ["Advice", "acall_panel", "call_panel", "layer_tasks"]


@dataclass
class Advice:
    """A whole panel's work for one fan-out: every layer's answers."""

    answers: list[ReferenceAnswer] = field(default_factory=list)
    usage: Usage | None = None
    raw: dict[str, str] = field(default_factory=dict)
    step: int = 1
    """The aggregator step of the turn the panel ran for (its `reference_step`)."""
    gated: bool = False
    """The turn's gate skipped the references: no guidance is given."""
    judgement: Judgement | None = None
    """The judge's findings on the last layer (a preset with a `judge`)."""

    def judged(self, judgement: Judgement | None, usage: Usage | None) -> Advice:
        """This advice with the judge's findings and its call's usage."""
        self.judgement = judgement
        return self.with_usage(usage)

    def with_usage(self, usage: Usage | None) -> Advice:
        """This advice with `usage` (the gate's call) added to its own."""
        if usage is not None:
            self.usage = add_usage(usage, self.usage)
        return self

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Take in one layer's outcomes, in preset order."""
        for outcome in sorted(outcomes, key=lambda o: o.answer["index"]):
            self.answers.append(outcome.answer)
            if outcome.usage is not None:
                self.usage = add_usage(self.usage, outcome.usage)
            if outcome.raw is not None:
                self.raw[raw_key(outcome.answer)] = outcome.raw


def layer_tasks(
    models: PresetModels,
    view: list[BaseMessage],
    *,
    layer: int = 1,
    previous: list[tuple[str, str]] | None = None,
) -> list[ReferenceTask]:
    """One task per enabled slot for a fan-out of `layer`.

    The tasks share `view`, one deadline and (with a preset `quorum`) one quorum; with a
    reference budget, the slots `moa_graph.budget` leaves out are marked `skip`.
    """
    preset, slots = models.preset, enabled_slots(models)
    deadline = preset.references_deadline_s
    shared = ReferenceTask(
        index=0,
        view=view,
        layer=layer,
        previous=previous or [],
        deadline_at=time.time() + deadline if deadline is not None else None,
    )
    if preset.quorum is not None:
        shared["quorum_id"] = uuid.uuid4().hex
        shared["quorum"] = preset.quorum
        shared["quorum_grace_s"] = preset.quorum_grace_s
        shared["layer_size"] = len(slots)
    tasks: list[ReferenceTask] = [{**shared, "index": slot.index} for slot in slots]
    if preset.max_reference_cost_usd is None and preset.max_reference_input_tokens is None:
        return tasks
    limit = preset.max_reference_chars
    estimates = [
        estimate(slot.index, slot.label, slot.spec, advisor_input(task, slot.spec, limit=limit))
        for slot, task in zip(slots, tasks, strict=True)
    ]
    reasons = left_out(preset, estimates)
    for task in tasks:
        if task["index"] in reasons:
            task["skip"] = reasons[task["index"]]
    return tasks


def call_panel(
    models: PresetModels, view: list[BaseMessage], *, step: int = 1, callbacks: Callbacks = None
) -> Advice:
    """Run every layer of the panel, each layer's slots concurrently in threads; then the judge."""
    layers = _layers(models, view, step)
    try:
        tasks = next(layers)
        while True:
            # ContextThreadPoolExecutor carries the caller's context (LangGraph's stream writer).
            with ContextThreadPoolExecutor(max_workers=len(tasks)) as pool:
                outcomes = list(
                    pool.map(lambda t: call_reference(models, t, callbacks=callbacks), tasks)
                )
            tasks = layers.send(outcomes)
    except StopIteration as done:
        advice: Advice = done.value
    return advice.judged(*judge(models, view, advice.answers, advice.raw))


async def acall_panel(
    models: PresetModels, view: list[BaseMessage], *, step: int = 1, callbacks: Callbacks = None
) -> Advice:
    """Run every layer of the panel, each layer's slots concurrently as tasks; then the judge."""
    layers = _layers(models, view, step)
    try:
        tasks = next(layers)
        while True:
            calls = (acall_reference(models, t, callbacks=callbacks) for t in tasks)
            tasks = layers.send(list(await asyncio.gather(*calls)))
    except StopIteration as done:
        advice: Advice = done.value
    return advice.judged(*await ajudge(models, view, advice.answers, advice.raw))


def _layers(
    models: PresetModels, view: list[BaseMessage], step: int
) -> Generator[list[ReferenceTask], list[Outcome], Advice]:
    """The panel's layers: yields each layer's tasks, takes their outcomes, returns the advice."""
    advice = Advice(step=step)
    layer, previous = 1, list[tuple[str, str]]()
    while tasks := layer_tasks(models, view, layer=layer, previous=previous):
        advice.add((yield tasks))
        following = next_layer(models.preset, advice.answers, advice.raw)
        if following is None:
            break
        layer, previous = following
    return advice
