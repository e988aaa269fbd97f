"""The quorum of a layer's fan-out: once K references answered, the rest are cut.

A preset with `quorum: K` gives each layer's tasks one shared id (`ReferenceTask.quorum_id`).
Every slot of that layer reports its outcome to the layer's `Quorum` (a process-wide table
by id, so the graph's parallel `reference` tasks, threads under `invoke` and asyncio tasks
under `ainvoke`, find the same one); a slot still waiting for its model when the K-th `ok`
answer arrives waits `quorum_grace_s` more, then stops (its request cancelled under
`ainvoke`) and is recorded as cut. A quorum that cannot be reached (too many failures)
changes nothing: every slot runs to its own end, as without one. The table forgets a layer
once every slot reported (a cancelled slot reports as not `ok`), or an hour after it began.
A layer resumed from a checkpoint counts afresh: the slots that already answered do not run
again, so only the ones that run count toward its quorum.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from typing import Any, TypeVar

from langchain_core.runnables.config import ContextThreadPoolExecutor

from moa_graph.state import ReferenceTask

__all__ = ["LimitReached", "Quorum", "QuorumCut", "quorum_for", "report"]

_T = TypeVar("_T")


class QuorumCut(Exception):
    """The layer's quorum was reached, and its grace ran out, before this slot answered."""


class LimitReached(Exception):
    """The slot's own time limit ran out while it waited (before any quorum cut it)."""


class Quorum:
    """One layer's count of `ok` answers, and who is waiting for it to reach `needed`."""

    def __init__(self, needed: int, size: int, grace_s: float) -> None:
        self.needed = needed
        self.size = size
        self.grace_s = grace_s
        self._ok = 0
        self._reported = 0
        self._reached_at: float | None = None
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.created = time.monotonic()

    @property
    def reached(self) -> bool:
        """Whether `needed` answers are in."""
        return self._reached_at is not None

    def report(self, *, ok: bool) -> bool:
        """Count one slot's outcome; True once every slot of the layer reported."""
        with self._lock:
            self._reported += 1
            self._ok += ok
            listeners: list[Callable[[], None]] = []
            if ok and self._ok == self.needed:
                self._reached_at = time.monotonic()
                listeners, self._listeners = self._listeners, []
            done = self._reported >= self.size
        for listener in listeners:
            listener()
        return done

    def on_reached(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from any thread) when the quorum is reached; at once if it is."""
        with self._lock:
            if self._reached_at is None:
                self._listeners.append(listener)
                return
        listener()

    def grace_left(self) -> float:
        """Seconds of grace left after the quorum was reached (0 when none)."""
        if self._reached_at is None:
            return 0.0
        return max(0.0, self._reached_at + self.grace_s - time.monotonic())

    def reached_future(self) -> Future[None]:
        """A future that completes when the quorum is reached (for a thread's wait)."""
        future: Future[None] = Future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        self.on_reached(done)
        return future

    def areached(self) -> asyncio.Future[None]:
        """An asyncio future of the running loop that completes when the quorum is reached."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(done)

        self.on_reached(wake)
        return future

    def within(self, wait: float | None, call: Callable[[], _T]) -> _T:
        """Run `call` in a thread and wait for it: its `wait` limit, or the quorum and grace.

        Raises:
            QuorumCut: The quorum was reached and the grace ran out first.
            LimitReached: `wait` ran out first.
        """
        if self._over():
            raise QuorumCut()  # a slot that starts after the cut is not sent at all
        started = time.monotonic()
        pool = ContextThreadPoolExecutor(max_workers=1)
        try:
            future: Future[Any] = pool.submit(call)
            futures_wait([future, self.reached_future()], timeout=wait, return_when=FIRST_COMPLETED)
            if not future.done() and self.reached:
                futures_wait([future], timeout=self._after(wait, started))
            if future.done():
                result: _T = future.result()
                return result
            raise self._expired(wait, started)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    async def awithin(self, wait: float | None, call: Coroutine[Any, Any, _T]) -> _T:
        """Await `call` as `within` waits; the request is cancelled when it is cut."""
        if self._over():
            call.close()  # never started: nothing is sent
            raise QuorumCut()
        started = time.monotonic()
        task = asyncio.ensure_future(call)
        reached: asyncio.Future[Any] = self.areached()
        try:
            await asyncio.wait([task, reached], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and self.reached:
                await asyncio.wait([task], timeout=self._after(wait, started))
            if task.done():
                return task.result()
            raise self._expired(wait, started)
        finally:
            for pending in (task, reached):
                pending.cancel()  # a no-op once done; else the provider sees the disconnect

    def _over(self) -> bool:
        """The quorum is reached and its grace has run out: a slot not yet sent is cut."""
        return self.reached and self.grace_left() == 0

    def _after(self, wait: float | None, started: float) -> float:
        """How long a waiting slot may take once the quorum is reached (grace, within `wait`)."""
        grace = self.grace_left()
        if wait is None:
            return grace
        return max(0.0, min(grace, wait - (time.monotonic() - started)))

    def _expired(self, wait: float | None, started: float) -> Exception:
        if not self.reached or (wait is not None and time.monotonic() - started >= wait):
            return LimitReached()
        return QuorumCut()


_QUORUMS: dict[str, Quorum] = {}
_TABLE_LOCK = threading.Lock()
_FORGET_AFTER_S = 3600.0
"""A layer whose slots did not all report (a cancelled run, a layer resumed in part) is
forgotten this long after it began; a slot of it that comes later counts afresh."""


def quorum_for(task: ReferenceTask) -> Quorum | None:
    """The quorum the task's layer runs under, or None."""
    key, needed = task.get("quorum_id"), task.get("quorum")
    if not key or not needed:
        return None
    with _TABLE_LOCK:
        now = time.monotonic()
        for stale in [k for k, q in _QUORUMS.items() if now - q.created > _FORGET_AFTER_S]:
            del _QUORUMS[stale]
        quorum = _QUORUMS.get(key)
        if quorum is None:
            size = task.get("layer_size") or needed
            quorum = _QUORUMS[key] = Quorum(needed, size, task.get("quorum_grace_s") or 0.0)
        return quorum


def report(task: ReferenceTask, *, ok: bool) -> None:
    """Count a slot's outcome in its layer's quorum, if any (and forget a finished layer)."""
    quorum = quorum_for(task)
    if quorum is not None and quorum.report(ok=ok):
        with _TABLE_LOCK:
            _QUORUMS.pop(task.get("quorum_id") or "", None)
