"""Measuring one cell: turn latencies, wall time, client CPU, peak RSS; and the statistics.

A cell is one contender running `concurrency` conversations at once, each `turns` turns in a
row. Everything is timed inside the process that runs the contender.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CellResult",
    "RssSampler",
    "TurnReport",
    "median",
    "percentile",
    "rss_mb",
    "run_cell",
]

_RSS_INTERVAL_S = 0.05
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
_MAX_ERROR_SAMPLES = 3
_questions = itertools.count()


@dataclass(frozen=True)
class TurnReport:
    """What a turn returns when it has more to say than how many references answered."""

    answered: int
    detail: dict[str, Any]
    """Plain JSON data about the turn (e.g. each answered reference's `latency_ms`)."""


@dataclass
class CellResult:
    """What one cell measured."""

    turns: int
    """Turns that completed (failed turns are in `errors`)."""
    wall_s: float
    """Wall time of the whole cell."""
    cpu_s: float
    """CPU time of this process (all threads) during the cell."""
    peak_rss_mb: float
    """Largest resident set size sampled during the cell."""
    latencies_s: list[float] = field(default_factory=list)
    """Wall time of each completed turn."""
    answered: int = 0
    """References that answered, summed over the completed turns."""
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    """Per completed turn, in the order of `latencies_s`: the turn's `TurnReport.detail`
    (empty when the turn returned a plain count)."""

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON data."""
        return asdict(self)


def question(conversation: int, turn: int) -> str:
    """A user question, unique per call: no contender may answer from a cache."""
    return (
        f"[{next(_questions)}] Conversation {conversation}, turn {turn}: we are choosing between "
        "a write-through and a write-back cache for our order service. Which would you pick, "
        "and what should we measure before deciding?"
    )


async def run_cell(
    turn: Callable[[str], Awaitable[int | TurnReport]],
    *,
    concurrency: int,
    turns: int,
    stagger_s: float = 0.0,
) -> CellResult:
    """Run `concurrency` conversations of `turns` turns each.

    Each turn is `turn(question)`, which returns how many references answered (or a
    `TurnReport`). With `stagger_s`, conversation k starts k x `stagger_s` after the first,
    so their turns do not all start on the same tick.
    """
    latencies: list[float] = []
    errors: list[str] = []
    answered: list[int] = []
    details: list[dict[str, Any]] = []

    async def conversation(number: int) -> None:
        if stagger_s:
            await asyncio.sleep(number * stagger_s)
        for index in range(turns):
            started = time.perf_counter()
            try:
                outcome = await turn(question(number, index))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
                continue
            latencies.append(time.perf_counter() - started)
            report = outcome if isinstance(outcome, TurnReport) else TurnReport(outcome, {})
            answered.append(report.answered)
            details.append(report.detail)

    gc.collect(1)  # the young generations: what earlier cells left; a full pass takes ~0.1 s
    with RssSampler() as rss:
        cpu_started, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(conversation(number) for number in range(concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return CellResult(
        turns=len(latencies),
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss.peak_mb,
        latencies_s=latencies,
        answered=sum(answered),
        errors=len(errors),
        error_samples=errors[:_MAX_ERROR_SAMPLES],
        details=details,
    )


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0.0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    except OSError:
        return 0.0


class RssSampler:
    """Samples this process's RSS in a background thread; `peak_mb` is the largest seen."""

    def __init__(self, interval_s: float = _RSS_INTERVAL_S) -> None:
        self.peak_mb = rss_mb()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-sampler")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, rss_mb())


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return percentile(values, 50)
