"""The MoA config's schema: `ModelSpec`, `Preset`, `ProviderSpec`, `MoAConfig`.

The models check types only when built in code, so a `model_factory` can serve any
provider name. A config file adds the file rules on top: unknown keys, literal API keys,
a preset that references the `moa` provider, and a `default_preset` that names no preset
are all refused with a `ConfigError` that names the file and the key path. Tools named in
`tools:` are imported when the config is validated, so a bad import path is caught there.
Reading the file (discovery, bounds, YAML) is `moa_graph.config_files`; its `load_config`
is re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from langchain_core.tools import BaseTool
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moa_graph.errors import ConfigError
from moa_graph.tools import import_tool

__all__ = [
    "CONFIG_ENV_VAR",
    "MAX_CONFIG_BYTES",
    "GateSpec",
    "JudgeSpec",
    "MoAConfig",
    "ModelSpec",
    "Preset",
    "ProviderSpec",
    "ToolPath",
    "config_file",
    "load_config",
    "user_config_file",
]

_FILE_RULES = "moa_graph.file_rules"
"""Validation-context flag: the stricter rules that apply to a config file."""


def _file_rules(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(_FILE_RULES))


def _importable(path: str) -> str:
    import_tool(path)  # raises ValueError quoting the path; pydantic adds the key path
    return path


ToolPath = Annotated[str, AfterValidator(_importable)]
"""Import path of a tool, `"package.module:tool"`; checked by importing it."""


class ModelSpec(BaseModel):
    """One model of a preset: a reference model or the aggregator.

    Example:
        >>> ModelSpec(provider="openai", model="gpt-5.5", temperature=0.7).label
        'openai:gpt-5.5'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    provider: str
    """Provider name: a built-in one (see `moa_graph.providers`), one from `providers:`, or any
    `init_chat_model` provider."""
    model: str
    """The provider's model name."""
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    """Seconds per request; the provider default applies when unset."""
    base_url: str | None = None
    """Overrides the provider's endpoint."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key; overrides the provider's."""
    max_retries: int | None = None
    """Retries by the client itself, with backoff (default 2)."""
    enabled: bool = True
    input_cost_per_mtok: float | None = None
    """Price in USD per million input tokens; set it to get `cost_usd` in `usage`."""
    output_cost_per_mtok: float | None = None
    """Price in USD per million output tokens."""
    cached_input_cost_per_mtok: float | None = None
    """Price per million input tokens read from the provider's prompt cache."""
    cache_write_cost_per_mtok: float | None = None
    """Price per million input tokens written to the provider's prompt cache."""
    reasoning_cost_per_mtok: float | None = None
    """Price per million reasoning tokens (part of the output tokens)."""
    requests_per_second: float | None = Field(default=None, gt=0)
    """Requests this model may start per second in this process (on top of its provider's)."""
    max_burst: int | None = Field(default=None, ge=1)
    """Requests that may start at once after a quiet spell (default 1); needs
    `requests_per_second`."""
    samples: int = Field(default=1, ge=1, le=32)
    """Self-MoA: independent samples of this reference, labelled `provider:model#1`.."""
    reference_timeout_s: float | None = Field(default=None, gt=0)
    """A reference still running after this many seconds is cancelled and counts as failed."""
    context_window: int | None = Field(default=None, ge=256, le=100_000_000)
    """Tokens the model reads and writes per request: a reference's input is trimmed to fit,
    leaving room for its `max_tokens` (oldest turns first, the latest user message kept)."""

    @property
    def label(self) -> str:
        """`provider:model`, the name a reference goes by in guidance and state."""
        return f"{self.provider}:{self.model}"

    @model_validator(mode="after")
    def _burst_needs_a_rate(self) -> ModelSpec:
        _check_burst(self.requests_per_second, self.max_burst)
        return self

    @field_validator("provider")
    @classmethod
    def _no_nested_moa(cls, value: str, info: ValidationInfo) -> str:
        if _file_rules(info) and value == "moa":
            raise ValueError(
                "provider 'moa' is not allowed here: a preset cannot use another MoA preset"
            )
        return value


class GateSpec(BaseModel):
    """The automatic gate: a cheap model asked whether a user turn needs the panel."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelSpec
    """The model that decides (answers `CONSULT` or `SKIP`)."""
    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """The gate's whole call is cut after this long, and the turn consults (fails open)."""


class JudgeSpec(BaseModel):
    """The judge stage: one model that compares the references' answers before the aggregator."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelSpec
    """The judge (it is asked for structured output: a ranking, consensus, contradictions,
    and what each answer missed)."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """The judge's whole call is cut after this long; the guidance goes on without it."""


