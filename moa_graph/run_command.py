"""The `moa-graph run` command: the question, the thread it goes on, the turn, Ctrl-C.

The question is the argument, stdin (`-`) or `--file`, and a blank one is refused before
anything starts. The thread must be what the command says: `--thread ID` a stored one,
`--thread ID --new-thread` a new one, `--resume` one whose last turn is unfinished; each
mismatch is one line, before any model is asked. Ctrl-C ends with the command that
finishes the turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from rich.console import Console

from moa_graph.cli import _OFFLINE_HINT, _PROG, _Interrupted, _session, _UsageError
from moa_graph.errors import CheckpointStoreError, ConfigError, MoAAggregatorError
from moa_graph.graph import build_moa_graph
from moa_graph.persistence import (
    checkpoint_url,
    new_thread_id,
    open_checkpointer,
    redact_url,
    thread_lock,
)
from moa_graph.providers import missing_api_keys
from moa_graph.resolvers import configured_tools
from moa_graph.terminal import stream_turn, turn_summary
from moa_graph.usage import format_usage

if TYPE_CHECKING:
    from langgraph.types import Durability

    from moa_graph.config import MoAConfig, Preset

__all__ = ["run_command"]

_DURABILITY: Durability = "sync"
"""Each step is stored before the next one starts: a store that fails stops the turn there,
before the aggregator is paid for, and `--resume` goes on from the last stored step."""


def run_command(args: argparse.Namespace) -> int:
    """Run `moa-graph run` with its parsed arguments; returns the exit status.

    Raises:
        _UsageError: The question, the thread or the options do not fit (nothing is asked).
        _Interrupted: Ctrl-C stopped the turn.
        ConfigError, ThreadBusyError, MoAAggregatorError, CheckpointStoreError: As `main`
            reports them.
    """
    question = _question(args)
    if args.resume and not args.thread:
        raise _UsageError("--resume needs --thread ID")
    if args.resume and args.new_thread:
        raise _UsageError("--new-thread starts a thread: there is nothing in it to --resume")
    with _session(args) as config:
        preset = config.preset(args.preset)
        if not args.offline:
            _require_keys(preset, config)
        tools = configured_tools(config, preset.name)
        builder = build_moa_graph(preset, tools=tools, config=config)
        thread = args.thread or new_thread_id()
        url = checkpoint_url(args.checkpoint_url)
        with thread_lock(thread, url):  # one runner per thread: a second one pays for nothing
            return asyncio.run(_run_turn(args, question, builder, preset, thread, url))


def _question(args: argparse.Namespace) -> str | None:
    """The question: the argument, stdin (`-`) or `--file`; None when resuming.

    Read before anything is started, so that a missing or blank one costs nothing.
    """
    given = [source for source in (args.question, args.file) if source is not None]
    if args.resume:
        if given:
            raise _UsageError("--resume finishes the thread's last turn: it takes no question")
        return None
    if len(given) > 1:
        raise _UsageError("give the question once: as an argument, - for stdin, or --file PATH")
    if not given:
        raise _UsageError("a question is required (or --resume to finish a thread's last turn)")
    if args.file is not None:
        where, text = f"--file {args.file}", _read_text(args.file)
    elif args.question == "-":
        where, text = "stdin", _decoded(sys.stdin.buffer.read(), "stdin")
    else:
        where, text = "", args.question
    if not text.strip():
        raise _UsageError(f"the question is empty{f' ({where})' if where else ''}")
    return text.strip()


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"--file {path}: {exc.strerror or exc}") from None
    return _decoded(data, f"--file {path}")


def _decoded(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _UsageError(f"{where}: not UTF-8 text (byte {exc.start})") from None


async def _run_turn(
    args: argparse.Namespace,
    question: str | None,
    builder: Any,
    preset: Preset,
    thread: str,
    url: str | None,
) -> int:
    """One turn on a stored thread (new unless --thread), streamed or as JSON."""
    async with open_checkpointer(url) as saver:
        graph = builder.compile(checkpointer=saver)
        run_config: RunnableConfig = {"configurable": {"thread_id": thread}}
        state = await graph.aget_state(run_config)
        is_new = state.created_at is None
        _check_thread(args, thread, is_new=is_new, pending=state.next)
        request: Any = None if question is None else {"messages": [("user", question)]}
        started = time.perf_counter()
        try:
            if args.json:
                result = await graph.ainvoke(request, run_config, durability=_DURABILITY)
                summary = turn_summary(
                    preset, result, wall_s=time.perf_counter() - started, thread_id=thread
                )
                print(json.dumps(summary, indent=2, ensure_ascii=False))
                return 0
            if is_new:
                _note(f"new thread {thread}")
            usage = await stream_turn(
                graph,
                request,
                run_config,
                preset,
                durability=_DURABILITY,
                verbose=args.verbose,
                references=state.values.get("references", []) if args.resume else (),
            )
        except MoAAggregatorError as exc:
            resume = f"the turn is saved: finish it with {_resume_command(args, thread)}"
            raise MoAAggregatorError(exc.label, f"{exc.cause}; {resume}") from exc
        except CheckpointStoreError as exc:
            resume = f"the turn stopped there: finish it with {_resume_command(args, thread)}"
            raise CheckpointStoreError(f"{exc}; {resume}") from exc
        except asyncio.CancelledError:  # Ctrl-C: `asyncio.run` cancels this task
            raise await _interrupted(args, graph, run_config, thread) from None
    wall = time.perf_counter() - started
    _note(f"{format_usage(usage)} · {wall:.2f}s · thread {thread}")
    return 0


async def _interrupted(
    args: argparse.Namespace, graph: Any, run_config: Any, thread: str
) -> _Interrupted:
    """What to say after Ctrl-C: how to finish the turn, if its start was stored."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # this task goes on, to read the thread once more
    if (await graph.aget_state(run_config)).next:
        return _Interrupted(f"; the turn is saved: finish it with {_resume_command(args, thread)}")
    return _Interrupted(" before the turn was stored; nothing to resume")


