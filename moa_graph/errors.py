"""Errors that `moa_graph` raises, each one something a user can act on."""

from __future__ import annotations

__all__ = ["ConfigError", "MoAAggregatorError", "MoAToolLoopError"]


class ConfigError(ValueError):
    """A configuration problem: the message names the file (when there is one) and the key path.

    Example:
        `moa.yaml: moa.presets.review.aggregator: 'model' is required`
    """


class MoAAggregatorError(RuntimeError):
    """The aggregator (the acting model) failed after its client's own retries.

    The message names the model label and the cause; it never contains an API key.
    The thread's last checkpoint is left as it was, so the turn can be resumed.

    Attributes:
        label: The aggregator's `provider:model` label.
        cause: What went wrong, `Type: message`.
    """

    def __init__(self, label: str, cause: str) -> None:
        super().__init__(f"aggregator {label} failed: {cause}")
        self.label = label
        self.cause = cause


class MoAToolLoopError(RuntimeError):
    """The aggregator asked for more tool rounds in one user turn than its preset allows.

    Raised before the call that would exceed `max_tool_rounds`, so nothing more is paid for;
    the thread's last checkpoint is left before `aggregator`: raise the limit and resume.

    Attributes:
        preset: The preset's name.
        rounds: The tool rounds the turn has taken (the preset's `max_tool_rounds`).
    """

    def __init__(self, preset: str, rounds: int) -> None:
        super().__init__(
            f"preset {preset!r} stopped after {rounds} tool rounds in one turn "
            "(max_tool_rounds); raise it in the preset to let the turn go on"
        )
        self.preset = preset
        self.rounds = rounds
