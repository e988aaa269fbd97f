"""What `moa-graph run` shows: references live, tool calls, the streamed answer, a summary.

References and tool lines go to stderr, the answer to stdout, so `moa-graph run ... > out`
keeps the answer alone. The live view is built from the graph's `custom` events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Durability
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from moa_graph.config import Preset
from moa_graph.nodes import AGGREGATOR, JOIN, REFERENCE
from moa_graph.state import ReferenceAnswer
from moa_graph.trimming import last_human_index, message_text
from moa_graph.usage import Usage, add_usage

__all__ = ["stream_turn", "turn_summary"]


async def stream_turn(
    graph: Any,
    request: Any,
    run_config: RunnableConfig,
    preset: Preset,
    *,
    durability: Durability = "async",
    verbose: bool = False,
    references: Sequence[ReferenceAnswer] = (),
) -> Usage | None:
    """Show the references live on stderr, then stream the aggregator's answer to stdout.

    Returns the turn's usage, summed from the node updates as the graph's reducer does.
    `durability` is LangGraph's: when each step is stored. With `verbose`, each reference's
    text (or why it has none) follows the table; `references` are the ones a resumed turn
    already has, shown when the turn resumes at the aggregator.
    """
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    board = _ReferenceBoard(preset, references)
    usage: Usage | None = None
    streamed = False
    live = Live(board.render(), console=err, refresh_per_second=12, transient=False)
    live.start()
    try:
        async for mode, chunk in graph.astream(
            request,
            run_config,
            stream_mode=["custom", "messages", "updates"],
            durability=durability,
        ):
            if mode == "custom" and chunk.get("type") == "moa_reference":
                board.update(chunk)
                if live.is_started:
                    live.update(board.render())
            elif mode == "custom" and chunk.get("type") == "moa_aggregator":
                _end(live, err)  # the references are done; the answer takes over
                if verbose:
                    board.show_texts(err)
            elif mode == "messages":
                message, meta = chunk
                if meta.get("langgraph_node") == AGGREGATOR and isinstance(message, AIMessageChunk):
                    text = message.text  # unstripped: chunk boundaries carry spaces
                    if text:
                        out.print(text, end="", markup=False)
                        streamed = True
            elif mode == "updates":
                for values in chunk.values():
                    if isinstance(values, dict) and "usage" in values:
                        usage = add_usage(usage, values["usage"])
                _show_references(chunk, board, live, err)
                streamed = _show_step(chunk, err, out, streamed)
    finally:
        _end(live, err)
        if streamed:  # also when interrupted: the next line starts on a line of its own
            out.print()
    return usage


def _end(live: Live, err: Console) -> None:
    if live.is_started:
        live.stop()
        if not err.is_terminal:  # the last render has no line end off a terminal
            err.line()


def _show_references(
    update: dict[str, Any], board: _ReferenceBoard, live: Live, err: Console
) -> None:
    """Record the references' answers: each one's reason in its row, the texts for later."""
    for node, values in update.items():
        if not isinstance(values, dict):
            continue
        if node == REFERENCE:
            for answer in values.get("reference_results") or []:
                board.update(answer)
                if live.is_started:
                    live.update(board.render())
                else:  # a re-run after the live view ended
                    err.print(board.line(answer), markup=False, soft_wrap=True)
        elif node == JOIN and "references" in values:
            board.answered(values["references"])


def _show_step(update: dict[str, Any], err: Console, out: Console, streamed: bool) -> bool:
    """Print tool calls and results; print a final answer the model did not stream."""
    for node, values in update.items():
        for message in (values or {}).get("messages", []) if isinstance(values, dict) else []:
            if isinstance(message, AIMessage) and message.tool_calls:
                for call in message.tool_calls:
                    args = ", ".join(f"{k}={v!r}" for k, v in call["args"].items())
                    err.print(f"→ {call['name']}({args})", markup=False)
                streamed = False
            elif isinstance(message, ToolMessage):
                err.print(f"← {message_text(message)}", markup=False)
            elif node == AGGREGATOR and isinstance(message, AIMessage) and not streamed:
                out.print(message_text(message), markup=False)
    return streamed


class _ReferenceBoard:
    """The live table of references: running, done with latency, failed (and why) or skipped.

    It also keeps the fan-out's answers (`join`'s `references`, what people may see under a
    privacy filter) for `show_texts`.
    """

    _STYLE: ClassVar[dict[str, str]] = {
        "running": "yellow",
        "ok": "green",
        "failed": "red",
        "skipped": "dim",
    }
    _REASON_CHARS: ClassVar[int] = 80
    """Length of a failure reason in the table; `--verbose` shows it whole."""

    def __init__(self, preset: Preset, references: Sequence[ReferenceAnswer] = ()) -> None:
        self.preset = preset
        self.rows: dict[tuple[int, int], Mapping[str, Any]] = {}
        self.references = list(references)
        self.shown = not self.references

    def update(self, row: Mapping[str, Any]) -> None:
        """Show a reference event, or an answer (which also says why a reference failed)."""
        key = (row.get("layer", 1), row["index"])
        known = self.rows.get(key, {})
        if "text" in known and "text" not in row and row["status"] != "running":
            return  # the end event of an answer already recorded: the answer says more
        self.rows[key] = row

    def answered(self, references: Sequence[ReferenceAnswer]) -> None:
        """Keep a fan-out's answers in preset order, to show once the table is done."""
        self.references, self.shown = list(references), False

    def line(self, row: Mapping[str, Any]) -> str:
        return f"reference {row['index'] + 1} {row['label']}: {self._status(row, whole=True)}"

    def render(self) -> Table:
        table = Table(title=f"MoA preset {self.preset.name}", title_justify="left", box=None)
        layered = self.preset.layers > 1
        if layered:
            table.add_column("layer", justify="right")
        table.add_column("#", justify="right")
        table.add_column("reference")
        table.add_column("status")
        for (layer, index), row in sorted(self.rows.items()):
            status = Text(self._status(row), style=self._STYLE.get(row["status"], ""))
            cells = [str(index + 1), row["label"], status]
            table.add_row(*([str(layer)] if layered else []), *cells)
        table.caption = f"aggregator: {self.preset.aggregator.label}"
        table.caption_justify = "left"
        return table

    def show_texts(self, err: Console) -> None:
        """Print each answer of the latest fan-out (or its failure reason), once."""
        if self.shown:
            return
        self.shown = True
        layered = self.preset.layers > 1
        for answer in self.references:
            layer = f"layer {answer.get('layer', 1)} " if layered else ""
            head = f"── {layer}reference {answer['index'] + 1} {answer['label']}"
            err.print(f"{head}: {self._status(answer, reason=False)}", style="bold", markup=False)
            err.print(_reason(answer) or answer["text"], markup=False, soft_wrap=True)

    @classmethod
    def _status(cls, row: Mapping[str, Any], *, reason: bool = True, whole: bool = False) -> str:
        shown = "done" if row["status"] == "ok" else str(row["status"])
        if row.get("latency_ms") is not None:
            shown += f" in {row['latency_ms'] / 1000:.2f}s"
        why = _reason(row) if reason else None
        if why and not whole and len(why) > cls._REASON_CHARS:
            why = why[: cls._REASON_CHARS - 1].rstrip() + "…"
        return f"{shown}: {why}" if why else shown


