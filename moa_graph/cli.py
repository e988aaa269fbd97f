"""The `moa-graph` command: run a turn, list presets, draw the graph, serve the stand-in or Studio.

Bad input ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from langchain_core.runnables import RunnableConfig
from langgraph.types import Durability
from rich.console import Console
from rich.table import Table

from moa_graph.config import CONFIG_ENV_VAR, MoAConfig, Preset, config_file, load_config
from moa_graph.errors import ConfigError, MoAAggregatorError
from moa_graph.graph import build_moa_graph
from moa_graph.persistence import (
    CHECKPOINT_URL_ENV_VAR,
    CheckpointStoreError,
    ThreadBusyError,
    ThreadSummary,
    checkpoint_url,
    list_threads,
    new_thread_id,
    open_checkpointer,
    thread_lock,
)
from moa_graph.providers import missing_api_keys
from moa_graph.resolvers import configured_tools
from moa_graph.terminal import stream_turn, turn_summary
from moa_graph.usage import format_usage

__all__ = ["main"]

_PROG = "moa-graph"
_OFFLINE_HINT = "or try --offline"
_BUSY_EXIT = 75
"""`EX_TEMPFAIL`: another run holds the thread; the same command may succeed later."""
_DURABILITY: Durability = "sync"
"""Each step is stored before the next one starts: a store that fails stops the turn there,
before the aggregator is paid for, and `--resume` goes on from the last stored step."""


class _UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {_PROG} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `moa-graph` command; returns the exit status."""
    err = Console(stderr=True, highlight=False)
    # The PostgreSQL pool logs each reconnect attempt as a warning; a failure that matters
    # reaches the user as one line below.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        args = _parser().parse_args(argv)
        return int(args.handler(args))
    except (_UsageError, ConfigError) as exc:
        err.print(f"{_PROG}: error: {exc}", markup=False, soft_wrap=True)
        return 2
    except ThreadBusyError as exc:
        err.print(f"{_PROG}: error: {exc}", markup=False, soft_wrap=True)
        return _BUSY_EXIT
    except (MoAAggregatorError, CheckpointStoreError) as exc:
        err.print(f"{_PROG}: error: {exc}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print(f"{_PROG}: interrupted", markup=False)
        return 130
    except BrokenPipeError:  # `moa-graph ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the last line of defence: one line, no traceback
        err.print(f"{_PROG}: error: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        return 1


def _parser() -> _Parser:
    parser = _Parser(prog=_PROG, description="Mixture-of-Agents presets as LangGraph graphs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run one MoA turn with tools, on a stored thread")
    run.add_argument("question", nargs="?")
    _config_options(run)
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--thread", help="continue this thread (default: start a new one)")
    run.add_argument(
        "--resume", action="store_true", help="finish the thread's interrupted last turn"
    )
    _store_option(run)
    run.set_defaults(handler=_cmd_run)

    threads = commands.add_parser("threads", help="list stored threads")
    _store_option(threads)
    threads.set_defaults(handler=_cmd_threads)

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


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint-url",
        help=f"postgresql://... thread store (default: ${CHECKPOINT_URL_ENV_VAR}, else SQLite "
        "in the state directory)",
    )


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
    if args.question is None and not args.resume:
        raise _UsageError("a question is required (or --resume to finish a thread's last turn)")
    if args.resume and not args.thread:
        raise _UsageError("--resume needs --thread ID")
    with _session(args) as config:
        preset = config.preset(args.preset)
        if not args.offline:
            _require_keys(preset, config)
        tools = configured_tools(config, preset.name)
        builder = build_moa_graph(preset, tools=tools, config=config)
        thread = args.thread or new_thread_id()
        url = checkpoint_url(args.checkpoint_url)
        with thread_lock(thread, url):  # one runner per thread: a second one pays for nothing
            return asyncio.run(_run_turn(args, builder, preset, thread, url))


async def _run_turn(
    args: argparse.Namespace, builder: Any, preset: Preset, thread: str, url: str | None
) -> int:
    """One turn on a stored thread (new unless --thread), streamed or as JSON."""
    err = Console(stderr=True, highlight=False)
    async with open_checkpointer(url) as saver:
        graph = builder.compile(checkpointer=saver)
        run_config: RunnableConfig = {"configurable": {"thread_id": thread}}
        _check_last_turn(args, thread, (await graph.aget_state(run_config)).next)
        request: Any = None if args.resume else {"messages": [("user", args.question)]}
        started = time.perf_counter()
        try:
            if args.json:
                result = await graph.ainvoke(request, run_config, durability=_DURABILITY)
                summary = turn_summary(
                    preset, result, wall_s=time.perf_counter() - started, thread_id=thread
                )
                print(json.dumps(summary, indent=2, ensure_ascii=False))
                return 0
            if not args.thread:
                err.print(f"[dim]new thread {thread}[/dim]")
            usage = await stream_turn(graph, request, run_config, preset, durability=_DURABILITY)
        except MoAAggregatorError as exc:
            resume = f"the turn is saved: finish it with --thread {thread} --resume"
            raise MoAAggregatorError(exc.label, f"{exc.cause}; {resume}") from exc
        except CheckpointStoreError as exc:
            resume = f"the turn stopped there: finish it with --thread {thread} --resume"
            raise CheckpointStoreError(f"{exc}; {resume}") from exc
    wall = time.perf_counter() - started
    err.print(f"[dim]{format_usage(usage)} · {wall:.2f}s · thread {thread}[/dim]", soft_wrap=True)
    return 0


def _check_last_turn(args: argparse.Namespace, thread: str, pending: tuple[str, ...]) -> None:
    """Refuse a new question while the thread's last turn is unfinished, and a resume without.

    A question appended after an unanswered one would leave that one unanswered for good,
    and throw away the reference answers its turn already paid for.
    """
    if args.resume and not pending:
        raise _UsageError(f"thread {thread} has no unfinished turn to resume")
    if pending and not args.resume:
        before = ", ".join(sorted(set(pending)))
        raise _UsageError(
            f"thread {thread}'s last turn is unfinished (stopped before {before}): finish it "
            f"with --thread {thread} --resume, or ask on a new thread"
        )


def _cmd_threads(args: argparse.Namespace) -> int:
    async def listed() -> list[ThreadSummary]:
        async with open_checkpointer(checkpoint_url(args.checkpoint_url)) as saver:
            return await list_threads(saver)

    threads = asyncio.run(listed())
    if not threads:
        Console(stderr=True, highlight=False).print("no threads yet", markup=False)
        return 0
    table = Table(box=None)
    for column in ("thread", "last update", "turns"):
        table.add_column(column)
    for thread in threads:
        updated = thread.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(thread.thread_id, updated, str(thread.user_turns))
    Console(highlight=False).print(table)
    return 0


def _require_keys(preset: Preset, config: MoAConfig) -> None:
    specs = [*preset.reference_models, preset.aggregator] if preset.enabled else [preset.aggregator]
    missing = missing_api_keys([s for s in specs if s.enabled], config.providers)
    if missing:
        raise ConfigError(
            f"{missing[0]} is not set: export it to run preset {preset.name!r}, {_OFFLINE_HINT}"
        )


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
    """Become `langgraph dev` in the directory of `langgraph.json`, with the server's config."""
    root = _studio_root()
    if not all(importlib.util.find_spec(m) for m in ("langgraph_cli", "langgraph_api")):
        raise _UsageError("dev needs LangGraph's dev server: pip install 'moa-graph[studio]'")
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "1",
    }
    # The server's config is chosen here, once: a run can only name one of its presets, so
    # a server without a config could run nothing. Missing or broken: one error line now.
    path = config_file(args.config)
    load_config(path)
    # The server runs in `root`: a path relative to here would point elsewhere there.
    env[CONFIG_ENV_VAR] = str(path.absolute())
    Console(stderr=True, highlight=False).print(
        f"{_PROG} dev: MoA config {path.absolute()}", markup=False
    )
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
