"""`MoAChatModel`: a MoA preset as a LangChain chat model.

One call runs the preset's references in parallel on the trimmed view, then the aggregator
with the guidance, and returns the aggregator's `AIMessage` (with its tool calls). An agent
loop calls its model once per tool step, so reference answers are cached per user turn: the
key is a hash of the preset and the trimmed view up to the last human message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from moa_graph.cache import AdviceCache
from moa_graph.config import MoAConfig, Preset
from moa_graph.failures import aggregator_failures
from moa_graph.graph import ConfigSource, resolve_preset
from moa_graph.guidance import aggregator_input, render_guidance
from moa_graph.models import PresetModels, aggregator_config
from moa_graph.providers import ModelFactory
from moa_graph.references import Advice, acall_panel, call_panel, enabled_slots
from moa_graph.trimming import reference_messages
from moa_graph.turn import (
    aggregator_step,
    answering_model,
    check_tool_budget,
    tool_budget_note,
    tool_rounds,
    tools_spent,
    turn_start,
)

__all__ = ["MoAChatModel", "init_moa_model"]


class MoAChatModel(BaseChatModel):
    """A MoA preset as a chat model: references in parallel, then the acting aggregator.

    Usable wherever a chat model is, e.g. as the `model` of `langchain.agents.create_agent`.
    Tools bound with `bind_tools` go to the aggregator only. A per-call `model="<preset>"`
    runs another preset of the same config.

    Example:
        >>> moa = MoAChatModel(preset="review", config="moa.yaml")  # doctest: +SKIP
        >>> moa.bind_tools([calculator]).invoke("What is 17 * 23?").tool_calls  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    preset: str | Preset | None = None
    """A preset name in `config` (None: its default preset) or a `Preset`."""
    config: Any = None
    """A `MoAConfig`, or anything `load_config` takes (None: discovery when needed)."""
    model_factory: ModelFactory | None = Field(default=None, exclude=True)
    """Builds each model from its `ModelSpec`; defaults to the built-in provider table."""
    temperature: float | None = None
    """Passed on to the aggregator."""
    max_tokens: int | None = None
    """Passed on to the aggregator."""
    timeout: float | None = None
    """Passed on to the aggregator (seconds per request)."""
    stop: list[str] | None = None
    """Stop sequences for the aggregator."""
    max_retries: int | None = None
    """Client retries of the aggregator."""
    streaming: bool = False
    """Stream the aggregator's tokens even under `invoke`."""
    reference_cache_size: int = 256
    """How many user turns' reference answers are kept."""

    _config: MoAConfig | None = PrivateAttr(default=None)
    _default: Preset = PrivateAttr()
    _runtimes: dict[str, PresetModels] = PrivateAttr(default_factory=dict)
    _cache: AdviceCache = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self) -> MoAChatModel:
        config: ConfigSource = self.config
        preset, self._config = resolve_preset(self.preset or "", config)
        if self.preset is None and self._config is not None:
            preset = self._config.preset()
        self._default = preset
        self._cache = AdviceCache(self.reference_cache_size)
        return self

    @property
    def preset_name(self) -> str:
        """Name of the preset this model runs by default."""
        return self._default.name

    @property
    def _llm_type(self) -> str:
        return "moa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"preset": self.preset_name, "aggregator": self._default.aggregator.label}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="moa",
            ls_model_name=str(kwargs.get("model") or self.preset_name),
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to the aggregator (references never get tools)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output through the aggregator, by tool calling whatever the `method`."""
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    # -- generation -------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, kwargs, run_manager)
        advice, computed = self._cache.get(call.key, call.panel)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        with call.errors():
            reply = aggregator.invoke(agg_input, stop=stop or self.stop, config=config)
        call.check(reply)
        return _result(reply, call.models, advice, computed)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, kwargs, run_manager)
        advice, computed = await self._cache.aget(call.key, call.apanel)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        with call.errors():
            reply = await aggregator.ainvoke(agg_input, stop=stop or self.stop, config=config)
        call.check(reply)
        return _result(reply, call.models, advice, computed)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, run_manager)
        advice, computed = self._cache.get(call.key, call.panel)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        with call.errors():
            gathered: BaseMessageChunk | None = None
            for chunk in aggregator.stream(agg_input, stop=stop or self.stop, config=config):
                generation = ChatGenerationChunk(message=_as_chunk(chunk))
                gathered = generation.message if gathered is None else gathered + generation.message
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        if gathered is not None:
            call.check(gathered)
        yield _summary_chunk(call.models, advice, computed)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, run_manager)
        advice, computed = await self._cache.aget(call.key, call.apanel)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        with call.errors():
            gathered: BaseMessageChunk | None = None
            async for chunk in aggregator.astream(agg_input, stop=stop or self.stop, config=config):
                generation = ChatGenerationChunk(message=_as_chunk(chunk))
                gathered = generation.message if gathered is None else gathered + generation.message
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        if gathered is not None:
            call.check(gathered)
        yield _summary_chunk(call.models, advice, computed)

    def _prepare(
        self,
        messages: list[BaseMessage],
        kwargs: dict[str, Any],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> _Call:
        """Everything one call needs: models, cache key, trimmed view, nested callbacks."""
        models = self._models(kwargs.pop("model", None))
        at = turn_start(messages)
        preset = models.preset
        step = aggregator_step(messages, at)
        turn = reference_messages(messages[: at + 1]) if enabled_slots(models) else []
        view, bucket, at_step = turn, 0, 1
        if preset.fanout_interval is not None and turn:
            # A re-running schedule: one advice per run of `interval` steps, made (normally
            # on the run's first step) with the turn's tool activity so far in view.
            bucket, at_step = (step - 1) // preset.fanout_interval, step
            view = reference_messages(
                messages,
                tool_activity=True,
                tool_result_budget=preset.reference_tool_result_budget,
            )
        shown = [(m.type, m.content) for m in turn]
        key = hashlib.sha256(json.dumps([preset.name, bucket, shown], default=str).encode())
        callbacks = _child_callbacks(run_manager)
        rounds = tool_rounds(messages, at)
        return _Call(models, key.hexdigest(), view, callbacks, kwargs, at_step, rounds=rounds)

    def _models(self, preset_name: str | None) -> PresetModels:
        preset = self._default
        if preset_name and preset_name != preset.name:
            if self._config is None:
                raise ValueError(f"no config to look up preset {preset_name!r} in")
            preset = self._config.preset(preset_name)
        if preset.name not in self._runtimes:
            overrides = {
                key: value
                for key, value in {
                    "temperature": self.temperature,
                    "max_tokens": self.max_tokens,
                    "timeout": self.timeout,
                    "max_retries": self.max_retries,
                }.items()
                if value is not None
            }
            aggregator = preset.aggregator.model_copy(update=overrides)
            self._runtimes[preset.name] = PresetModels.for_preset(
                preset.model_copy(update={"aggregator": aggregator}),
                providers=self._config.providers if self._config else None,
                model_factory=self.model_factory,
            )
        return self._runtimes[preset.name]


class _Call:
    """One call of `MoAChatModel`: its models, turn key, trimmed view and callbacks.

    `step` is the aggregator step of the turn this call is (1 under `per_turn`): advice made
    now is placed there; advice from the cache stays where it was made (`Advice.step`).
    `rounds` are the turn's tool rounds so far: they spend the tool budget.
    """

    def __init__(
        self,
        models: PresetModels,
        key: str,
        view: list[BaseMessage],
        callbacks: Callbacks,
        kwargs: dict[str, Any],
        step: int,
        *,
        rounds: int,
    ) -> None:
        self.models = models
        self.rounds = rounds
        self.key = key
        self.view = view
        self.callbacks = callbacks
        self.step = step
        self._kwargs = kwargs

    def panel(self) -> Advice:
        """Run the references on this call's view (sync)."""
        advice = call_panel(self.models, self.view, callbacks=self.callbacks)
        advice.step = self.step
        return advice

    async def apanel(self) -> Advice:
        """Run the references on this call's view (async)."""
        advice = await acall_panel(self.models, self.view, callbacks=self.callbacks)
        advice.step = self.step
        return advice

    def aggregator(
        self, messages: list[BaseMessage], advice: Advice
    ) -> tuple[Runnable[LanguageModelInput, BaseMessage], list[BaseMessage], RunnableConfig]:
        """The aggregator with this call's tools, its input (with guidance) and run config."""
        kwargs = dict(self._kwargs)
        tools = kwargs.pop("tools", None)
        aggregator = self.models.aggregator()
        model: Runnable[LanguageModelInput, BaseMessage] = aggregator
        # A caller's own tool_choice (structured output names its tool) stands; otherwise a
        # spent budget asks for an answer.
        last = (
            bool(tools)
            and tools_spent(self.models.preset, self.rounds)
            and kwargs.get("tool_choice") in (None, "auto")
        )
        if last:
            model = answering_model(aggregator, tools, **kwargs)
        elif tools:
            model = aggregator.bind_tools(tools, **kwargs)
        elif kwargs:
            model = aggregator.bind(**kwargs)
        guidance = None
        if enabled_slots(self.models):
            guidance = render_guidance(self.models.preset, advice.answers, raw=advice.raw)
        # Our own chunks carry the tokens to the caller's handlers; the inner call is silent.
        config = aggregator_config(
            self.models.preset.aggregator, stream=False, callbacks=self.callbacks
        )
        agg_input = aggregator_input(messages, guidance, step=advice.step)
        if last:
            agg_input.append(tool_budget_note(self.models.preset))
        return model, agg_input, config

    def check(self, reply: BaseMessage) -> None:
        """Refuse tool calls once the turn's tool rounds are spent (`MoAToolLoopError`).

        A caller who forces a tool (`tool_choice` naming one, `"required"`, `"any"`) asked
        for the call, so it is theirs to bound.
        """
        if self._kwargs.get("tool_choice") in (None, "auto", "none"):
            check_tool_budget(self.models.preset, self.rounds, reply)

    def errors(self) -> AbstractContextManager[None]:
        """Turn an aggregator failure into a `MoAAggregatorError` naming its label."""
        return aggregator_failures(self.models.preset.aggregator.label)


