"""LangChain's standard integration suite against the stand-in server.

`ChatOpenAI` pointed at `StubServer` is the control: a faithful OpenAI-compatible server
passes every test it claims, so a failure here is the stand-in's. Capabilities are declared
honestly: the stand-in answers text, tool calls, JSON mode and JSON-schema output and counts
usage; it does not look at images, PDFs or audio, so those are declared unsupported (and the
suite skips their tests itself).

`MoAChatModel` runs the same suite through a preset of two stand-in references and a stand-in
aggregator, with the same honest capabilities; `model_override_value` is a second preset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from moa_graph import MoAChatModel
from moa_graph.testing import StubServer

# LangChain's OpenAI clients are cached per base URL and keep their connections alive, as they
# do against a real server; one event loop per module keeps those connections usable.
# (The mark is for the suite's async tests; pytest-asyncio warns that its sync ones carry it.)
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The test <Function .* is not an async function"),
]

_SERVER = StubServer()


@pytest.fixture(scope="module", autouse=True)
def _stand_in() -> Iterator[StubServer]:
    """One stand-in for the whole module: the suite builds a model per test."""
    _SERVER.start()
    try:
        yield _SERVER
    finally:
        _SERVER.stop()


class _StandInCapabilities:
    """What the stand-in can do, declared once for every class on it."""

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        # The stand-in reads text parts only: test_image_inputs is skipped by the suite.
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        # Skips test_image_tool_message: no image reading.
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        # Skips test_pdf_inputs: no PDF reading.
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        # Skips test_pdf_tool_message.
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        # Skips test_audio_inputs.
        return False


class TestChatOpenAIOnTheStandIn(_StandInCapabilities, ChatModelIntegrationTests):
    """Plain `ChatOpenAI` on the stand-in: must pass what it passes on a faithful server."""

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # ChatOpenAI asks for usage in streams by itself only at OpenAI's own URL.
        return {
            "model": "stand-in",
            "base_url": _SERVER.url,
            "api_key": "test",
            "stream_usage": True,
        }

    @property
    def model_override_value(self) -> str:
        return "stand-in-other"


def _config(url: str) -> dict[str, Any]:
    def preset(*references: str) -> dict[str, Any]:
        return {
            "reference_models": [{"provider": "stub", "model": name} for name in references],
            "aggregator": {"provider": "stub", "model": "aggregator"},
        }

    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {"pair": preset("ref-a", "ref-b"), "solo": preset("ref-c")},
        }
    }


class TestMoAChatModelOnTheStandIn(_StandInCapabilities, ChatModelIntegrationTests):
    """`MoAChatModel` with two stand-in references and a stand-in aggregator."""

    @property
    def chat_model_class(self) -> type[MoAChatModel]:
        return MoAChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"preset": "pair", "config": _config(_SERVER.url)}

    @property
    def model_override_value(self) -> str:
        return "solo"
