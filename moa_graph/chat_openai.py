"""`ProviderChatOpenAI`: the `ChatOpenAI` of provider-table models, traced under its provider.

`ChatOpenAI` reports `ls_provider="openai"` for every base URL, so LangSmith would attribute
the runs (and costs) of OpenRouter, Groq or DeepSeek models to OpenAI. LangSmith reads
`ls_provider` and `ls_model_name` from a run's metadata, which `BaseChatModel` fills from
`_get_ls_params` after the caller's metadata (a run config cannot override them), so the
supported place to name the provider is that method, as every LangChain integration does.

Imported when the first table model is built, so that `import moa_graph` does not load
`langchain_openai`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.base import LangSmithParams
from langchain_openai import ChatOpenAI

__all__ = ["ProviderChatOpenAI"]


class ProviderChatOpenAI(ChatOpenAI):
    """`ChatOpenAI` on an OpenAI-compatible provider, traced under that provider's name.

    Example:
        >>> model = ProviderChatOpenAI(
        ...     provider_name="groq", model="llama-3.3-70b-versatile", api_key="x"
        ... )
        >>> model._get_ls_params()["ls_provider"]
        'groq'
    """

    provider_name: str = "openai"
    """The provider table's name for the endpoint (`ls_provider` in LangSmith)."""

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider_name
        return params
