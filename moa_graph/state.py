"""The graph state: the conversation, and the current turn's reference answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage, BaseMessage
from langgraph.graph.message import add_messages

# typing_extensions' TypedDict: pydantic (and so Studio's schemas) cannot read typing's on 3.11.
from typing_extensions import TypedDict

from moa_graph.usage import Usage, add_usage

__all__ = [
    "Judgement",
    "MoAOutput",
    "MoAState",
    "ReferenceAnswer",
    "ReferenceTask",
    "last_layer",
    "layer_answers",
    "raw_key",
]


class ReferenceAnswer(TypedDict):
    """One reference model's answer for the current turn (an item of `references`)."""

    index: int
    """0-based slot position in the preset (a reference with `samples: k` has k slots)."""
    label: str
    """`provider:model`, or `provider:model#k` for the k-th of several samples."""
    layer: NotRequired[int]
    """1 for the first fan-out of the turn; k for the k-th layer of a multi-layer preset."""
    status: Literal["ok", "failed", "skipped"]
    text: str
    """The answer; `[failed: Type: message]` or a skip notice when it did not answer."""
    latency_ms: NotRequired[float]
    """Wall time of the call in milliseconds."""
    usage: NotRequired[dict[str, Any]]
    """Token usage as reported by the provider (`input_tokens`, `output_tokens`, ...)."""
    error_type: NotRequired[str]
    """Exception type name of a failed call."""


class Judgement(TypedDict):
    """What the judge found, by the references' labels (the state key `judgement`)."""

    status: Literal["ok", "failed"]
    label: str
    """The judge model's label."""
    order: list[int]
    """The reference indices in the order the judge was shown them (Answer 1 first)."""
    ranking: NotRequired[list[str]]
    """The references' labels, best first (those the judge ranked)."""
    consensus: NotRequired[list[str]]
    contradictions: NotRequired[list[str]]
    missed: NotRequired[dict[str, str]]
    """By label: what that reference's answer missed."""
    error: NotRequired[str]
    """Why the judge failed (the error's own text: for people, never for a model)."""
    reason: NotRequired[str]
    """Why the judge failed, in fixed words: what the guidance says."""
    latency_ms: NotRequired[float]


def _collect(
    current: list[ReferenceAnswer], update: list[ReferenceAnswer] | None
) -> list[ReferenceAnswer]:
    """Reducer of `reference_results`: `None` starts a fresh turn, a list is appended."""
    return [] if update is None else current + update


def _merge_raw(current: dict[str, str], update: dict[str, str] | None) -> dict[str, str]:
    """Reducer of `reference_raw`: `None` starts afresh, a mapping is merged in."""
    return {} if update is None else {**current, **update}


class MoAState(TypedDict):
    """State of the MoA graph; a parent graph that shares `messages` can embed it as a node."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation. The guidance is never written here."""
    references: NotRequired[list[ReferenceAnswer]]
    """This turn's reference answers in preset order; reset at each new user turn. Edit it
    (e.g. from Studio, before `aggregator`) to change the guidance the aggregator sees."""
    usage: NotRequired[Annotated[Usage, add_usage]]
    """This turn's token usage (and cost, when priced) per model and in total."""
    reference_turn: NotRequired[str | None]
    """Id of the human message whose references already ran: the once-per-turn marker."""
    reference_results: NotRequired[Annotated[list[ReferenceAnswer], _collect]]
    """Answers as the parallel `reference` tasks return them; `join` orders them."""
    reference_layers: NotRequired[int]
    """How many layers this turn's fan-out runs (the preset's `layers`)."""
    reference_step: NotRequired[int]
    """The aggregator step (1-based, within the turn) the current references were made for."""
    reference_raw: NotRequired[Annotated[dict[str, str], _merge_raw]]
    """With `privacy_filter: display`: the unredacted texts the models read, by
    `"<layer>:<index>"`; `references` holds what people see."""
    judgement: NotRequired[Judgement | None]
    """The judge's findings on this turn's (latest) answers (`judge:` on the preset)."""
    reference_judge: NotRequired[bool]
    """The fan-out's preset has a judge: `join` routes to the `judge` node."""
    reference_gate: NotRequired[Literal["consult", "skip"] | None]
    """What the turn's gate decided (`moa_graph.gate`): `skip` runs no references this turn."""


class MoAOutput(TypedDict):
    """What a run of the MoA graph returns: the public keys of `MoAState`.

    The private `reference_*` bookkeeping stays in the checkpoints (a resumed turn needs it)
    but is not part of a run's output, over HTTP (`langgraph dev`, RemoteGraph) or in code.
    """

    messages: Annotated[list[AnyMessage], add_messages]
    references: NotRequired[list[ReferenceAnswer]]
    judgement: NotRequired[Judgement | None]
    usage: NotRequired[Annotated[Usage, add_usage]]


class ReferenceTask(TypedDict):
    """What `fan_out` sends to one `reference` task."""

    index: int
    view: list[BaseMessage]
    """The trimmed conversation, shared by every task of the turn."""
    layer: NotRequired[int]
    """Which layer this task belongs to (default 1)."""
    previous: NotRequired[list[tuple[str, str]]]
    """Layer k > 1: the previous layer's successful answers, as (label, text)."""
    deadline_at: NotRequired[float | None]
    """Wall-clock time (`time.time()`) after which the task gives up."""
    quorum_id: NotRequired[str]
    """With a preset `quorum`: the id the layer's tasks share (`moa_graph.quorum`)."""
    quorum: NotRequired[int]
    """How many `ok` answers end the layer's fan-out."""
    quorum_grace_s: NotRequired[float]
    """How long the others may still finish after the quorum is reached."""
    layer_size: NotRequired[int]
    """How many tasks the layer has."""
    skip: NotRequired[str]
    """Set: the slot is left out of this fan-out (its reference budget), for this reason."""


def raw_key(answer: Mapping[str, Any]) -> str:
    """The key of an answer's unredacted text in `reference_raw`: `"<layer>:<index>"`."""
    return f"{answer.get('layer', 1)}:{answer['index']}"


def last_layer(references: Iterable[ReferenceAnswer]) -> int:
    """The highest layer among the answers (1 when there are none)."""
    return max((ref.get("layer", 1) for ref in references), default=1)


def layer_answers(
    references: Iterable[ReferenceAnswer], layer: int | None = None
) -> list[ReferenceAnswer]:
    """The answers of one layer (default: the last) in preset order."""
    references = list(references)
    wanted = last_layer(references) if layer is None else layer
    return sorted(
        (ref for ref in references if ref.get("layer", 1) == wanted), key=lambda ref: ref["index"]
    )
