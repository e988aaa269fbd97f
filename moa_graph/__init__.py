"""moa_graph: Mixture-of-Agents presets as LangGraph state graphs.

A preset names several reference models and one aggregator. On each user turn the
references answer in parallel on a trimmed copy of the conversation; their answers, labelled
in preset order, reach the aggregator as private guidance; the aggregator is the acting
model, bound to your tools.

Example:
    >>> from moa_graph import build_moa_graph, load_config  # doctest: +SKIP
    >>> graph = build_moa_graph("review", config=load_config("moa.yaml")).compile()
    >>> graph.invoke({"messages": [("user", "Review this plan ...")]})
"""

from typing import TYPE_CHECKING, Any

from moa_graph.chat_model import MoAChatModel, init_moa_model
from moa_graph.config import MoAConfig, ModelSpec, Preset, ProviderSpec, load_config
from moa_graph.context import MoAContext
from moa_graph.errors import (
    CheckpointStoreError,
    ConfigError,
    MoAAggregatorError,
    MoAToolLoopError,
    ProviderError,
    ThreadBusyError,
)
from moa_graph.graph import build_moa_graph, build_studio_graph
from moa_graph.providers import warm_up
from moa_graph.state import MoAState, ReferenceAnswer
from moa_graph.transport import aclose_http_clients
from moa_graph.trimming import reference_messages

if TYPE_CHECKING:
    from moa_graph.middleware import MoAMiddleware

__all__ = [
    "CheckpointStoreError",
    "ConfigError",
    "MoAAggregatorError",
    "MoAChatModel",
    "MoAConfig",
    "MoAContext",
    "MoAMiddleware",
    "MoAState",
    "MoAToolLoopError",
    "ModelSpec",
    "Preset",
    "ProviderError",
    "ProviderSpec",
    "ReferenceAnswer",
    "ThreadBusyError",
    "aclose_http_clients",
    "build_moa_graph",
    "build_studio_graph",
    "init_moa_model",
    "load_config",
    "reference_messages",
    "warm_up",
]


def __getattr__(name: str) -> Any:
    # `MoAMiddleware` needs LangChain's agents (the `langchain` extra): imported on first use,
    # so `import moa_graph` works on a base install.
    if name == "MoAMiddleware":
        try:
            from moa_graph.middleware import MoAMiddleware
        except ImportError as exc:
            extra = "pip install 'moa-graph[langchain]'"
            raise ImportError(f"MoAMiddleware needs LangChain's agents: {extra} ({exc})") from None
        return MoAMiddleware
    raise AttributeError(f"module 'moa_graph' has no attribute {name!r}")