def _child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> Callbacks:
    """Callbacks that nest the inner model calls under this chat model's run."""
    if run_manager is None:
        return None
    manager_class = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def init_moa_model(
    model: str = "moa", *, config: ConfigSource = None, **kwargs: Any
) -> MoAChatModel:
    """Create a `MoAChatModel` the way `init_chat_model` reads: `"moa:review"` or `"review"`.

    Example:
        >>> moa = init_moa_model("moa:review", config="moa.yaml")  # doctest: +SKIP
    """
    name = model.removeprefix("moa:") if model != "moa" else None
    return MoAChatModel(preset=name or None, config=config, **kwargs)


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    if not isinstance(message, AIMessageChunk):
        return AIMessageChunk(**message.model_dump(exclude={"type"}))
    if message.chunk_position == "last":  # our own stream goes on (the summary chunk)
        return message.model_copy(update={"chunk_position": None})
    return message


def _result(reply: BaseMessage, models: PresetModels, advice: Advice, computed: bool) -> ChatResult:
    message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply.content)
    message.response_metadata = {
        **message.response_metadata,
        **_moa_metadata(models, advice, computed),
    }
    return ChatResult(generations=[ChatGeneration(message=message)])


def _summary_chunk(models: PresetModels, advice: Advice, computed: bool) -> ChatGenerationChunk:
    metadata = _moa_metadata(models, advice, computed)
    return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=metadata))


def _moa_metadata(models: PresetModels, advice: Advice, computed: bool) -> dict[str, Any]:
    """What this call did, for tracing and accounting.

    The aggregator's own tokens are in the message's `usage_metadata`;
    `moa_reference_usage` holds the references that ran in this call (None on a cache hit).
    """
    references, usage = advice.answers, advice.usage
    return {
        "moa_preset": models.preset.name,
        "moa_references": [
            {k: ref.get(k) for k in ("index", "label", "status", "latency_ms")}
            for ref in references
        ],
        "moa_references_cached": not computed,
        "moa_reference_usage": usage if computed else None,
    }
