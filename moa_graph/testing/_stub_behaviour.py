"""How the stand-in behaves per model: latency, faults, a fixed reply or a script of replies.

Also the per-server behaviour table with its bookkeeping (`StubState`) and the behaviour file
reader (`load_stub_config`). What a model says is decided in `moa_graph.testing._answer`;
nothing here awaits.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from moa_graph.errors import ConfigError

__all__ = [
    "RECORD_LIMIT",
    "Admission",
    "BehaviourLike",
    "Fault",
    "FaultKind",
    "LatencyDistribution",
    "LogNormal",
    "ModelBehaviour",
    "ScriptedCall",
    "ScriptedReply",
    "StubState",
    "coerce_behaviour",
    "load_stub_config",
]

FaultKind = Literal[
    "status",
    "reset",
    "hang",
    "malformed",
    "cut_stream",
    "no_choices",
    "bad_tool_args",
    "trickle",
    "endless_stream",
]
"""The faults: `status` (an HTTP error, with `Retry-After`), `reset` (the connection dropped
unanswered), `hang` (an answer after `hang_s`), `malformed` (a body that is not a completion),
`cut_stream` (a stream dropped after three chunks; non-streaming: `reset`), `no_choices`,
`bad_tool_args` (a tool call whose arguments are not JSON), `trickle` (the whole response,
status line and headers included, one byte every `interval_s`: each read gets data in time,
so only a bound on the whole request ends it) and `endless_stream` (a stream whose chunks,
one every `interval_s`, never end; non-streaming: a body that never ends). The slow faults
end when the client disconnects or the server stops."""

RECORD_LIMIT = 200
"""Recorded request bodies kept per model; older ones are dropped."""


class Fault(BaseModel):
    """A failure the server injects for one model instead of (or before) its normal answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: FaultKind
    """Which failure: an HTTP error status, a dropped connection, a hang, a broken body, a
    trickle, an endless stream, etc. (see `FaultKind`)."""
    status: int = Field(default=500, ge=400, le=599)
    """HTTP status for `kind="status"`."""
    retry_after: float | None = Field(default=None, ge=0)
    """Seconds sent in a `Retry-After` header with `kind="status"`; no header when `None`."""
    message: str | None = None
    """For `kind="status"`: the error message in the body (default: names the status and model),
    e.g. a long provider error that echoes the request's key."""
    times: int | None = Field(default=None, ge=0)
    """Fail only the first N requests for the model, then answer normally; `None` = always."""
    rate: float | None = Field(default=None, ge=0, le=1)
    """Fail each request with this probability (`0.05`: about 5 in 100), drawn from an RNG
    per model seeded by the server's `seed`, so each model fails the same requests of its
    sequence on every run; `None` = every request. With `times`, at most N requests fail."""
    hang_s: float = Field(default=3600.0, ge=0)
    """For `kind="hang"`: how long to sleep before answering (a client timeout should fire)."""
    interval_s: float = Field(default=0.5, gt=0)
    """For `kind="trickle"`: seconds between bytes; for `kind="endless_stream"`: between
    chunks."""


class ScriptedCall(BaseModel):
    """One tool call of a scripted reply."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """The function to call (sent as written, whether or not the request offers it)."""
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """The arguments: an object (sent as its JSON) or the exact `arguments` string."""
    id: str | None = None
    """The tool call id; default: derived from the request, like the policy's calls."""


class ScriptedReply(BaseModel):
    """One reply of a model's script: a text, tool calls, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    content: str | None = None
    """The assistant text (`None` with tool calls: no text)."""
    tool_calls: list[ScriptedCall] = Field(default_factory=list)
    """Tool calls to make, in order."""


class LogNormal(BaseModel):
    """A heavy-tailed latency: `median * exp(sigma * Z)`, `Z` a standard normal draw.

    Example:
        >>> round(LogNormal(median=2.0, sigma=0.7).percentile(99), 1)
        10.2
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    median: PositiveFloat
    """Seconds: half of the requests wait less, half more."""
    sigma: NonNegativeFloat = Field(le=5)
    """Spread of `ln(latency)`: 0 is always `median`; 0.5 puts the 99th percentile at 3.2x the
    median, 1.0 at 10x (the tail grows as `exp(2.33 * sigma)`)."""

    def percentile(self, q: float) -> float:
        """The `q`-th percentile (0 < q < 100) of the latencies drawn, in seconds."""
        return self.median * math.exp(self.sigma * NormalDist().inv_cdf(q / 100))


