"""Rate limits: `requests_per_second` per provider and per model, shared within the process.

A limit is LangChain's `InMemoryRateLimiter` (a token bucket: `requests_per_second` refill,
`max_burst` tokens at most), set as the model's `rate_limiter=`, so `ChatOpenAI` waits for a
token before each request. A provider's limiter is one per process for all its models (the
references, their samples and the aggregator, in every preset and event loop); a model's own
limit applies on top of its provider's, so a request waits for both.

The direct reference path (`moa_graph.direct`) posts through the model's OpenAI client rather
than `ChatOpenAI`: `attach` remembers which limiter a client's requests wait for, and
`moa_graph.direct` waits for it before each POST, as `ChatOpenAI` would.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from moa_graph.config import ModelSpec, ProviderSpec

__all__ = ["attach", "attached", "rate_limiter"]

_MAX_CHECK_S = 0.1
"""Longest pause between two looks at the bucket (InMemoryRateLimiter's default)."""
_MIN_CHECK_S = 0.01
"""Shortest pause: waiting requests poll the bucket; faster limits want a `max_burst`."""

_shared: dict[tuple[Any, ...], BaseRateLimiter] = {}
_lock = threading.Lock()
_by_client: weakref.WeakKeyDictionary[Any, BaseRateLimiter] = weakref.WeakKeyDictionary()


def rate_limiter(spec: ModelSpec, provider: ProviderSpec | None = None) -> BaseRateLimiter | None:
    """The limiter a model of `spec` waits for (None: no limit applies).

    Args:
        spec: The model; its `requests_per_second` / `max_burst` limit it alone.
        provider: Its provider's entry; its limit is shared by all models of
            `spec.provider` in this process.

    Example:
        >>> limiter = rate_limiter(ModelSpec(provider="x", model="m", requests_per_second=2))
        >>> limiter is rate_limiter(ModelSpec(provider="x", model="m", requests_per_second=2))
        True
    """
    limiters = []
    if spec.requests_per_second is not None:
        mine = ("model", spec.provider, spec.model, spec.requests_per_second, spec.max_burst)
        limiters.append(_bucket(mine, spec.requests_per_second, spec.max_burst))
    if provider is not None and provider.requests_per_second is not None:
        shared = ("provider", spec.provider, provider.requests_per_second, provider.max_burst)
        limiters.append(_bucket(shared, provider.requests_per_second, provider.max_burst))
    if not limiters:
        return None
    return limiters[0] if len(limiters) == 1 else _AllOf(limiters)


def attach(client: Any, limiter: BaseRateLimiter | None) -> None:
    """Make requests the direct path sends through `client` wait for `limiter`."""
    if limiter is not None and client is not None:
        _by_client[client] = limiter


def attached(client: Any) -> BaseRateLimiter | None:
    """The limiter `attach` gave `client`, if any."""
    try:
        return _by_client.get(client)
    except TypeError:  # not weakly referenceable: nothing was attached
        return None


def _bucket(key: tuple[Any, ...], requests_per_second: float, burst: int | None) -> BaseRateLimiter:
    with _lock:
        limiter = _shared.get(key)
        if limiter is None:
            # Look at the bucket about twice per token: with a one-token bucket, a slower
            # look would lose refills and run below the limit.
            check = min(_MAX_CHECK_S, max(_MIN_CHECK_S, 0.5 / requests_per_second))
            limiter = _shared[key] = InMemoryRateLimiter(
                requests_per_second=requests_per_second,
                check_every_n_seconds=check,
                max_bucket_size=burst or 1,
            )
        return limiter


class _AllOf(BaseRateLimiter):
    """Waits for a token from each of its limiters (a model's own and its provider's)."""

    def __init__(self, limiters: list[BaseRateLimiter]) -> None:
        self.limiters = limiters

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take a token from each limiter, in order."""
        return all(limiter.acquire(blocking=blocking) for limiter in self.limiters)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Take a token from each limiter, in order (async)."""
        for limiter in self.limiters:
            if not await limiter.aacquire(blocking=blocking):
                return False
        return True
