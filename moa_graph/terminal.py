"""What `moa-graph run` shows: references live, tool calls, the streamed answer, a summary.

References and tool lines go to stderr, the answer to stdout, so `moa-graph run ... > out`
keeps the answer alone. The live view is built from the graph's `custom` events.
"""

from __future__ import annotations

from typing import Any, ClassVar

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Durability
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from moa_graph.config import Preset
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
) -> Usage | None:
    """Show the references live on stderr, then stream the aggregator's answer to stdout.

    Returns the turn's usage, summed from the node updates as the graph's reducer does.
    `durability` is LangGraph's: when each step is stored.
    """
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    board = _ReferenceBoard(preset)
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
                elif chunk["status"] != "running":  # a re-run after the live view ended
                    err.print(board.line(chunk), markup=False)
            elif mode == "custom" and chunk.get("type") == "moa_aggregator":
                _end(live, err)  # the references are done; the answer takes over
            elif mode == "messages":
                message, meta = chunk
                if meta.get("langgraph_node") == "aggregator" and isinstance(
                    message, AIMessageChunk
                ):
                    text = message.text  # unstripped: chunk boundaries carry spaces
                    if text:
                        out.print(text, end="", markup=False)
                        streamed = True
            elif mode == "updates":
                for values in chunk.values():
                    if isinstance(values, dict) and "usage" in values:
                        usage = add_usage(usage, values["usage"])
                streamed = _show_step(chunk, err, out, streamed)
    finally:
        _end(live, err)
    if streamed:
        out.print()
    return usage


def _end(live: Live, err: Console) -> None:
    if live.is_started:
        live.stop()
        if not err.is_terminal:  # the last render has no line end off a terminal
            err.line()


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
            elif node == "aggregator" and isinstance(message, AIMessage) and not streamed:
                out.print(message_text(message), markup=False)
    return streamed


class _ReferenceBoard:
    """The live table of references: running, done with latency, failed or skipped."""

    _STYLE: ClassVar[dict[str, str]] = {
        "running": "yellow",
        "ok": "green",
        "failed": "red",
        "skipped": "dim",
    }

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self.rows: dict[tuple[int, int], dict[str, Any]] = {}

    def update(self, event: dict[str, Any]) -> None:
        self.rows[(event.get("layer", 1), event["index"])] = event

    def line(self, event: dict[str, Any]) -> str:
        return f"reference {event['index'] + 1} {event['label']}: {self._status(event)}"

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

    @staticmethod
    def _status(row: dict[str, Any]) -> str:
        shown = "done" if row["status"] == "ok" else str(row["status"])
        if row.get("latency_ms") is not None:
            shown += f" in {row['latency_ms'] / 1000:.2f}s"
        return shown


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
