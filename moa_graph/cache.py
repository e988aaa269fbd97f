"""The chat-model facade's per-turn cache of reference answers.

An agent loop calls its model once per tool step; references must run once per fan-out the
turn's schedule calls for. Entries are keyed by the caller (a hash of the turn and the step
its fan-out serves), bounded in number (least recently used goes first), and computed once
when several calls for one fan-out arrive together: the first computes, the others wait for
its result, and a cancelled computation is taken over. The cache also remembers the step
each turn was first asked at (`first_step`): the turn's first fan-out runs there.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from moa_graph.panel import Advice

__all__ = ["AdviceCache"]


class AdviceCache:
    """Reference answers per user turn: bounded, and computed once under concurrent calls."""

    def __init__(self, size: int) -> None:
        self._size = max(size, 1)
        self._entries: OrderedDict[str, Future[Advice]] = OrderedDict()
        self._first_steps: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def first_step(self, turn: str, step: int) -> int:
        """The step `turn` was first asked at (`step`, if this is its first call)."""
        with self._lock:
            first = self._first_steps.setdefault(turn, step)
            self._first_steps.move_to_end(turn)
            while len(self._first_steps) > self._size:
                self._first_steps.popitem(last=False)
            return first

    def peek(self, key: str) -> Advice | None:
        """The advice for `key` if it is made (no wait, no computation)."""
        with self._lock:
            future = self._entries.get(key)
        if future is None or not future.done() or future.cancelled():
            return None
        return None if future.exception() is not None else future.result()

    def get(self, key: str, compute: Callable[[], Advice]) -> tuple[Advice, bool]:
        """The advice for `key` and whether it was computed by this call."""
        while True:
            future, owner = self._claim(key)
            if owner:
                try:
                    value = compute()
                except BaseException:
                    self._drop(key, future)  # the next call computes again, nobody waits on it
                    raise
                return self._fill(future, value), True
            try:
                return future.result(), False
            except Exception:  # the computing call was cancelled; take over
                continue

    async def aget(self, key: str, compute: Callable[[], Awaitable[Advice]]) -> tuple[Advice, bool]:
        """Async `get`: waiters do not block the event loop."""
        while True:
            future, owner = self._claim(key)
            if owner:
                try:
                    value = await compute()
                except BaseException:
                    self._drop(key, future)
                    raise
                return self._fill(future, value), True
            try:
                return await asyncio.shield(asyncio.wrap_future(future)), False
            except asyncio.CancelledError:
                if future.cancelled():
                    continue
                raise

    def _claim(self, key: str) -> tuple[Future[Advice], bool]:
        with self._lock:
            future = self._entries.get(key)
            if future is not None:
                self._entries.move_to_end(key)
                return future, False
            future = Future()
            self._entries[key] = future
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
            return future, True

    @staticmethod
    def _fill(future: Future[Advice], value: Advice) -> Advice:
        future.set_result(value)
        return value

    def _drop(self, key: str, future: Future[Advice]) -> None:
        with self._lock:
            if self._entries.get(key) is future:
                del self._entries[key]
        future.cancel()
