"""The numbers of an evaluation: win rates, their bootstrap intervals, latency percentiles.

Plain Python (no numpy), deterministic: the bootstrap draws from a `random.Random` seeded
by the caller, so the same outcomes and seed give the same interval on every run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["DEFAULT_RESAMPLES", "bootstrap_ci", "mean", "percentile", "win_rate"]

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples per interval: enough for stable 2.5th and 97.5th percentiles."""


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean.

    Raises:
        ValueError: `values` is empty.
    """
    if not values:
        raise ValueError("the mean of no values is undefined")
    return math.fsum(values) / len(values)


def win_rate(outcomes: Sequence[float]) -> float:
    """The share of prompts won, ties counted half: the mean of 1 (win), 0.5 (tie), 0 (loss).

    Example:
        >>> win_rate([1.0, 0.5, 0.0, 1.0])
        0.625
    """
    return mean(outcomes)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), interpolated linearly between the closest ranks.

    The same definition as numpy's default (`method="linear"`).

    Example:
        >>> percentile([10.0, 20.0, 30.0, 40.0], 50)
        25.0

    Raises:
        ValueError: `values` is empty or `q` is outside 0-100.
    """
    if not values:
        raise ValueError("the percentile of no values is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval for the mean of `values`.

    Draws `resamples` samples of `len(values)` values with replacement, takes each one's
    mean, and returns the `(1 - confidence) / 2` and `(1 + confidence) / 2` percentiles of
    those means (Efron's percentile interval).

    Args:
        values: Per-prompt outcomes (or any per-item measure).
        confidence: The interval's nominal coverage, between 0 and 1.
        resamples: How many bootstrap samples to draw.
        seed: Seeds the draws: the same inputs give the same interval.

    Returns:
        `(low, high)`; a single value gives `(value, value)`.

    Raises:
        ValueError: `values` is empty, `confidence` is not strictly between 0 and 1, or
            `resamples` is below 1.

    Example:
        >>> bootstrap_ci([0.5] * 20)
        (0.5, 0.5)
    """
    if not values:
        raise ValueError("a bootstrap interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} is not between 0 and 1")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    draws = random.Random(seed)
    n = len(values)
    pool = list(values)
    means = [math.fsum(draws.choices(pool, k=n)) / n for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    return percentile(means, tail), percentile(means, 100 - tail)
