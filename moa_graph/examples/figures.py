"""Pictures of a MoA graph and of one turn, drawn with matplotlib, offline.

- `draw_graph(graph.get_graph())`: the graph's own nodes and edges, in rows from START to
  END (solid: always taken; dashed: conditional). LangGraph's other drawings need more:
  `draw_png()` needs pygraphviz, `draw_mermaid_png()` calls a web service (or a headless
  Chromium), and `draw_mermaid()` is text that needs a Mermaid renderer.
- `timed_turn(graph, request, config)`: runs one turn and records when each reference, each
  aggregator step and each tools step ran, from the graph's `custom` events and node updates.
- `draw_timeline(spans)`: those spans as bars, one row per reference, then the aggregator.

matplotlib comes with the `bench` extra (part of `test`). The notebooks use these.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.graph import Edge, Graph
from langgraph.graph.state import CompiledStateGraph
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["Span", "draw_graph", "draw_timeline", "timed_turn"]

_NODE_W, _NODE_H, _ROW_H = 1.6, 0.5, 1.0
_COLOURS = {"reference": "#4c72b0", "aggregator": "#dd8452", "tools": "#55a868"}


@dataclass(frozen=True)
class Span:
    """One stretch of a turn's wall time, in seconds since the turn started."""

    kind: Literal["reference", "aggregator", "tools"]
    name: str
    """The row it is drawn in: a reference's label, `aggregator <label>` or `tools`."""
    start_s: float
    end_s: float


def timed_turn(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    request: Any,
    config: RunnableConfig | None = None,
) -> tuple[dict[str, Any], list[Span]]:
    """Run one turn of a compiled MoA graph; return its final state and its timeline.

    A reference's bar ends at its `ok` (or `failed`) event and lasts its `latency_ms`; an
    aggregator step lasts from its `moa_aggregator` event to the aggregator's update, a
    tools step from the aggregator's update to the tools' update. Times are taken as the
    events arrive, in this process. The references come first, in preset order.
    """
    references: dict[tuple[int, int], Span] = {}  # by (layer, index): preset order
    steps: list[Span] = []
    started: dict[tuple[int, int], float] = {}
    state: dict[str, Any] = {}
    aggregator, step_start, last_update = "aggregator", 0.0, 0.0
    # With a list of modes the stream yields (mode, chunk) pairs.
    stream = graph.stream(request, config, stream_mode=["custom", "updates", "values"])
    t0 = time.perf_counter()
    for mode, chunk in cast(Iterator[tuple[str, Any]], stream):
        now = time.perf_counter() - t0
        if mode == "values":
            state = chunk
        elif mode == "custom" and chunk.get("type") == "moa_reference":
            slot = (chunk.get("layer", 1), chunk["index"])
            if chunk["status"] == "running":
                started[slot] = now
            elif slot in started:
                latency = chunk.get("latency_ms")
                start = now - latency / 1000 if latency is not None else started[slot]
                references[slot] = Span("reference", chunk["label"], max(start, 0.0), now)
        elif mode == "custom" and chunk.get("type") == "moa_aggregator":
            aggregator, step_start = f"aggregator {chunk['label']}", now
        elif mode == "updates":
            if "aggregator" in chunk:
                steps.append(Span("aggregator", aggregator, step_start, now))
            elif "tools" in chunk:
                steps.append(Span("tools", "tools", last_update, now))
            last_update = now
    return state, [*(references[slot] for slot in sorted(references)), *steps]


def draw_timeline(spans: list[Span], *, title: str = "One MoA turn") -> Figure:
    """A bar per span, one row per name in the order the spans come, labelled in ms."""
    rows = list(dict.fromkeys(span.name for span in spans))
    end = max((span.end_s for span in spans), default=1.0)
    figure = Figure(figsize=(7.5, 0.4 * len(rows) + 1.3), dpi=80, layout="constrained")
    axes = figure.subplots()
    for span in spans:
        row, width = rows.index(span.name), span.end_s - span.start_s
        axes.barh(row, width, left=span.start_s, height=0.6, color=_COLOURS[span.kind])
        label = f"{width * 1000:.0f} ms"
        if width > end / 8:  # inside a wide bar, beside a narrow one
            axes.text(span.start_s + width / 2, row, label, ha="center", va="center", color="w")
        else:
            axes.text(span.end_s, row, f" {label}", va="center", fontsize=8)
    axes.set_yticks(range(len(rows)), rows)
    axes.invert_yaxis()
    axes.set_xlim(0, end * 1.1)
    axes.set_xlabel("seconds since the turn started")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return figure


