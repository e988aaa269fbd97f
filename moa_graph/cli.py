"""The `moa-graph` command: run a turn, list presets, draw the graph, serve the stand-in or Studio.

Bad input ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from moa_graph.config import CONFIG_ENV_VAR, MoAConfig, Preset, config_file, load_config
from moa_graph.errors import ConfigError, MoAAggregatorError
from moa_graph.graph import build_moa_graph
from moa_graph.providers import missing_api_keys
from moa_graph.resolvers import configured_tools
from moa_graph.trimming import message_text
from moa_graph.usage import Usage, add_usage, format_usage

__all__ = ["main"]

_PROG = "moa-graph"
_OFFLINE_HINT = "or try --offline"


class _UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {_PROG} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `moa-graph` command; returns the exit status."""
    err = Console(stderr=True, highlight=False)
    try:
        args = _parser().parse_args(argv)
        return int(args.handler(args))
    except (_UsageError, ConfigError) as exc:
        err.print(f"{_PROG}: error: {exc}", markup=False, soft_wrap=True)
        return 2
    except MoAAggregatorError as exc:
        err.print(f"{_PROG}: error: {exc}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print(f"{_PROG}: interrupted", markup=False)
        return 130
    except Exception as exc:  # the last line of defence: one line, no traceback
        err.print(f"{_PROG}: error: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        return 1


def _parser() -> _Parser:
    parser = _Parser(prog=_PROG, description="Mixture-of-Agents presets as LangGraph graphs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run one MoA turn with tools")
    run.add_argument("question")
    _config_options(run)
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(handler=_cmd_run)

    presets = commands.add_parser("presets", help="list the presets and their models")
    _config_options(presets, preset=False)
    presets.set_defaults(handler=_cmd_presets)

    graph = commands.add_parser("graph", help="print the graph as Mermaid text")
    _config_options(graph)
    graph.set_defaults(handler=_cmd_graph)

    stub = commands.add_parser("stub-server", help="run the offline OpenAI-compatible stand-in")
    stub.add_argument("--host", default="127.0.0.1")
    stub.add_argument("--port", type=int, default=8765)
    stub.add_argument("--config", help="stand-in behaviour file (YAML or JSON)")
    stub.set_defaults(handler=_cmd_stub_server)

    dev = commands.add_parser("dev", help="serve the graph to LangGraph Studio (langgraph dev)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=2024)
    dev.add_argument(
        "--config", help="MoA config file (default: $MOA_GRAPH_CONFIG, ./moa.yaml, ...)"
    )
    dev.add_argument("--no-reload", action="store_true", help="do not reload on code changes")
    dev.set_defaults(handler=_cmd_dev)
    return parser


def _config_options(parser: argparse.ArgumentParser, *, preset: bool = True) -> None:
    if preset:
        parser.add_argument("--preset", help="preset name (default: the config's default)")
    parser.add_argument(
        "--config", help="config file (default: $MOA_GRAPH_CONFIG, ./moa.yaml, ...)"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the bundled demo preset on the built-in stand-in server (no network, no keys)",
    )


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[MoAConfig]:
    """The config to use; with --offline, the demo config on a running stand-in server."""
    if not args.offline:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; {_OFFLINE_HINT}" if args.config is None else str(exc)
            ) from None
        yield config
        return
    from moa_graph.testing import StubServer, offline_config, offline_stub_models

    with StubServer(models=offline_stub_models()) as url:
        yield offline_config(url)


# -- run ----------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    with _session(args) as config:
        preset = config.preset(args.preset)
        if not args.offline:
            _require_keys(preset, config)
        tools = configured_tools(config, preset.name)
        graph = build_moa_graph(preset, tools=tools, config=config).compile()
        request: Any = {"messages": [("user", args.question)]}
        started = time.perf_counter()
        if args.json:
            result = asyncio.run(graph.ainvoke(request))
            summary = _summary(preset, result, wall_s=time.perf_counter() - started)
            print(json.dumps(summary, indent=2, ensure_ascii=False))
        else:
            usage = asyncio.run(_stream(graph, request, preset))
            wall = time.perf_counter() - started
            Console(stderr=True, highlight=False).print(
                f"[dim]{format_usage(usage)} · {wall:.2f}s[/dim]", soft_wrap=True
            )
    return 0


def _require_keys(preset: Preset, config: MoAConfig) -> None:
    specs = [*preset.reference_models, preset.aggregator] if preset.enabled else [preset.aggregator]
    missing = missing_api_keys([s for s in specs if s.enabled], config.providers)
    if missing:
        raise ConfigError(
            f"{missing[0]} is not set: export it to run preset {preset.name!r}, {_OFFLINE_HINT}"
        )


async def _stream(graph: Any, request: Any, preset: Preset) -> Usage | None:
    """Show the references live on stderr, then stream the aggregator's answer to stdout.

    Returns the turn's usage, summed from the node updates as the graph's reducer does.
    """
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    board = _ReferenceBoard(preset)
    usage: Usage | None = None
    streamed = False
    with Live(board.render(), console=err, refresh_per_second=12, transient=False) as live:
        async for mode, chunk in graph.astream(
            request, stream_mode=["custom", "messages", "updates"]
        ):
            if mode == "custom" and chunk.get("type") == "moa_reference":
                board.update(chunk)
                live.update(board.render())
            elif mode == "custom" and chunk.get("type") == "moa_aggregator":
                live.stop()  # the references are done; the answer takes over the terminal
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
    if streamed:
        out.print()
    return usage


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
        self.rows: dict[int, dict[str, Any]] = {}

    def update(self, event: dict[str, Any]) -> None:
        self.rows[event["index"]] = event

    def render(self) -> Table:
        table = Table(title=f"MoA preset {self.preset.name}", title_justify="left", box=None)
        table.add_column("#", justify="right")
        table.add_column("reference")
        table.add_column("status")
        for index in sorted(self.rows):
            row = self.rows[index]
            status = row["status"]
            shown = "done" if status == "ok" else status
            if row.get("latency_ms") is not None:
                shown += f" in {row['latency_ms'] / 1000:.2f}s"
            table.add_row(
                str(index + 1), row["label"], Text(shown, style=self._STYLE.get(status, ""))
            )
        table.caption = f"aggregator: {self.preset.aggregator.label}"
        table.caption_justify = "left"
        return table


def _summary(preset: Preset, result: dict[str, Any], *, wall_s: float) -> dict[str, Any]:
    messages: list[BaseMessage] = result["messages"]
    results = {m.tool_call_id: message_text(m) for m in messages if isinstance(m, ToolMessage)}
    tool_calls = [
        {"name": call["name"], "args": call["args"], "result": results.get(call["id"] or "")}
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
    ]
    return {
        "preset": preset.name,
        "aggregator": preset.aggregator.label,
        "answer": message_text(messages[-1]),
        "references": result.get("references", []),
        "tool_calls": tool_calls,
        "usage": result.get("usage"),
        "wall_s": round(wall_s, 3),
    }


# -- presets, graph, stub-server -------------------------------------------------------------


def _cmd_presets(args: argparse.Namespace) -> int:
    with _session(args) as config:
        table = Table(box=None)
        for column in ("preset", "enabled", "reference models", "aggregator"):
            table.add_column(column)
        for name, preset in config.presets.items():
            refs = "\n".join(
                m.label + ("" if m.enabled else " (disabled)") for m in preset.reference_models
            )
            mark = " (default)" if name == config.default_preset else ""
            table.add_row(
                name + mark, "yes" if preset.enabled else "no", refs, preset.aggregator.label
            )
        Console(highlight=False).print(table)
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    with _session(args) as config:
        preset = config.preset(args.preset)
        tools = configured_tools(config, preset.name)
        graph = build_moa_graph(preset, tools=tools, config=config).compile()
        print(graph.get_graph().draw_mermaid())
    return 0


def _cmd_stub_server(args: argparse.Namespace) -> int:
    from moa_graph.testing.server import load_stub_config, serve

    models, default = load_stub_config(args.config) if args.config else ({}, None)
    if not args.config:
        from moa_graph.testing import offline_stub_models

        models = offline_stub_models()

    def ready(url: str) -> None:
        print(f"stand-in server on {url} (Ctrl-C stops it)", flush=True)

    asyncio.run(
        serve(host=args.host, port=args.port, models=models, default=default, on_ready=ready)
    )
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    """Become `langgraph dev` in the directory of `langgraph.json`, with the config pinned."""
    root = _studio_root()
    if not all(importlib.util.find_spec(m) for m in ("langgraph_cli", "langgraph_api")):
        raise _UsageError("dev needs LangGraph's dev server: pip install 'moa-graph[studio]'")
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "1",
    }
    err = Console(stderr=True, highlight=False)
    try:
        path = config_file(args.config)
    except ConfigError:
        err.print(
            f"{_PROG} dev: no MoA config found yet; choose one per run in Studio (config_path)",
            markup=False,
        )
    else:
        load_config(path)  # a broken config is reported now, not at the first run
        # The server runs in `root`: a path relative to here would point elsewhere there.
        env[CONFIG_ENV_VAR] = str(path.absolute())
        err.print(f"{_PROG} dev: MoA config {path.absolute()}", markup=False)
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser"]
    command += ["--host", args.host, "--port", str(args.port)]
    command += ["--no-reload"] if args.no_reload else []
    os.chdir(root)
    # exec, not a child process: Ctrl-C reaches the server directly and it shuts down cleanly.
    os.execve(sys.executable, command, env)


def _studio_root() -> Path:
    """The directory holding `langgraph.json`: this checkout's, else the current one."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "langgraph.json").is_file():
            return root
    raise _UsageError(
        "no langgraph.json found: run dev in a moa_graph checkout installed with "
        "pip install -e '.[studio]'"
    )


if __name__ == "__main__":
    sys.exit(main())
