"""The `moa-graph` command: init, run, threads, presets, graph, stub-server, dev and eval.

`init` writes a starter config (`moa_graph.starter`), `run` asks a question on a stored
thread (`moa_graph.run_command`), the others list, draw and serve.

Bad input ends with one line on stderr and a non-zero exit, never a traceback: status 2 for
a command that cannot run as typed (bad arguments, a bad config, an unknown thread, an
empty question), 75 for a busy thread, 1 for a failed turn, 130 for Ctrl-C. Only the
standard library is imported up front, so `moa-graph --help` answers at once; each command
imports what it needs.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from moa_graph import __version__
from moa_graph.errors import (
    CheckpointStoreError,
    ConfigError,
    MoAAggregatorError,
    ThreadBusyError,
)
from moa_graph.evaluation.cli import add_eval_parser

if TYPE_CHECKING:
    from moa_graph.config import MoAConfig

__all__ = ["main"]

_PROG = "moa-graph"
_OFFLINE_HINT = "or try --offline"
_USAGE_EXIT = 2
"""A command that cannot run as typed; nothing was asked of any model."""
_BUSY_EXIT = 75
"""`EX_TEMPFAIL`: another run holds the thread; the same command may succeed later."""
_INTERRUPTED_EXIT = 130
"""128 + SIGINT, as a shell reports a command that Ctrl-C stopped."""
_CHECKPOINT_URL_ENV_VAR = "MOA_GRAPH_CHECKPOINT_URL"
"""`persistence.CHECKPOINT_URL_ENV_VAR`, spelled out for the help text: importing the
store's module (LangGraph's checkpointers) would make `--help` slow."""
_QUESTION_CHARS = 60
"""Characters of a thread's first question `moa-graph threads` shows."""


class _UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class _Interrupted(Exception):
    """Ctrl-C stopped a turn; the message says how to finish it, if anything was stored."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {_PROG} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `moa-graph` command; returns the exit status."""
    # The PostgreSQL pool logs each reconnect attempt as a warning; a failure that matters
    # reaches the user as one line below.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        args = _parser().parse_args(argv)
        return int(args.handler(args))
    except (_UsageError, ConfigError) as exc:
        return _fail(f"error: {exc}", _USAGE_EXIT)
    except ThreadBusyError as exc:
        return _fail(f"error: {exc}", _BUSY_EXIT)
    except (MoAAggregatorError, CheckpointStoreError) as exc:
        return _fail(f"error: {exc}", 1)
    except _Interrupted as exc:
        return _fail(f"interrupted{exc}", _INTERRUPTED_EXIT, newline=True)
    except KeyboardInterrupt:
        return _fail("interrupted", _INTERRUPTED_EXIT, newline=True)
    except BrokenPipeError:  # `moa-graph ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the last line of defence: one line, no traceback, no key
        from moa_graph.failures import describe_error

        return _fail(f"error: {describe_error(exc)}", 1)


def _fail(message: str, status: int, *, newline: bool = False) -> int:
    """Print `moa-graph: <message>` as one line on stderr (after a line end after a ^C)."""
    line = " ".join(f"{_PROG}: {message}".splitlines())
    sys.stderr.write(("\n" if newline else "") + line + "\n")
    sys.stderr.flush()
    return status


def _parser() -> _Parser:
    parser = _Parser(prog=_PROG, description="Mixture-of-Agents presets as LangGraph graphs.")
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    init = commands.add_parser("init", help="write a commented starter moa.yaml")
    init.add_argument(
        "path", nargs="?", default="moa.yaml", help="file to write (default: ./moa.yaml)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=_cmd_init)

    run = commands.add_parser("run", help="run one MoA turn with tools, on a stored thread")
    run.add_argument("question", nargs="?", help="the question; - reads it from stdin")
    run.add_argument("--file", metavar="PATH", help="read the question from this file (UTF-8)")
    _config_options(run)
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="after the references' table, print each one's answer (or why it failed)",
    )
    run.add_argument("--thread", metavar="ID", help="continue this stored thread")
    run.add_argument(
        "--new-thread",
        action="store_true",
        help="start a new thread (with --thread: named ID, which must not exist yet)",
    )
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
    add_eval_parser(commands)  # `moa-graph eval`: prints its own one-line errors
    return parser


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint-url",
        help=f"postgresql://... thread store (default: ${_CHECKPOINT_URL_ENV_VAR}, else SQLite "
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
        from moa_graph.config import load_config

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


# -- init ---------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from moa_graph.starter import StarterExistsError, next_steps, write_starter

    try:
        path = write_starter(args.path, force=args.force)
    except StarterExistsError as exc:
        raise _UsageError(str(exc)) from None
    except OSError as exc:
        raise _UsageError(f"cannot write {args.path}: {exc.strerror or exc}") from None
    print(next_steps(path))
    return 0


# -- run, threads ----------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from moa_graph.run_command import run_command

    return run_command(args)


def _cmd_threads(args: argparse.Namespace) -> int:
    import asyncio

    from moa_graph.persistence import (
        ThreadSummary,
        checkpoint_url,
        list_threads,
        open_checkpointer,
    )

    async def listed() -> list[ThreadSummary]:
        async with open_checkpointer(checkpoint_url(args.checkpoint_url)) as saver:
            return await list_threads(saver)

    threads = asyncio.run(listed())
    if not threads:
        print("no threads yet", file=sys.stderr)
        return 0
    rows = [("thread", "last update", "turns", "first question")]
    for thread in threads:
        updated = thread.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        question = _trimmed(thread.first_question, _QUESTION_CHARS)
        rows.append((thread.thread_id, updated, str(thread.user_turns), question))
    width = max(len(row[0]) for row in rows)
    for thread_id, updated, turns, question in rows:
        print(f"{thread_id:<{width}}  {updated:<19}  {turns:>5}  {question}".rstrip())
    return 0


def _trimmed(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# -- presets, graph, stub-server -------------------------------------------------------------


def _cmd_presets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

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
        from moa_graph.prices import price_note

        note = price_note(
            spec
            for preset in config.presets.values()
            for spec in (*preset.reference_models, preset.aggregator)
        )
        if note:
            Console(stderr=True, highlight=False).print(f"[dim]{note}[/dim]", soft_wrap=True)
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from moa_graph.graph import build_moa_graph
    from moa_graph.resolvers import configured_tools

    with _session(args) as config:
        preset = config.preset(args.preset)
        tools = configured_tools(config, preset.name)
        graph = build_moa_graph(preset, tools=tools, config=config).compile()
        print(graph.get_graph().draw_mermaid())
    return 0


def _cmd_stub_server(args: argparse.Namespace) -> int:
    import asyncio

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
    from moa_graph.config import CONFIG_ENV_VAR, config_file, load_config

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
    print(f"{_PROG} dev: MoA config {path.absolute()}", file=sys.stderr, flush=True)
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
    # `python -m moa_graph.cli` runs this file as `__main__`; `moa_graph.run_command` imports
    # `moa_graph.cli`, a second copy whose error classes this copy would not catch.
    from moa_graph.cli import main as _main

    sys.exit(_main())
