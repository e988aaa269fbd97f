"""The runs one `MoAChatModel` call makes, as callback handlers see them.

The call is one chat-model run. Its inner runs (each reference, the aggregator) are its
child runs for the handlers that draw run trees: tracers (LangSmith) and event streams
(`astream_events`, LangGraph's messages stream), which filter them by tag. Any other handler
(a token counter, `get_usage_metadata_callback`, a logger) sees the MoA run alone, whose
`usage_metadata` is the call's total, so every token is counted once however it is observed.

Two of the names this needs are private to langchain-core (`_configure_hooks`, the handlers
LangChain hooks into every run; `_StreamingCallbackHandler`, LangGraph's stream handlers):
guarded. Without them, LangGraph's stream handlers count as tracers here only if they
subclass one, and the handlers LangChain hooks into every run (`get_usage_metadata_callback`)
see the inner runs too, so such a callback would count the references and the aggregator
twice; handlers passed to the call are still filtered by `child_callbacks`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

try:  # private to langchain-core (see the module docstring)
    from langchain_core.tracers._streaming import _StreamingCallbackHandler
    from langchain_core.tracers.context import _configure_hooks
except ImportError:  # pragma: no cover - a langchain-core without them
    _StreamingCallbackHandler = BaseTracer  # type: ignore[assignment,misc]
    _configure_hooks = []

__all__ = ["ainner_stream", "child_callbacks", "inner_runs", "inner_stream"]

_END: Any = object()


def child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> Callbacks:
    """Callbacks that nest the inner model calls under this chat model's run.

    Only the handlers that draw run trees get them (`_draws_run_trees`): to any other, the
    call is the one run it sees.
    """
    if run_manager is None:
        return None
    manager_class = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers([h for h in run_manager.inheritable_handlers if _draws_run_trees(h)])
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _draws_run_trees(handler: BaseCallbackHandler) -> bool:
    """Whether `handler` is shown the inner runs: it draws them as child runs.

    Tracers (LangSmith) and event streams (`astream_events`) do, and filter them by tag; a
    counter or a logger would count the call twice.
    """
    return isinstance(handler, (BaseTracer, AsyncBaseTracer, _StreamingCallbackHandler))


@contextmanager
def inner_runs(callbacks: Callbacks) -> Iterator[None]:
    """Run the inner calls started here under `callbacks` (`child_callbacks`) only.

    Two context variables would add to them. The run config of the caller's chain: a bound
    model (`bind_tools`) merges it into its own, so it gets our callbacks instead. And the
    handlers LangChain hooks into every run (`get_usage_metadata_callback` and the like),
    which the MoA run already reports the call's total to; hooked tracers (LangSmith's)
    stay. Never held across a `yield`: a context variable is reset where it was set.
    """
    changed: list[tuple[ContextVar[Any], Token[Any]]] = []
    outer = var_child_runnable_config.get()
    if outer is not None:
        inner = RunnableConfig(**{**outer, "callbacks": callbacks})
        changed.append((var_child_runnable_config, var_child_runnable_config.set(inner)))
    for var, *_ in _configure_hooks:
        handler = var.get()
        if handler is not None and not _draws_run_trees(handler):
            changed.append((var, var.set(None)))
    try:
        yield
    finally:
        for var, token in reversed(changed):
            var.reset(token)


def inner_stream(chunks: Iterator[BaseMessage], callbacks: Callbacks) -> Iterator[AIMessageChunk]:
    """The aggregator's chunks, each pulled under `inner_runs`."""
    while True:
        with inner_runs(callbacks):
            chunk = next(chunks, _END)
        if chunk is _END:
            return
        yield _as_chunk(chunk)


async def ainner_stream(
    chunks: AsyncIterator[BaseMessage], callbacks: Callbacks
) -> AsyncIterator[AIMessageChunk]:
    """The aggregator's chunks, each pulled under `inner_runs` (async)."""
    while True:
        with inner_runs(callbacks):
            chunk = await anext(chunks, _END)
        if chunk is _END:
            return
        yield _as_chunk(chunk)


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    if not isinstance(message, AIMessageChunk):
        return AIMessageChunk(**message.model_dump(exclude={"type"}))
    if message.chunk_position == "last":  # our own stream goes on (the summary chunk)
        return message.model_copy(update={"chunk_position": None})
    return message
