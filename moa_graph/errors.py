"""Errors that `moa_graph` raises, each one something a user can act on."""

from __future__ import annotations

__all__ = [
    "CheckpointStoreError",
    "ConfigError",
    "MoAAggregatorError",
    "MoAToolLoopError",
    "ProviderError",
    "ThreadBusyError",
]


class ConfigError(ValueError):
    """A configuration problem: the message names the file (when there is one) and the key path.

    Example:
        `moa.yaml: moa.presets.review.aggregator: 'model' is required`
    """


class MoAAggregatorError(RuntimeError):
    """The aggregator (the acting model) failed after its client's own retries.

    The message names the model label and the cause; it never contains an API key. Nor
    does its cause chain: `__cause__` is a `ProviderError` standing in for the provider
    client's exception (which can carry the key), and there is no `__context__`.
    The thread's last checkpoint is left as it was, so the turn can be resumed.

    Attributes:
        label: The aggregator's `provider:model` label.
        cause: What went wrong, `Type: message`.
    """

    def __init__(self, label: str, cause: str) -> None:
        super().__init__(f"aggregator {label} failed: {cause}")
        self.label = label
        self.cause = cause


class ProviderError(Exception):
    """A provider's failure as `Type: message`, with every API key scrubbed.

    The `__cause__` of a `MoAAggregatorError`, standing in for the provider client's own
    exception: that one can carry the key, in an error body that echoes the request, in the
    request object it holds, and in the locals of its traceback's frames (which error
    trackers and `traceback.TracebackException(..., capture_locals=True)` show). So this
    error has no traceback of its own: where the call failed is kept as text, scrubbed, and
    printed with it as a note.

    Attributes:
        type_name: The class name of the client's exception, e.g. `RateLimitError`.
        status_code: The HTTP status the provider answered with, if it answered.
        provider_traceback: The client exception's formatted traceback, keys scrubbed.
    """

    def __init__(
        self,
        description: str,
        *,
        type_name: str = "",
        status_code: int | None = None,
        provider_traceback: str = "",
    ) -> None:
        super().__init__(description)
        self.type_name = type_name
        self.status_code = status_code
        self.provider_traceback = provider_traceback
        if provider_traceback:
            self.add_note(f"The provider client's traceback (keys scrubbed):\n{provider_traceback}")


class MoAToolLoopError(RuntimeError):
    """The aggregator asked for more tool rounds in one user turn than its preset allows.

    Once `max_tool_rounds` rounds are spent the aggregator is asked to answer (its tools
    described but `tool_choice="none"`); a reply that still calls tools raises this before any
    tool runs. The thread's last checkpoint is left before `aggregator`: raise the limit and
    resume.

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


class ThreadBusyError(RuntimeError):
    """Another runner holds the thread: `thread_lock` refused it without waiting.

    Attributes:
        thread_id: The busy thread.
    """

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id} is busy: another run is on it; try again later")
        self.thread_id = thread_id


class CheckpointStoreError(RuntimeError):
    """The checkpoint store failed mid-run, after one retry on a fresh connection.

    Raised by the PostgreSQL savers `open_checkpointer` opens in place of any psycopg error:
    the server stayed unreachable for the whole connect timeout, did not answer a call in
    time, or refused it (e.g. a read-only server during a failover). One line, no password.
    Run with `durability="sync"` to stop at the failed write, so that nothing after it is
    paid for; the thread resumes from its last stored step.
    """


def _one_line(text: str) -> str:
    """`text` on one line, fit for an error message.

    A key, a path or a server's or imported module's message may hold line breaks.
    """
    return " ".join(text.split())
