"""A small scripted chat model that supports `bind_tools` (langchain-core's fakes do not)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from moa_graph import ModelSpec

Reply = AIMessage | str | Exception


@dataclass
class Call:
    messages: list[BaseMessage]
    tools: list[dict[str, Any]]
    started: float
    tool_choice: Any = None


class FakeChatModel(BaseChatModel):
    """Answers from a script (one reply per call, in order), else from `respond`, else a
    fixed text; sleeps `delay` seconds first; records every call in `calls` (shared with the
    copies `bind_tools` returns)."""

    label: str = "fake"
    script: list[Any] = Field(default_factory=list)
    """Replies in call order: `AIMessage`, text, or an exception to raise."""
    respond: Callable[[list[BaseMessage]], Any] | None = None
    delay: float = 0.0
    calls: list[Call] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = None

    @property
    def _llm_type(self) -> str:
        return "fake-scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> FakeChatModel:  # type: ignore[override]
        tools = [convert_to_openai_tool(t) for t in tools]
        return self.model_copy(update={"tools": tools, "tool_choice": kwargs.get("tool_choice")})

    def _reply(self, messages: list[BaseMessage], started: float) -> ChatResult:
        self.calls.append(Call(list(messages), self.tools, started, self.tool_choice))
        reply: Reply
        if self.script:
            reply = self.script.pop(0)
        elif self.respond is not None:
            reply = self.respond(messages)
        else:
            reply = f"{self.label} answers"
        if isinstance(reply, Exception):
            raise reply
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        started = time.monotonic()
        time.sleep(self.delay)
        return self._reply(messages, started)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        return self._reply(messages, started)


class FakeModels:
    """A `model_factory` serving `FakeChatModel`s by model name; unknown names get a default."""

    def __init__(self, **models: FakeChatModel) -> None:
        self.models = models
        self.built: list[str] = []

    def __call__(self, spec: ModelSpec) -> FakeChatModel:
        self.built.append(spec.label)
        return self.models.setdefault(spec.model, FakeChatModel(label=spec.model))

    def __getitem__(self, name: str) -> FakeChatModel:
        return self.models[name]


def tool_call(name: str, args: dict[str, Any], call_id: str = "call_1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


def stub_config(
    url: str,
    *,
    refs: Sequence[str | dict[str, Any]] = ("alpha", "beta"),
    aggregator: str = "boss",
    preset: str = "demo",
    **keys: Any,
) -> dict[str, Any]:
    """A config with one preset on the stand-in at `url`: references `refs` (model names, or
    mappings of `ModelSpec` keys), the aggregator, and the preset's other `keys`. No model
    retries, so a fault a test injects is seen at once."""
    models = [ref if isinstance(ref, dict) else {"model": ref} for ref in refs]
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                preset: {
                    "reference_models": [
                        {"provider": "stub", "max_retries": 0, **model} for model in models
                    ],
                    "aggregator": {"provider": "stub", "model": aggregator, "max_retries": 0},
                    **keys,
                }
            },
        }
    }