class LatencyDistribution(BaseModel):
    """A latency drawn per request from a distribution: `{lognormal: {median, sigma}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    lognormal: LogNormal
    """Lognormal latencies (a long right tail, like a provider's under load)."""


Latency = NonNegativeFloat | tuple[NonNegativeFloat, NonNegativeFloat] | LatencyDistribution
"""Seconds to wait: a number, a uniform `(lo, hi)` range, or a `LatencyDistribution`."""


def draw_latency(latency: Latency, rng: random.Random) -> float:
    """One request's delay in seconds under `latency`, drawn from `rng` when it varies."""
    if isinstance(latency, LatencyDistribution):
        shape = latency.lognormal
        return rng.lognormvariate(math.log(shape.median), shape.sigma)
    if isinstance(latency, tuple):
        return rng.uniform(*latency)
    return latency


def _reply_of(value: Any) -> Any:
    return {"content": value} if isinstance(value, str) else value


class ModelBehaviour(BaseModel):
    """How the server answers one model name.

    Example:
        >>> ModelBehaviour(script=[  # doctest: +SKIP
        ...     {"tool_calls": [{"name": "search", "arguments": {"query": "rivers"}}]},
        ...     "Rivers are long.",
        ... ])
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    latency: Latency = 0.0
    """Seconds to wait before answering: a number; a `(lo, hi)` pair, drawn uniformly per
    request; or `{lognormal: {median: S, sigma: X}}`, drawn per request from a lognormal
    (heavy-tailed) distribution. Draws come from the server's RNG, seeded by its `seed`."""
    reply: str | None = None
    """Fixed text reply that replaces the default deterministic answer."""
    script: list[ScriptedReply] = Field(default_factory=list)
    """Replies given in order, one per request to this model (a string is a text reply); each
    is sent exactly as written, whatever `tools`/`tool_choice` say (`stop` and the token limit
    still cut its text). When the script is used up the model answers by `reply` or the
    default policy again; `configure` and `reset` start it over."""
    fault: Fault | None = None
    """Failure to inject, if any."""

    @field_validator("latency", mode="before")
    @classmethod
    def _distribution(cls, value: Any) -> Any:
        # Read a mapping as a distribution only, so its error names the distribution's key
        # (`lognormal.sigma: Field required`), not every other form `latency` could take.
        if not isinstance(value, Mapping):
            return value
        try:
            return LatencyDistribution.model_validate(dict(value))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise PydanticCustomError(
                "latency_distribution", "{where}: {msg}", {"where": where, "msg": first["msg"]}
            ) from None

    @field_validator("script", mode="before")
    @classmethod
    def _texts_are_replies(cls, value: Any) -> Any:
        return [_reply_of(item) for item in value] if isinstance(value, list) else value


BehaviourLike = ModelBehaviour | Mapping[str, Any]


def coerce_behaviour(value: ModelBehaviour | Mapping[str, Any]) -> ModelBehaviour:
    """Accept a `ModelBehaviour` or the plain mapping a config file holds.

    Args:
        value: A behaviour or its mapping form.

    Returns:
        The validated behaviour.

    Raises:
        pydantic.ValidationError: When the mapping has unknown keys or bad values.
    """
    if isinstance(value, ModelBehaviour):
        return value
    return ModelBehaviour.model_validate(dict(value))


# --- the server's table and bookkeeping ----------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """One admitted request: its number, the model's behaviour and what is due for it."""

    number: int
    behaviour: ModelBehaviour
    fault: Fault | None
    delay: float
    scripted: ScriptedReply | None
    """The model's next script reply, if its script is not used up."""


class StubState:
    """Behaviour table, counters and recorded requests, shared by the handlers and the owner.

    The lock guards plain dictionary updates only and is never held across an `await`, so the
    owner thread (`configure`, `stats`, ...) and the event loop never wait on each other for long.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, BehaviourLike] | None,
        default: BehaviourLike | None,
        seed: int,
    ) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelBehaviour] = {}
        self._default: ModelBehaviour | None = None
        self._rng = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self._disconnects: Counter[str] = Counter()
        self._faults_used: Counter[str] = Counter()
        self._script_used: Counter[str] = Counter()
        self._seed = seed
        self._fault_draws: dict[str, random.Random] = {}
        self._records: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._sequence = itertools.count(1)
        self.configure(models or {}, default=default)

    def configure(
        self,
        models: Mapping[str, BehaviourLike],
        *,
        default: BehaviourLike | None = None,
        replace: bool = False,
    ) -> None:
        """Merge (or with `replace`, swap in) behaviours; see `StubServer.configure`."""
        # Validate everything before touching the table, so a bad entry changes nothing.
        parsed = {name: coerce_behaviour(value) for name, value in models.items()}
        parsed_default = coerce_behaviour(default) if default is not None else None
        with self._lock:
            if replace:
                self._models.clear()
                self._script_used.clear()
            self._models.update(parsed)
            if parsed_default is not None or replace:
                self._default = parsed_default
            # A newly configured fault starts its `times` budget and `rate` sequence afresh.
            for name in parsed:
                self._faults_used.pop(name, None)
                self._script_used.pop(name, None)
                self._fault_draws.pop(name, None)

    def model_names(self) -> list[str]:
        """Configured model names, in the order they were first configured."""
        with self._lock:
            return list(self._models)

    def admit(self, model: str, body: dict[str, Any]) -> Admission:
        """Count and record one request; return its number, behaviour, due fault and latency."""
        with self._lock:
            number = next(self._sequence)
            self._counts[model] += 1
            self._records.setdefault(model, deque(maxlen=RECORD_LIMIT)).append((number, body))
            behaviour = self._models.get(model) or self._default or ModelBehaviour()
            fault = behaviour.fault
            if fault is not None and not self._fault_due(model, fault):
                fault = None
            delay = draw_latency(behaviour.latency, self._rng)
            scripted = None
            if fault is None and self._script_used[model] < len(behaviour.script):
                scripted = behaviour.script[self._script_used[model]]
                self._script_used[model] += 1
        return Admission(number, behaviour, fault, delay, scripted)

    def _fault_due(self, model: str, fault: Fault) -> bool:
        """Whether this request of `model` fails, within `times` and by `rate` (lock held)."""
        if fault.times is not None and self._faults_used[model] >= fault.times:
            return False
        if fault.rate is not None:
            draws = self._fault_draws.setdefault(model, random.Random(f"{self._seed}:{model}"))
            if draws.random() >= fault.rate:
                return False
        self._faults_used[model] += 1
        return True

    def stats(self) -> dict[str, int]:
        """Requests received per model name."""
        with self._lock:
            return dict(self._counts)

    def disconnected(self, model: str) -> None:
        """Note a request whose client went away before it was answered."""
        with self._lock:
            self._disconnects[model] += 1

    def disconnects(self) -> dict[str, int]:
        """Requests per model name whose client disconnected before the answer."""
        with self._lock:
            return dict(self._disconnects)

    def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Recorded bodies of one model, or of all models merged in arrival order."""
        with self._lock:
            if model is not None:
                return [body for _, body in self._records.get(model, ())]
            merged = sorted(
                itertools.chain.from_iterable(self._records.values()), key=lambda item: item[0]
            )
        return [body for _, body in merged]

    def reset(self) -> None:
        """Forget counts, recorded bodies, used fault budgets, `rate` draws and script positions.

        Behaviours are kept.
        """
        with self._lock:
            self._script_used.clear()
            self._counts.clear()
            self._disconnects.clear()
            self._faults_used.clear()
            self._fault_draws.clear()
            self._records.clear()


def load_stub_config(path: str | Path) -> tuple[dict[str, ModelBehaviour], ModelBehaviour | None]:
    """Read a stub behaviour file: `{default: {...}, models: {name: {...}}}` in YAML or JSON.

    Args:
        path: The file; JSON is read as YAML, of which it is a subset.

    Returns:
        The behaviour per model name and the default behaviour (`None` when absent).

    Raises:
        ConfigError: When the file cannot be read or parsed, or a key or value is invalid;
            the message names the file and the key path.
    """
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read stub config: {exc}") from exc
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'models' and/or 'default'")
    unknown = sorted(set(raw) - {"models", "default"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (expected 'models', 'default')")
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict):
        raise ConfigError(f"{source}: models: expected a mapping of model name → behaviour")
    entries: list[tuple[str, Any]] = [(f"models.{name}", v) for name, v in models_raw.items()]
    if raw.get("default") is not None:
        entries.append(("default", raw["default"]))
    parsed: dict[str, ModelBehaviour] = {}
    for key, value in entries:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key}: expected a mapping")
        try:
            parsed[key] = coerce_behaviour(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join([key, *(str(part) for part in first["loc"])])
            raise ConfigError(f"{source}: {where}: {first['msg']}") from exc
    default = parsed.pop("default", None)
    return {key.removeprefix("models."): value for key, value in parsed.items()}, default