class Preset(BaseModel):
    """A named Mixture-of-Agents preset: reference models answered in parallel, one aggregator.

    Example:
        >>> Preset(
        ...     name="review",
        ...     reference_models=[ModelSpec(provider="openai", model="gpt-5.5")],
        ...     aggregator=ModelSpec(provider="openrouter", model="anthropic/claude-opus-4.8"),
        ... ).aggregator.label
        'openrouter:anthropic/claude-opus-4.8'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    enabled: bool = True
    """A disabled preset runs no references: the aggregator alone answers."""
    reference_models: list[ModelSpec]
    aggregator: ModelSpec
    tools: list[ToolPath] | None = None
    """The aggregator's tools in Studio and the CLI (import paths); None: the config's `tools`."""
    fanout: str = "per_turn"
    """When references run: `per_turn` (once per user turn), `every_step` (before every
    aggregator step), or `every_n:N` (aggregator steps 1, 1+N, 1+2N, ...)."""
    reference_tool_result_budget: int = Field(default=4000, ge=100)
    """Characters of each tool result that references re-run mid-turn see (head and tail)."""
    layers: int = Field(default=1, ge=1, le=8)
    """Multi-layer MoA: layer k > 1 references improve on layer k-1's answers."""
    references_deadline_s: float | None = Field(default=None, gt=0)
    """References still running this many seconds after their fan-out are cancelled."""
    quorum: int | None = Field(default=None, ge=1)
    """A layer's fan-out ends once this many of its references answered `ok`: the ones still
    running are cancelled (after `quorum_grace_s`) and recorded as cut. None: wait for all."""
    quorum_grace_s: float = Field(default=0.0, ge=0, le=3600)
    """After the quorum is reached, how long the other references may still finish."""
    judge: JudgeSpec | None = None
    """After the references (of the last layer), a judge compares their answers, shown
    anonymised and shuffled; its findings join the guidance. None: no judge."""
    gate: GateSpec | None = None
    """Ask a cheap model at each user turn whether it needs the references (None: always)."""
    max_reference_cost_usd: float | None = Field(default=None, gt=0)
    """A fan-out's estimated reference cost cap: the most expensive references are left out
    (at least one runs) until the estimate fits."""
    max_reference_input_tokens: int | None = Field(default=None, ge=1)
    """A fan-out's estimated reference input-token cap, applied like the cost cap."""
    reference_input: str = "full"
    """How much history references see: `full`, `turn` (from the latest user message) or
    `recent:N` (the latest N user turns)."""
    min_references: int = Field(default=1, ge=0)
    """Below this many successful references the guidance says the advice is thin."""
    degraded_reference_policy: Literal["loud", "silent"] = "loud"
    """`loud` lists failed or skipped references in the guidance; `silent` leaves them out."""
    max_tool_rounds: int = Field(default=25, ge=0, le=10_000)
    """Tool rounds the aggregator may take in one user turn; one more call for tools ends the
    turn with `MoAToolLoopError` (resumable once the limit is raised)."""
    max_reference_chars: int = Field(default=20_000, ge=100, le=10_000_000)
    """Characters of each reference answer kept (in `references` and for the aggregator);
    the rest is cut with a visible marker."""
    privacy_filter: Literal["off", "display", "full"] = "off"
    """`display` redacts personal data and credentials in reference texts shown to people;
    `full` also in what the aggregator reads."""

    @property
    def fanout_interval(self) -> int | None:
        """Aggregator steps between reference runs within a turn (None: once per turn)."""
        if self.fanout == "per_turn":
            return None
        return 1 if self.fanout == "every_step" else int(self.fanout.removeprefix("every_n:"))

    @property
    def reference_turns(self) -> int | None:
        """User turns of history references see (None: all of it)."""
        if self.reference_input == "full":
            return None
        return 1 if self.reference_input == "turn" else int(self.reference_input[7:])

    @field_validator("reference_input")
    @classmethod
    def _input_scope(cls, value: str) -> str:
        if value in ("full", "turn") or re.fullmatch(r"recent:[1-9]\d*", value):
            return value
        raise ValueError(f"{value!r} is not an input scope: use full, turn or recent:N (N >= 1)")

    @field_validator("fanout")
    @classmethod
    def _fanout_schedule(cls, value: str) -> str:
        if value in ("per_turn", "every_step") or re.fullmatch(r"every_n:[1-9]\d*", value):
            return value
        raise ValueError(
            f"{value!r} is not a schedule: use per_turn, every_step or every_n:N (N >= 1)"
        )

    @field_validator("reference_models")
    @classmethod
    def _at_least_one_reference(
        cls, value: list[ModelSpec], info: ValidationInfo
    ) -> list[ModelSpec]:
        if _file_rules(info) and not value:
            raise ValueError("a preset needs at least one reference model")
        return value

    @model_validator(mode="after")
    def _reachable_quorum(self) -> Preset:
        slots = sum(spec.samples for spec in self.reference_models)
        if self.quorum is not None and slots and self.quorum > slots:
            raise ValueError(
                f"quorum {self.quorum} can never be reached: the preset has {slots} reference slots"
            )
        return self


