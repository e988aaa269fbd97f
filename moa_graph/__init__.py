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

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from moa_graph.middleware import MoAMiddleware
    from moa_graph.providers import warm_up
    from moa_graph.state import MoAState, ReferenceAnswer
    from moa_graph.transport import aclose_http_clients
    from moa_graph.trimming import reference_messages

try:  # the installed distribution's version, as `moa-graph --version` prints it
    __version__ = version("moa-graph")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
    "__version__",
    "aclose_http_clients",
    "build_moa_graph",
    "build_studio_graph",
    "init_moa_model",
    "load_config",
    "reference_messages",
    "warm_up",
]

_HOMES = {
    "moa_graph.chat_model": ("MoAChatModel", "init_moa_model"),
    "moa_graph.config": ("MoAConfig", "ModelSpec", "Preset", "ProviderSpec", "load_config"),
    "moa_graph.context": ("MoAContext",),
    "moa_graph.errors": (
        "CheckpointStoreError",
        "ConfigError",
        "MoAAggregatorError",
        "MoAToolLoopError",
        "ProviderError",
        "ThreadBusyError",
    ),
    "moa_graph.graph": ("build_moa_graph", "build_studio_graph"),
    "moa_graph.middleware": ("MoAMiddleware",),
    "moa_graph.providers": ("warm_up",),
    "moa_graph.state": ("MoAState", "ReferenceAnswer"),
    "moa_graph.transport": ("aclose_http_clients",),
    "moa_graph.trimming": ("reference_messages",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
"""The module each public name lives in: imported on first use, so that `import moa_graph`
(and the `moa-graph` command, whose `--help` loads no model code) stays fast."""


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'moa_graph' has no attribute {name!r}")
    if name == "MoAMiddleware":
        # `MoAMiddleware` needs LangChain's agents (the `langchain` extra), so that
        # `import moa_graph` works on a base install.
        try:
            module = import_module(home)
        except ImportError as exc:
            extra = "pip install 'moa-graph[langchain]'"
            raise ImportError(f"MoAMiddleware needs LangChain's agents: {extra} ({exc})") from None
    else:
        module = import_module(home)
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
