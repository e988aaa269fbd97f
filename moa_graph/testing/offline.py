"""The bundled offline demo: a preset whose models all live on the stand-in server.

`moa-graph run --offline` starts a `StubServer` with `offline_stub_models()` and runs the
`demo` preset of `offline_config(url)` against it, so a fresh clone can run a real MoA turn
(three references in parallel, then the aggregator with a `calculator` round trip) with no
network and no keys.
"""

from __future__ import annotations

from moa_graph.config import MoAConfig, load_config
from moa_graph.testing.server import ModelBehaviour

__all__ = ["OFFLINE_PRESET", "offline_config", "offline_stub_models"]

OFFLINE_PRESET = "demo"
"""Name of the bundled offline preset."""

_REFERENCES = {"analyst": 0.4, "skeptic": 0.7, "builder": 0.55}
"""Stand-in reference models and their latency in seconds, so the live view has a story."""
_AGGREGATOR = "aggregator"


def offline_stub_models() -> dict[str, ModelBehaviour]:
    """Stand-in behaviour per model name for the offline demo."""
    models = {name: ModelBehaviour(latency=latency) for name, latency in _REFERENCES.items()}
    models[_AGGREGATOR] = ModelBehaviour(latency=0.2)
    return models


def offline_config(base_url: str) -> MoAConfig:
    """The offline demo config: provider `stub` at `base_url` (no key) and preset `demo`."""
    return load_config(
        {
            "moa": {
                "default_preset": OFFLINE_PRESET,
                "providers": {"stub": {"base_url": base_url}},
                "presets": {
                    OFFLINE_PRESET: {
                        "reference_models": [
                            {"provider": "stub", "model": name} for name in _REFERENCES
                        ],
                        "aggregator": {"provider": "stub", "model": _AGGREGATOR},
                        "tools": ["moa_graph.tools:calculator"],
                    }
                },
            }
        }
    )