def _reason(row: Mapping[str, Any]) -> str | None:
    """Why a failed or skipped reference has no answer: its text without `[failed: ...]`."""
    if row["status"] not in ("failed", "skipped") or "text" not in row:
        return None
    text = " ".join(str(row["text"]).split())
    marker = f"[{row['status']}: "
    return text[len(marker) : -1] if text.startswith(marker) and text.endswith("]") else text


def turn_summary(
    preset: Preset, result: dict[str, Any], *, wall_s: float, thread_id: str | None = None
) -> dict[str, Any]:
    """The `--json` output: the answer, this turn's references, tool calls and usage."""
    messages: list[BaseMessage] = result["messages"]
    at = last_human_index(messages)
    messages = messages[at:] if at is not None else messages
    results = {m.tool_call_id: message_text(m) for m in messages if isinstance(m, ToolMessage)}
    tool_calls = [
        {"name": call["name"], "args": call["args"], "result": results.get(call["id"] or "")}
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
    ]
    return {
        "thread_id": thread_id,
        "preset": preset.name,
        "aggregator": preset.aggregator.label,
        "answer": message_text(messages[-1]),
        "references": result.get("references", []),
        "tool_calls": tool_calls,
        "usage": result.get("usage"),
        "wall_s": round(wall_s, 3),
    }