def _resume_command(args: argparse.Namespace, thread: str) -> str:
    """The command that finishes this run's turn: its own options, minus the question."""
    words = [_PROG, "run", "--thread", thread, "--resume"]
    for flag, value in (
        ("--config", args.config),
        ("--preset", args.preset),
        ("--checkpoint-url", args.checkpoint_url and redact_url(args.checkpoint_url)),
    ):
        words += [flag, value] if value else []
    switches = (("--offline", args.offline), ("--json", args.json), ("--verbose", args.verbose))
    words += [flag for flag, on in switches if on]
    return shlex.join(words)


def _check_thread(
    args: argparse.Namespace, thread: str, *, is_new: bool, pending: tuple[str, ...]
) -> None:
    """Refuse a thread that is not what the command says it is, before any model is asked.

    `--thread ID` must name a stored thread (a typo would start a new conversation
    unnoticed) unless `--new-thread` says to start it, which an existing one refuses. And
    a new question waits while the thread's last turn is unfinished: appended after an
    unanswered one it would leave that one unanswered for good, and throw away the
    reference answers its turn already paid for.
    """
    if is_new and args.thread and not args.new_thread:
        listing = f"{_PROG} threads" + _store_words(args)
        start = "" if args.resume else f"; to start a thread named {thread}, add --new-thread"
        raise _UsageError(f"thread {thread} not found: see {listing}{start}")
    if not is_new and args.new_thread:
        raise _UsageError(f"thread {thread} already exists: continue it without --new-thread")
    if args.resume and not pending:
        raise _UsageError(f"thread {thread} has no unfinished turn to resume")
    if pending and not args.resume:
        before = ", ".join(sorted(set(pending)))
        raise _UsageError(
            f"thread {thread}'s last turn is unfinished (stopped before {before}): finish it "
            f"with --thread {thread} --resume, or ask on a new thread"
        )


def _store_words(args: argparse.Namespace) -> str:
    """` --checkpoint-url URL` (password hidden) when the command named a store."""
    if not args.checkpoint_url:
        return ""
    return " " + shlex.join(["--checkpoint-url", redact_url(args.checkpoint_url)])


def _note(text: str) -> None:
    """A dim line on stderr, beside the answer on stdout."""
    Console(stderr=True, highlight=False).print(text, style="dim", markup=False, soft_wrap=True)


def _require_keys(preset: Preset, config: MoAConfig) -> None:
    specs = [*preset.reference_models, preset.aggregator] if preset.enabled else [preset.aggregator]
    if preset.enabled:  # the stages' models too: a missing key must not cost the references
        specs += [stage.model for stage in (preset.gate, preset.judge) if stage is not None]
    missing = missing_api_keys([s for s in specs if s.enabled], config.providers)
    if missing:
        raise ConfigError(
            f"{missing[0]} is not set: export it to run preset {preset.name!r}, {_OFFLINE_HINT}"
        )
