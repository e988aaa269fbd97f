"""Where contenders run: a worker process each (full runs), or all in this process (--quick).

A `ContenderHost` owns one contender's instances (one per preset width, deadline and quorum,
kept warm between cells, as a server keeps its clients) on one event loop. `ProcessBackend` puts
each host in a (forked) process of its own, so the CPU time and peak RSS a cell reports are
that contender's alone; `InlineBackend` runs the hosts here, for smoke runs and profiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import traceback
from multiprocessing.connection import Connection
from typing import Any, Protocol

from benchmarks.contenders import CONTENDERS, Contender, Setup
from benchmarks.measure import rss_mb, run_cell

__all__ = ["Backend", "ContenderHost", "InlineBackend", "ProcessBackend"]

_JOIN_TIMEOUT_S = 30.0


class ContenderHost:
    """One contender's instances, keyed by their `Setup`, and the cells it runs.

    `policy` (in `warm` and `cell`) holds the `Setup` fields past the width: `deadline_s`,
    `quorum`, `quorum_grace_s`.
    """

    def __init__(self, name: str, url: str) -> None:
        self.info = CONTENDERS[name]
        self._url = url
        self._built: dict[Setup, Contender] = {}

    async def warm(self, *, n_refs: int, turns: int = 1, **policy: Any) -> None:
        """Build the contender for this width if needed and run `turns` unmeasured turns."""
        contender = self._contender(Setup(self._url, n_refs, **policy))
        await contender.prepare(1)
        await run_cell(contender.turn, concurrency=1, turns=turns)

    async def cell(
        self, *, n_refs: int, concurrency: int, turns: int, stagger_s: float = 0.0, **policy: Any
    ) -> dict[str, Any]:
        """Run one measured cell; see `benchmarks.measure.run_cell`."""
        contender = self._contender(Setup(self._url, n_refs, **policy))
        await contender.prepare(concurrency)
        started_rss = rss_mb()
        cell = await run_cell(
            contender.turn, concurrency=concurrency, turns=turns, stagger_s=stagger_s
        )
        result = cell.as_dict()
        result["start_rss_mb"] = started_rss
        return result

    async def aclose(self) -> None:
        """Close every instance's clients."""
        for contender in self._built.values():
            await contender.aclose()
        self._built.clear()

    def _contender(self, setup: Setup) -> Contender:
        if setup not in self._built:
            self._built[setup] = self.info.build(setup)
        return self._built[setup]


class Backend(Protocol):
    """Runs commands (`warm`, `cell`) on the host of a named contender."""

    def warm(self, name: str, **params: Any) -> None:
        """Warm the named contender up; see `ContenderHost.warm`."""

    def cell(self, name: str, **params: Any) -> dict[str, Any]:
        """Run a measured cell on the named contender; see `ContenderHost.cell`."""

    def close(self) -> None:
        """Close every host (and stop its process)."""


class InlineBackend:
    """Every contender in this process, on one event loop."""

    def __init__(self, url: str, names: list[str]) -> None:
        self._runner = asyncio.Runner()
        self._hosts = {name: ContenderHost(name, url) for name in names}

    def warm(self, name: str, **params: Any) -> None:
        """Warm the named contender up."""
        self._runner.run(self._hosts[name].warm(**params))

    def cell(self, name: str, **params: Any) -> dict[str, Any]:
        """Run a measured cell on the named contender."""
        return self._runner.run(self._hosts[name].cell(**params))

    def close(self) -> None:
        """Close every host and the event loop."""
        for host in self._hosts.values():
            self._runner.run(host.aclose())
        self._runner.close()


class ProcessBackend:
    """A worker process per contender; commands and results go over pipes.

    Workers are forked from this process, which has imported everything and runs no event
    loop or thread at that point: they start in milliseconds (spawning 11 interpreters that
    each import LangChain takes half a minute on 2 cores) and begin with the same memory.
    """

    def __init__(self, url: str, names: list[str]) -> None:
        context = multiprocessing.get_context("fork")
        self._workers: dict[str, tuple[multiprocessing.process.BaseProcess, Connection]] = {}
        for name in names:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(theirs, name, url), name=f"bench-{name}", daemon=True
            )
            process.start()
            theirs.close()
            self._workers[name] = (process, ours)
        for name in names:  # every worker has imported everything before any cell runs
            self._call(name, "ready")

    def warm(self, name: str, **params: Any) -> None:
        """Warm the named contender up in its process."""
        self._call(name, "warm", params)

    def cell(self, name: str, **params: Any) -> dict[str, Any]:
        """Run a measured cell in the named contender's process."""
        result: dict[str, Any] = self._call(name, "cell", params)
        return result

    def close(self) -> None:
        """Ask every worker to close its clients and exit; kill the ones that do not."""
        for name, (process, conn) in self._workers.items():
            with contextlib.suppress(EOFError, OSError, RuntimeError):  # it may be gone
                self._call(name, "close")
            conn.close()
            process.join(_JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(_JOIN_TIMEOUT_S)
        self._workers.clear()

    def _call(self, name: str, op: str, params: dict[str, Any] | None = None) -> Any:
        _, conn = self._workers[name]
        conn.send((op, params or {}))
        ok, value = conn.recv()
        if not ok:
            raise RuntimeError(f"worker {name!r} failed on {op!r}:\n{value}")
        return value


def worker_main(conn: Connection, name: str, url: str) -> None:
    """Entry point of a worker process: serve commands for one contender until `close`."""
    # A forked child shares its parent's pages until it writes them; the first full
    # collection writes every object's header. Pay for those copies now, not in a cell.
    gc.collect()
    host = ContenderHost(name, url)
    with asyncio.Runner() as runner:
        while True:
            op, params = conn.recv()
            try:
                if op == "ready":
                    value: Any = True
                elif op == "warm":
                    value = runner.run(host.warm(**params))
                elif op == "cell":
                    value = runner.run(host.cell(**params))
                elif op == "close":
                    runner.run(host.aclose())
                    conn.send((True, None))
                    return
                else:
                    raise ValueError(f"unknown command {op!r}")
            except Exception:
                conn.send((False, traceback.format_exc()))
                continue
            conn.send((True, value))
