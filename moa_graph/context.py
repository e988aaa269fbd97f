"""`MoAContext`: what a run of the Studio graph may choose, shown in Studio's configuration panel.

The graph `langgraph dev` serves (`moa_graph.studio:graph`) is called by people who do not
own the server, so a run chooses only among what the server's owner configured: a preset
of the server's config, by name. It never names a file, an import path, a URL or an
environment variable; the config file is chosen when the server starts.

Example:
    >>> from moa_graph.studio import graph  # doctest: +SKIP
    >>> graph.invoke({"messages": [("user", "hi")]}, context=MoAContext(preset="fast"))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from moa_graph.errors import ConfigError

__all__ = ["MoAContext"]


@dataclass(kw_only=True, frozen=True)
class MoAContext:
    """Run-time choices of the MoA graph; empty fields mean "the default"."""

    preset: str = field(
        default="",
        metadata={
            "description": "Name of one of the server's MoA presets to run (its reference "
            "models, aggregator and tools). Empty: the config's default_preset, else its "
            "first preset."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str):
            raise ConfigError(
                f"run context: 'preset' must be a preset name, not {type(self.preset).__name__}"
            )

    @classmethod
    def coerce(cls, context: object) -> MoAContext:
        """The run's context as a `MoAContext`: None is the defaults, a mapping is checked.

        Raises:
            ConfigError: The mapping has a key `MoAContext` lacks (such as the retired
                `config_path`: a run cannot choose the config file) or a value of the
                wrong type.

        Example:
            >>> MoAContext.coerce({"preset": "fast"})
            MoAContext(preset='fast')
        """
        if context is None:
            return cls()
        if isinstance(context, cls):
            return context
        if isinstance(context, Mapping):
            names = [f.name for f in fields(cls)]
            unknown = [str(key) for key in context if key not in names]
            if unknown:
                raise ConfigError(
                    f"run context: unknown key {unknown[0][:80]!r}; the MoA graph's context takes "
                    f"only {', '.join(map(repr, names))} (a preset of the server's config, "
                    "which is chosen when the server starts)"
                )
            return cls(**context)
        raise ConfigError(
            f"run context: the MoA graph's context must be a MoAContext or a mapping, "
            f"not {type(context).__name__}"
        )
