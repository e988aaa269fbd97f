"""One call of `MoAChatModel`: its advice (cached per fan-out), its aggregator request and reply.

`MoAChatModel` (`moa_graph.chat_model`) is the chat-model surface: options, tools,
structured output, sync and async, invoke and stream. What one call does is here: it finds
or makes the advice of the fan-out serving it (the gate, the panel and the judge, through
`moa_graph.panel`), asks the turn core for the aggregator's request, and folds the
references' usage into the reply's, so every token is counted once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, cast

from langchain_core.callbacks import Callbacks
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import (
    InputTokenDetails,
    OutputTokenDetails,
    UsageMetadata,
    add_usage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig

from moa_graph.cache import AdviceCache
from moa_graph.failures import aggregator_failures
from moa_graph.gate import Gate, GateChoice, adecide, decide
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.panel import Advice, acall_panel, call_panel
from moa_graph.turn import (
    AggregatorRequest,
    aggregator_request,
    answering_model,
    asks_gate,
    check_reply,
    consults,
)

__all__ = ["STRUCTURED_OUTPUT_FORMAT", "ChatCall", "relayed", "result", "summary_chunk"]

STRUCTURED_OUTPUT_FORMAT = "moa_structured_output_format"
"""A copy of the call's `ls_structured_output_format`, which LangChain takes off the call's
own kwargs: the inner aggregator run gets it from here."""


class ChatCall:
    """One call of `MoAChatModel`: its models, fan-out key, trimmed view and callbacks.

    `step` is the step whose fan-out serves this call: advice made now is made for it.
    """

    def __init__(
        self,
        models: PresetModels,
        key: str,
        view: list[BaseMessage],
        callbacks: Callbacks,
        kwargs: dict[str, Any],
        step: int,
    ) -> None:
        self.models = models
        self.key = key
        self.view = view
        self.callbacks = callbacks
        self.step = step
        self._kwargs = kwargs
        self.request: AggregatorRequest | None = None
        self._gate: Gate | None = None
        self._choice: GateChoice = "auto"
        self._first = key
        self._messages: list[BaseMessage] = []

    def gating(
        self, *, gate: Gate | None, choice: GateChoice, first: str, messages: list[BaseMessage]
    ) -> None:
        """The gate of this call's turn: its callable, the run's choice, its first fan-out."""
        self._gate, self._choice, self._first, self._messages = gate, choice, first, messages

    def advice(self, cache: AdviceCache) -> tuple[Advice, bool]:
        """This call's advice (sync): cached, or made now; whether this call made it."""
        held = self._held(cache)
        return held if held is not None else cache.get(self.key, self._panel)

    async def aadvice(self, cache: AdviceCache) -> tuple[Advice, bool]:
        """This call's advice (async)."""
        held = self._held(cache)
        return held if held is not None else await cache.aget(self.key, self._apanel)

    def _held(self, cache: AdviceCache) -> tuple[Advice, bool] | None:
        """The turn's skipped advice, when its gate skipped it: a turn never re-runs then."""
        first = cache.peek(self._first)
        if self._first != self.key and first is not None and first.gated:
            return first, False
        return None

    def _panel(self) -> Advice:
        decision = None
        if self._gated():
            decision = decide(self.models, self._messages, gate=self._gate, choice=self._choice)
        if decision is not None and not decision.consult:
            return Advice(step=self.step, usage=decision.usage, gated=True)
        advice = call_panel(self.models, self.view, step=self.step, callbacks=self.callbacks)
        return advice.with_usage(decision.usage if decision else None)

    async def _apanel(self) -> Advice:
        decision = None
        if self._gated():
            decision = await adecide(
                self.models, self._messages, gate=self._gate, choice=self._choice
            )
        if decision is not None and not decision.consult:
            return Advice(step=self.step, usage=decision.usage, gated=True)
        advice = await acall_panel(self.models, self.view, step=self.step, callbacks=self.callbacks)
        return advice.with_usage(decision.usage if decision else None)

    def _gated(self) -> bool:
        """Whether this call's fan-out asks the gate (`turn.asks_gate`)."""
        return asks_gate(self.models, fresh=self._first == self.key)

    def aggregator(
        self, messages: list[BaseMessage], advice: Advice
    ) -> tuple[Runnable[LanguageModelInput, BaseMessage], list[BaseMessage], RunnableConfig]:
        """The aggregator with this call's tools, its input (with guidance) and run config."""
        kwargs = dict(self._kwargs)
        tools = kwargs.pop("tools", None)
        if STRUCTURED_OUTPUT_FORMAT in kwargs:  # for the inner run's own trace
            kwargs["ls_structured_output_format"] = kwargs.pop(STRUCTURED_OUTPUT_FORMAT)
        preset = self.models.preset
        # A caller who forces a tool (`tool_choice` naming one, `"required"`, `"any"`:
        # structured output names its tool) asked for the call, so it is theirs to bound.
        self.request = request = aggregator_request(
            preset,
            messages,
            advice.answers,
            raw=advice.raw,
            reference_step=advice.step,
            consulted=consults(self.models, gated_out=advice.gated),
            tools=bool(tools),
            bounded=kwargs.get("tool_choice") in (None, "auto", "none"),
            judgement=advice.judgement,
        )
        aggregator = self.models.aggregator()
        model: Runnable[LanguageModelInput, BaseMessage] = aggregator
        if request.answer_now:
            model = answering_model(aggregator, tools or (), **kwargs)
        elif tools:
            model = aggregator.bind_tools(tools, **kwargs)
        elif kwargs:
            model = aggregator.bind(**kwargs)
        # Our own chunks carry the tokens to the caller's handlers; the inner call is silent.
        config = aggregator_config(preset.aggregator, stream=False, callbacks=self.callbacks)
        return model, request.messages, config

    def check(self, reply: BaseMessage) -> None:
        """Refuse tool calls once the turn's tool rounds are spent (`MoAToolLoopError`)."""
        if self.request is not None:
            check_reply(self.models.preset, self.request, reply)

    def errors(self) -> AbstractContextManager[None]:
        """Turn an aggregator failure into a `MoAAggregatorError` naming its label."""
        return aggregator_failures(self.models.preset.aggregator.label)


