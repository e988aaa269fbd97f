"""`MoAChatModel`: a MoA preset as a LangChain chat model.

One call runs the preset's references in parallel on the trimmed view, then the aggregator
with the guidance, and returns the aggregator's `AIMessage` (with its tool calls). An agent
loop calls its model once per tool step, so reference answers are cached per fan-out: the
key is a hash of the preset and the trimmed view up to the last human message (the turn),
with the step whose fan-out serves this call (`moa_graph.turn.serving_step`: the turn's
first call, or the schedule's latest re-run), so references run at the steps the graph
runs them at.

The call is one chat-model run. Its inner runs (each reference, the aggregator) are its
child runs for tracers and event streams (LangSmith, `astream_events`), which draw run
trees; any other callback handler (a token counter, `get_usage_metadata_callback`, a
logger) sees the MoA run alone, whose `usage_metadata` is the call's total. So every token
is counted once whichever way it is observed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from moa_graph.cache import AdviceCache
from moa_graph.chat_call import (
    STRUCTURED_OUTPUT_FORMAT,
    ChatCall,
    relayed,
    result,
    summary_chunk,
)
from moa_graph.config import MoAConfig, Preset
from moa_graph.gate import Gate, GateChoice, run_choice
from moa_graph.models import PresetModels
from moa_graph.providers import ModelFactory
from moa_graph.resolvers import ConfigSource, resolve_preset
from moa_graph.runs import ainner_stream, child_callbacks, inner_runs, inner_stream
from moa_graph.trimming import reference_messages
from moa_graph.turn import (
    aggregator_step,
    enabled_slots,
    reference_view,
    serving_step,
    turn_start,
)

__all__ = ["MoAChatModel", "init_moa_model"]


class MoAChatModel(BaseChatModel):
    """A MoA preset as a chat model: references in parallel, then the acting aggregator.

    Usable wherever a chat model is, e.g. as the `model` of `langchain.agents.create_agent`.
    Tools bound with `bind_tools` go to the aggregator only. A per-call `model="<preset>"`
    runs another preset of the same config.

    The reply's `response_metadata["model_name"]` is the preset that ran (the aggregator's
    own is `moa_aggregator_model`), and its `usage_metadata` is the call's total: the
    references this call ran plus the aggregator (a cached turn's references count once, in
    the call that ran them). A callback handler sees one chat-model run carrying that total;
    tracers and event streams also see the references and the aggregator as its child runs.

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
    references: GateChoice = "auto"
    """Whether calls consult the references: `auto` (the preset's gate, if any), `on`, `off`;
    a call's `references=` option and a run's `configurable["moa_references"]` come first."""
    gate: Gate | None = Field(default=None, exclude=True)
    """Decides per user turn whether the references run (`moa_graph.gate`)."""

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
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to the aggregator (references never get tools).

        The tools and every option (`tool_choice`, `strict`, `parallel_tool_calls`, a
        `response_format`...) reach the aggregator's own `bind_tools` as given, at each call:
        it converts them its own way (`ChatOpenAI` makes `strict` tools strict).
        """
        options = {
            "tool_choice": tool_choice,
            "strict": strict,
            "parallel_tool_calls": parallel_tool_calls,
        }
        kwargs.update({key: value for key, value in options.items() if value is not None})
        if "ls_structured_output_format" in kwargs:
            kwargs[STRUCTURED_OUTPUT_FORMAT] = kwargs["ls_structured_output_format"]
        return self.bind(tools=list(tools), **kwargs)

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output from the aggregator, after the references, as `ChatOpenAI` does it.

        `function_calling` (the default, for any aggregator that calls tools) forces a tool
        named after the schema; `json_schema` and `json_mode` send OpenAI's `response_format`
        (an OpenAI-compatible aggregator: every provider-table model is one) and parse the
        reply's text. `strict` goes to the aggregator with the tool or the schema.

        Raises:
            ValueError: An unknown `method`, or arguments this does not take.
        """
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced: dict[str, Any] = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=traced
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            response_format = (
                _json_schema_format(schema, strict)
                if method == "json_schema"
                else {"type": "json_object"}
            )
            llm = self.bind(
                response_format=response_format,
                ls_structured_output_format=traced,
                **{STRUCTURED_OUTPUT_FORMAT: traced},
            )
            parser = (
                PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"method must be 'function_calling', 'json_schema' or 'json_mode', not {method!r}"
            )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parsed

    # -- generation -------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, kwargs, run_manager)
        with inner_runs(call.callbacks):
            advice, computed = call.advice(self._cache)
            aggregator, agg_input, config = call.aggregator(messages, advice)
            with call.errors():
                reply = aggregator.invoke(agg_input, stop=stop or self.stop, config=config)
        call.check(reply)
        return result(reply, call.models, advice, computed)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, kwargs, run_manager)
        with inner_runs(call.callbacks):
            advice, computed = await call.aadvice(self._cache)
            aggregator, agg_input, config = call.aggregator(messages, advice)
            with call.errors():
                reply = await aggregator.ainvoke(agg_input, stop=stop or self.stop, config=config)
        call.check(reply)
        return result(reply, call.models, advice, computed)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, run_manager)
        with inner_runs(call.callbacks):
            advice, computed = call.advice(self._cache)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        gathered: AIMessageChunk | None = None
        with call.errors():
            chunks = aggregator.stream(agg_input, stop=stop or self.stop, config=config)
            for chunk in inner_stream(chunks, call.callbacks):
                gathered = chunk if gathered is None else gathered + chunk
                generation = ChatGenerationChunk(message=relayed(chunk))
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        if gathered is not None:
            call.check(gathered)
        yield summary_chunk(call.models, advice, computed, gathered)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, run_manager)
        with inner_runs(call.callbacks):
            advice, computed = await call.aadvice(self._cache)
        aggregator, agg_input, config = call.aggregator(messages, advice)
        gathered: AIMessageChunk | None = None
        with call.errors():
            chunks = aggregator.astream(agg_input, stop=stop or self.stop, config=config)
            async for chunk in ainner_stream(chunks, call.callbacks):
                gathered = chunk if gathered is None else gathered + chunk
                generation = ChatGenerationChunk(message=relayed(chunk))
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        if gathered is not None:
            call.check(gathered)
        yield summary_chunk(call.models, advice, computed, gathered)

    def _prepare(
        self,
        messages: list[BaseMessage],
        kwargs: dict[str, Any],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> ChatCall:
        """Everything one call needs: models, cache key, trimmed view, nested callbacks."""
        models = self._models(kwargs.pop("model", None))
        at = turn_start(messages)
        step = aggregator_step(messages, at)
        consulted = bool(enabled_slots(models))
        turn = reference_messages(messages[: at + 1]) if consulted else []
        shown = [(m.type, m.content) for m in turn]
        choice = run_choice(kwargs.pop("references", None))
        if choice == "auto":
            choice = run_choice(self.references)
        # The run's choice is part of the turn: a turn asked with references off and again
        # with them on are two turns (the graph and the middleware decide per run too).
        keyed = [models.preset.name, choice, shown]
        turn_key = hashlib.sha256(json.dumps(keyed, default=str).encode()).hexdigest()
        first = self._cache.first_step(turn_key, step)
        serving = serving_step(models.preset, step, first)
        view = reference_view(messages, models.preset) if consulted else []
        callbacks = child_callbacks(run_manager)
        call = ChatCall(models, f"{turn_key}:{serving}", view, callbacks, kwargs, serving)
        call.gating(gate=self.gate, choice=choice, first=f"{turn_key}:{first}", messages=messages)
        return call

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


def init_moa_model(
    model: str = "moa", *, config: ConfigSource = None, **kwargs: Any
) -> MoAChatModel:
    """Create a `MoAChatModel` the way `init_chat_model` reads: `"moa:review"` or `"review"`.

    Example:
        >>> moa = init_moa_model("moa:review", config="moa.yaml")  # doctest: +SKIP
    """
    name = model.removeprefix("moa:") if model != "moa" else None
    return MoAChatModel(preset=name or None, config=config, **kwargs)


def _json_schema_format(schema: Any, strict: bool | None) -> dict[str, Any]:
    """OpenAI's `response_format` for `schema`, as `ChatOpenAI` writes it."""
    function = convert_to_openai_function(schema, strict=strict)
    json_schema = {"name": function["name"], "schema": function["parameters"]}
    if function.get("description"):
        json_schema["description"] = function["description"]
    if strict is not None:
        json_schema["strict"] = strict
    return {"type": "json_schema", "json_schema": json_schema}
