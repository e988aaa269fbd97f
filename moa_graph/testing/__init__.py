"""Offline stand-ins for tests and demos: an OpenAI-compatible server on loopback."""

from moa_graph.testing.offline import offline_config, offline_stub_models
from moa_graph.testing.server import Fault, ModelBehaviour, StubServer

__all__ = ["Fault", "ModelBehaviour", "StubServer", "offline_config", "offline_stub_models"]
