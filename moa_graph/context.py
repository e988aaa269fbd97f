"""`MoAContext`: what a run of the Studio graph may choose, shown in Studio's configuration panel.

The graph `langgraph dev` serves (`moa_graph.studio:graph`) reads the preset from the run's
context, so a Studio user switches presets, or config files, per run without a restart.

Example:
    >>> from moa_graph.studio import graph  # doctest: +SKIP
    >>> graph.invoke({"messages": [("user", "hi")]}, context=MoAContext(preset="fast"))
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MoAContext"]


@dataclass(kw_only=True, frozen=True)
class MoAContext:
    """Run-time choices of the MoA graph; empty fields mean "the default"."""

    preset: str = field(
        default="",
        metadata={
            "description": "Name of the MoA preset to run (its reference models and "
            "aggregator). Empty: the config's default_preset, else its first preset."
        },
    )
    config_path: str = field(
        default="",
        metadata={
            "description": "Path of the MoA config file (YAML) the preset is read from. "
            "Empty: $MOA_GRAPH_CONFIG, else ./moa.yaml, else ~/.config/moa-graph/config.yaml. "
            "Relative to the server's working directory; re-read when the file changes."
        },
    )
