"""`MoAContext`: what a run of the Studio graph may choose, shown in Studio's configuration panel.

The graph `langgraph dev` serves (`moa_graph.studio:graph`) is called by people who do not
own the server, so a run chooses only among what the server's owner configured: a preset
of the server's config, by name, and whether to consult its references (`references`). It
never names a file, an import path, a URL or an environment variable; the config file is
chosen when the server starts.

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

    references: str = field(
        default="auto",
        metadata={
            "description": "Whether this run consults the preset's reference models: auto "
            "(the preset decides, through its gate if it has one), on (always) or off (the "
            "aggregator answers alone)."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str):
            raise ConfigError(
                f"run context: 'preset' must be a preset name, not {type(self.preset).__name__}"
            )
        if self.references not in ("auto", "on", "off", ""):
            raise ConfigError(
                "run context: 'references' must be auto, on or off, not "
                f"{str(self.references)[:40]!r}"
            )

    @classmethod
    def coerce(cls, context: object) -> MoAContext:
        """The run's context as a `MoAContext`: None is the defaults, a mapping is checked.

        Keys `MoAContext` lacks are ignored, as LangGraph ignores them: a parent graph, a
        `RemoteGraph` caller or the server itself may put its own keys (`run_id`,
        `user_id`, ...) beside ours. A key this context no longer takes, such as
        `config_path`, is refused when it is set, so a caller who thinks it chooses the
        config file learns that it does not.

        Raises:
            ConfigError: The mapping sets a retired key (`config_path`: a run cannot choose
                the config file), or `preset` is not a string.

        Example:
            >>> MoAContext.coerce({"preset": "fast", "user_id": "u1"})
            MoAContext(preset='fast', references='auto')
        """
        if context is None:
            return cls()
        if isinstance(context, cls):
            return context
        if isinstance(context, Mapping):
            retired = [key for key in _RETIRED if context.get(key)]
            if retired:
                raise ConfigError(
                    f"run context: {retired[0]!r} is not accepted: a run chooses a preset of "
                    "the server's config by name, and the config file is chosen when the "
                    "server starts"
                )
            names = {f.name for f in fields(cls)}
            return cls(**{key: value for key, value in context.items() if key in names})
        raise ConfigError(
            f"run context: the MoA graph's context must be a MoAContext or a mapping, "
            f"not {type(context).__name__}"
        )


_RETIRED = ("config_path",)
"""Context keys of earlier versions that chose what only the server's owner may choose."""