def draw_graph(graph: Graph, *, title: str = "") -> Figure:
    """The nodes and edges of `graph` (`compiled.get_graph()`), in rows from START to END.

    Rows are the longest path from START once the edges that go back (loops) are set
    aside. An edge to the next row is a straight arrow; a loop, or an edge that skips rows
    in one column, is an arc beside the boxes.
    """
    back = _back_edges(graph)
    rank = _ranks(graph, back)
    rows: dict[int, list[str]] = defaultdict(list)
    for node_id in graph.nodes:
        rows[rank[node_id]].append(node_id)
    where = {
        node_id: ((col - (len(row) - 1) / 2) * (_NODE_W + 0.6), -r * _ROW_H)
        for r, row in rows.items()
        for col, node_id in enumerate(row)
    }
    width = max(len(row) for row in rows.values())
    figure = Figure(figsize=(1.9 * width + 2.8, 0.62 * len(rows) + 0.4), dpi=72)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    for node_id, (x, y) in where.items():
        _draw_node(axes, node_id, graph.nodes[node_id].name, x, y)
    for edge in graph.edges:
        _draw_edge(
            axes, edge, where, loop=edge in back, rows=abs(rank[edge.target] - rank[edge.source])
        )
    xs = [x for x, _ in where.values()]
    axes.set_xlim(min(xs) - _NODE_W - 0.6, max(xs) + _NODE_W + 0.6)
    axes.set_ylim(-(len(rows) - 1) * _ROW_H - 0.5, 0.7 if title else 0.4)
    if title:
        axes.text((min(xs) + max(xs)) / 2, 0.5, title, ha="center", fontsize=11)
    figure.text(0.01, 0.01, "dashed: a conditional edge", fontsize=8, color="#555555")
    return figure


def _draw_node(axes: Axes, node_id: str, name: str, x: float, y: float) -> None:
    terminal = name in ("__start__", "__end__")
    if terminal:  # START / END, and a subgraph's as `moa: START`
        prefix = node_id.rpartition(":")[0]
        name = f"{prefix}: {name.strip('_').upper()}" if prefix else name.strip("_").upper()
    axes.add_patch(
        FancyBboxPatch(
            (x - _NODE_W / 2, y - _NODE_H / 2),
            _NODE_W,
            _NODE_H,
            boxstyle="round,pad=0.02,rounding_size=0.2",
            facecolor="#eeeeee" if terminal else "#dbe6f4",
            edgecolor="#333333",
        )
    )
    axes.text(x, y, name, ha="center", va="center")


def _draw_edge(
    axes: Axes, edge: Edge, where: dict[str, tuple[float, float]], *, loop: bool, rows: int
) -> None:
    (x0, y0), (x1, y1) = where[edge.source], where[edge.target]
    down = 1 if y1 < y0 else -1
    if rows == 1 and not (loop and x0 == x1):  # to the next row: straight, a loop bent a little
        tail, head = (x0, y0 - down * _NODE_H / 2), (x1, y1 + down * _NODE_H / 2)
        rad = 0.3 if loop else 0.0
    else:  # beside the boxes: loops on the left, edges skipping rows on the right
        side = -1 if x0 < 0 or (x0 == 0 and loop) else 1
        tail, head = (x0 + side * _NODE_W / 2, y0), (x1 + side * _NODE_W / 2, y1)
        rad = 0.35 * side * (-1 if down == 1 else 1)
    axes.add_patch(
        FancyArrowPatch(
            tail,
            head,
            arrowstyle="-|>",
            mutation_scale=12,
            connectionstyle=f"arc3,rad={rad}",
            linestyle="--" if edge.conditional else "-",
            color="#555555",
        )
    )


def _back_edges(graph: Graph) -> set[Edge]:
    """Edges into a node still being explored by a depth-first walk from START: the loops."""
    out: dict[str, list[Edge]] = defaultdict(list)
    for edge in graph.edges:
        out[edge.source].append(edge)
    back: set[Edge] = set()
    done: set[str] = set()
    path: set[str] = set()

    def walk(node_id: str) -> None:
        path.add(node_id)
        for edge in out[node_id]:
            if edge.target in path:
                back.add(edge)
            elif edge.target not in done:
                walk(edge.target)
        path.discard(node_id)
        done.add(node_id)

    for node_id in graph.nodes:  # START first: nodes keep the order they were added in
        if node_id not in done:
            walk(node_id)
    return back


def _ranks(graph: Graph, back: set[Edge]) -> dict[str, int]:
    """Each node's row: the longest path to it from START along the forward edges."""
    rank = dict.fromkeys(graph.nodes, 0)
    for _ in graph.nodes:  # relax |nodes| times: enough for a DAG's longest paths
        for edge in graph.edges:
            if edge not in back:
                rank[edge.target] = max(rank[edge.target], rank[edge.source] + 1)
    return rank