class ProviderSpec(BaseModel):
    """An OpenAI-compatible endpoint: adds a provider or overrides a built-in one."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_url: str | None = None
    """The endpoint; an entry for a built-in provider without one keeps the built-in's
    endpoint and key variable."""
    api_key_env: str | None = None
    """Environment variable holding the key; None means the endpoint needs no key."""
    requests_per_second: float | None = Field(default=None, gt=0)
    """Requests all models of this provider may start per second, together, in this process."""
    max_burst: int | None = Field(default=None, ge=1)
    """Requests that may start at once after a quiet spell (default 1); needs
    `requests_per_second`."""

    @model_validator(mode="after")
    def _burst_needs_a_rate(self) -> ProviderSpec:
        _check_burst(self.requests_per_second, self.max_burst)
        return self


def _check_burst(requests_per_second: float | None, max_burst: int | None) -> None:
    if max_burst is not None and requests_per_second is None:
        raise ValueError("'max_burst' needs 'requests_per_second'")


class MoAConfig(BaseModel):
    """The parsed `moa:` section: presets, the default preset and extra providers."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    presets: dict[str, Preset] = Field(min_length=1)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    default_preset: str = Field(default="", validate_default=True)
    """Preset used when none is named; defaults to the first preset in the file."""
    tools: list[ToolPath] | None = None
    """Tools (import paths) of every preset that names none; used by Studio and the CLI."""
    source: str | None = Field(default=None, exclude=True)
    """The file this config came from, for error messages (None for a mapping)."""

    @model_validator(mode="before")
    @classmethod
    def _name_presets(cls, data: Any) -> Any:
        # A preset's name is its key, so the file does not repeat it.
        if isinstance(data, Mapping) and isinstance(data.get("presets"), Mapping):
            presets = {
                key: {"name": key, **body} if isinstance(body, Mapping) else body
                for key, body in data["presets"].items()
            }
            data = {**data, "presets": presets}
        return data

    @field_validator("presets")
    @classmethod
    def _names_match_keys(cls, value: dict[str, Preset]) -> dict[str, Preset]:
        for key, preset in value.items():
            if preset.name != key:
                raise ValueError(
                    f"preset {key!r} is named {preset.name!r}; a name must match its key"
                )
        return value

    @field_validator("default_preset")
    @classmethod
    def _default_names_a_preset(cls, value: str, info: ValidationInfo) -> str:
        presets = info.data.get("presets")
        if not presets:  # the presets themselves failed; that error is the one to report
            return value
        if not value:
            return str(next(iter(presets)))
        if value not in presets:
            raise ValueError(f"{value!r} names no preset; available presets: {', '.join(presets)}")
        return value

    def preset(self, name: str | None = None) -> Preset:
        """Return the preset called `name`, or the default preset when `name` is None.

        Raises:
            ConfigError: No preset has that name; the message lists the available ones.
        """
        key = name or self.default_preset
        try:
            return self.presets[key]
        except KeyError:
            raise ConfigError(
                f"MoA preset {key!r} not found; available presets: {', '.join(self.presets)}"
            ) from None

    def preset_tools(self, name: str | None = None) -> list[BaseTool] | None:
        """The tools the config gives preset `name` (None: the default preset).

        A preset's own `tools:` wins over the top-level one. Returns None when neither is
        set, so an application can choose its own default.

        Raises:
            ConfigError: No preset has that name.
        """
        paths = self.preset(name).tools
        if paths is None:
            paths = self.tools
        return None if paths is None else [import_tool(path) for path in paths]


# The file side (discovery, bounded reading, YAML, the file rules) is `moa_graph.config_files`;
# `load_config` is what most callers want from here, so it is re-exported.
from moa_graph.config_files import (  # noqa: E402
    CONFIG_ENV_VAR,
    MAX_CONFIG_BYTES,
    config_file,
    load_config,
    user_config_file,
)
