"""The config file: discovery, bounded reading, the YAML rules and `load_config`.

A config file is trusted like code (its `tools:` are imported, its providers receive API
keys), so only its owner chooses it: the Studio graph never loads a file a run names.
Reading one is still bounded: only a regular file of at most `MAX_CONFIG_BYTES`, opened
without blocking, and whatever its YAML holds (deep nesting, impossible dates, endless
integers) ends as a one-line `ConfigError` naming the file and the key path. The schema
(`ModelSpec`, `Preset`, `MoAConfig`) is `moa_graph.config`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from moa_graph.errors import ConfigError, _one_line

if TYPE_CHECKING:  # the schema imports this module (it re-exports `load_config`)
    from moa_graph.config import MoAConfig

__all__ = [
    "CONFIG_ENV_VAR",
    "MAX_CONFIG_BYTES",
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
    from moa_graph.config import _FILE_RULES, MoAConfig

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