def relayed(chunk: AIMessageChunk) -> AIMessageChunk:
    """An aggregator chunk as this model streams it: no model name, no usage.

    Both come once, in the summary chunk: chunks' strings concatenate, their usage adds up.
    """
    metadata = {k: v for k, v in chunk.response_metadata.items() if k != "model_name"}
    return chunk.model_copy(update={"usage_metadata": None, "response_metadata": metadata})


def result(reply: BaseMessage, models: PresetModels, advice: Advice, computed: bool) -> ChatResult:
    """The call's result: the aggregator's reply with the call's usage and MoA metadata."""
    message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply.content)
    aggregator_model = message.response_metadata.get("model_name")
    message.usage_metadata = _call_usage(message.usage_metadata, advice, computed)
    message.response_metadata = {
        **message.response_metadata,
        **_moa_metadata(models, advice, computed, aggregator_model),
    }
    return ChatResult(generations=[ChatGeneration(message=message)])


def summary_chunk(
    models: PresetModels, advice: Advice, computed: bool, gathered: AIMessageChunk | None
) -> ChatGenerationChunk:
    """The stream's last chunk: the call's model name, usage and MoA metadata, once."""
    aggregator_model = gathered.response_metadata.get("model_name") if gathered else None
    usage = _call_usage(gathered.usage_metadata if gathered else None, advice, computed)
    message = AIMessageChunk(
        content="",
        response_metadata=_moa_metadata(models, advice, computed, aggregator_model),
        usage_metadata=usage,
    )
    return ChatGenerationChunk(message=message)


def _call_usage(
    aggregator: UsageMetadata | None, advice: Advice, computed: bool
) -> UsageMetadata | None:
    """The call's tokens: the aggregator's, plus the references' when this call ran them."""
    if not computed or advice.usage is None:
        return aggregator
    counts = advice.usage["total"]
    references = UsageMetadata(
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        total_tokens=counts["input_tokens"] + counts["output_tokens"],
    )
    inputs = dict(counts.get("input_token_details") or {})
    if counts["cached_input_tokens"]:
        inputs.setdefault("cache_read", counts["cached_input_tokens"])
    if inputs:
        references["input_token_details"] = cast(InputTokenDetails, inputs)
    if counts.get("output_token_details"):
        outputs = dict(counts.get("output_token_details") or {})
        references["output_token_details"] = cast(OutputTokenDetails, outputs)
    return add_usage(aggregator, references)


def _moa_metadata(
    models: PresetModels, advice: Advice, computed: bool, aggregator_model: str | None
) -> dict[str, Any]:
    """What this call did, for tracing and accounting.

    `model_name` is the preset that ran, `moa_aggregator_model` the aggregator's own model
    name. The message's `usage_metadata` is the call's total; `moa_reference_usage` holds
    the references that ran in this call, per model (None on a cache hit).
    """
    references, usage = advice.answers, advice.usage
    return {
        "model_name": models.preset.name,
        "moa_aggregator_model": aggregator_model or models.preset.aggregator.model,
        "moa_preset": models.preset.name,
        "moa_references": [
            {k: ref.get(k) for k in ("index", "label", "status", "latency_ms")}
            for ref in references
        ],
        "moa_references_cached": not computed,
        "moa_reference_usage": usage if computed else None,
    }
