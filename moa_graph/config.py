"""Presets and their config file: `ModelSpec`, `Preset`, `ProviderSpec`, `MoAConfig`, `load_config`.

The models check types only when built in code, so a `model_factory` can serve any
provider name. `load_config` adds the file rules on top: unknown keys, literal API keys,
a preset that references the `moa` provider, and a `default_preset` that names no preset
are all refused with a `ConfigError` that names the file and the key path. Tools named in
`tools:` are imported when the config is validated, so a bad import path is caught there.

A config file is trusted like code (its `tools:` are imported, its providers receive API
keys), so only its owner chooses it: the Studio graph never loads a file a run names.
Reading one is still bounded: only a regular file of at most `MAX_CONFIG_BYTES`, opened
without blocking, and whatever its YAML holds (deep nesting, impossible dates, endless
integers) ends as a one-line `ConfigError` naming the file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from langchain_core.tools import BaseTool
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moa_graph.errors import ConfigError, _one_line
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

CONFIG_ENV_VAR = "MOA_GRAPH_CONFIG"
"""Environment variable naming the config file; the first place discovery looks."""

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file `load_config` reads (1 MiB); a longer one is a `ConfigError`."""

_MAX_INT_CHARS = 100
"""Longest integer a config file may spell out (no setting needs more than a few digits)."""

_MAX_DEPTH = 50
"""Deepest nesting of mappings and lists a config file may have (a config needs about 6)."""

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

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


def config_file(source: str | os.PathLike[str] | None = None) -> Path:
    """The file `load_config(source)` reads: `source` itself, or the one discovery finds.

    Raises:
        ConfigError: `source` is None and discovery finds no file.
    """
    return Path(source) if source is not None else _discover()


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> MoAConfig:
    """Load and validate a MoA config.

    Args:
        source: A path to a YAML file, an already-parsed mapping of the same shape
            (`{"moa": {...}}`), or None to discover the file: `$MOA_GRAPH_CONFIG`, then
            `./moa.yaml`, then `user_config_file()` (`$XDG_CONFIG_HOME/moa-graph/config.yaml`,
            else `~/.config/moa-graph/config.yaml`).

    Returns:
        The validated config.

    Raises:
        ConfigError: The file is missing, unreadable, not a regular file, larger than
            `MAX_CONFIG_BYTES` or not YAML, or the config breaks a rule; the one-line
            message names the file and the key path.

    Example:
        >>> cfg = load_config({"moa": {"presets": {"solo": {
        ...     "reference_models": [{"provider": "openai", "model": "gpt-5.5"}],
        ...     "aggregator": {"provider": "openai", "model": "gpt-5.5"}}}}})
        >>> cfg.preset().name
        'solo'
    """
    if isinstance(source, Mapping):
        return _validate(source, where=None)
    path = config_file(source)
    return _validate(_read_yaml(path), where=str(path))


def user_config_file() -> Path:
    """The user's config file, the last place discovery looks.

    `$XDG_CONFIG_HOME/moa-graph/config.yaml`, else `~/.config/moa-graph/config.yaml` (as the
    thread store honours `XDG_STATE_HOME`). A relative `XDG_CONFIG_HOME` is ignored, as the
    XDG spec asks.
    """
    config_home = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config_home) if config_home and os.path.isabs(config_home) else None
    return (base or Path.home() / ".config") / "moa-graph" / "config.yaml"


def _discover() -> Path:
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env)  # an explicit choice: a missing file is an error, not a fallthrough
    user = user_config_file()
    for path in (Path("moa.yaml"), user):
        if path.is_file():
            return path
    raise ConfigError(f"no MoA config found: set ${CONFIG_ENV_VAR}, or create ./moa.yaml or {user}")


def _read_yaml(path: Path) -> Any:
    text = _read_text(path)
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader, below
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(_one_line(f"{path}: invalid YAML{where}: {problem}")) from None
    except Exception as exc:  # e.g. `!!timestamp 2026-13-45`: still this file's fault
        raise ConfigError(_one_line(f"{path}: invalid YAML: {type(exc).__name__}: {exc}")) from None


def _read_text(path: Path) -> str:
    """The file's text: a regular file of at most `MAX_CONFIG_BYTES`, read without blocking."""
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; the fstat
    # below then refuses it, as it refuses devices (/dev/zero), directories and sockets.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {_os_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file ({_file_kind(mode)})")
        data = b""
        while len(data) <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {_os_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "not a file")


class _ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with dates left as strings and integers of bounded length.

    A config has no dates: `2026-13-45` stays the string it is (the SafeLoader would raise
    ValueError on it), and an integer of thousands of digits is a YAML error at its line
    (Python refuses to convert one, and base-60 ones take quadratic time).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """A node, refusing one nested deeper than `_MAX_DEPTH` collections."""
        # The composer recurses once per level: 20,000 brackets would be a RecursionError.
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {_MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An integer, refusing one longer than `_MAX_INT_CHARS` characters."""
        text = str(self.construct_scalar(node))
        if len(text) > _MAX_INT_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer of {len(text)} characters is too long", node.start_mark
            )
        return int(super().construct_yaml_int(node))


# Copied, not edited in place: the resolver table is a class attribute of SafeLoader itself.
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def _validate(data: Any, *, where: str | None) -> MoAConfig:
    prefix = f"{where}: " if where else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}moa: the config must be a mapping with a 'moa' key")
    unknown = [str(key) for key in data if key != "moa"]
    if unknown:
        raise ConfigError(
            _one_line(f"{prefix}{unknown[0]}: unknown key (the config lives under 'moa')")
        )
    if "moa" not in data:
        raise ConfigError(f"{prefix}moa: 'moa' is required")
    body = data["moa"]
    if not isinstance(body, Mapping):
        raise ConfigError(f"{prefix}moa: must be a mapping")
    try:
        config = MoAConfig.model_validate(body, context={_FILE_RULES: True})
    except ValidationError as exc:
        raise ConfigError(_one_line(prefix + _describe(exc))) from None
    except Exception as exc:  # anything pydantic does not wrap is still this config's fault
        raise ConfigError(_one_line(f"{prefix}moa: {type(exc).__name__}: {exc}")) from None
    return config.model_copy(update={"source": where})


def _describe(exc: ValidationError) -> str:
    """Turn pydantic's errors into `moa.<key path>: <problem>`, one clause per error."""
    clauses = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [part for part in error["loc"] if part != "[key]"]
        kind = error["type"]
        if kind in ("missing", "extra_forbidden") and loc:
            key, parent = loc[-1], loc[:-1]
            if kind == "missing":
                problem = f"{key!r} is required"
            elif key == "api_key":
                problem = (
                    "'api_key' is not allowed: keep keys out of config files and name the "
                    "environment variable that holds it with 'api_key_env'"
                )
            else:
                problem = f"unknown key {key!r}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            parent, problem = loc, "must be a mapping"
        else:
            parent = loc
            problem = str(error["msg"]).removeprefix("Value error, ")
        clauses.append(f"{_key_path(parent)}: {problem}")
    return "; ".join(clauses[:3]) + (f" (and {len(clauses) - 3} more)" if len(clauses) > 3 else "")


def _key_path(loc: list[int | str]) -> str:
    path = "moa"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
