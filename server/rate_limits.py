"""Moving-window rate limits, checked and counted in one step for all the limits of an action.

A moving window is exact: it keeps a timestamp per hit (O(limit): 30 at most with the
defaults), where a sliding-window counter estimates the count (rounded down) and let a sixth
post of "5 per 10 s" through when a burst crossed a window's edge. The counters live in the
bus's storage: in-process, or in Redis for every instance.

Every post passes three or four limits (per reader, per address). Counted one by one, each is
one Redis round trip before the post can be published; a storage that can count them all in
one step (server/backends/redis.py's SharedLimits) does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

# One limit to count an attempt against: the limit, what kind of identifier, the identifier.
Check = tuple[RateLimitItem, str, str]


@runtime_checkable
class AcquiresInOrder(Protocol):
    async def acquire_in_order(self, entries: Sequence[tuple[str, int, int]]) -> int | None:
        """Acquire one entry in each (key, limit, expiry seconds) moving window, in order,
        stopping at the first that is full: returns its index, or None when all had room. The
        windows are stored as the `limits` library stores them, so its reads and clears work."""


class Limits:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, checks: Sequence[Check]) -> int | None:
        """Count one attempt against each limit in order, stopping at the first that refuses
        (an attempt refused by a later limit has counted against the earlier ones: it was an
        attempt). Returns the seconds until the refusing limit has room again, or None when
        every limit accepted. Raises limits' StorageError when the shared counters are away."""
        refused: int | None = None
        if isinstance(self._storage, AcquiresInOrder):
            entries = [(item.key_for(kind, key), item.amount, item.get_expiry()) for item, kind, key in checks]
            refused = await self._storage.acquire_in_order(entries)
        else:
            for index, (item, kind, key) in enumerate(checks):
                if not await self._limiter.hit(item, kind, key):
                    refused = index
                    break
        if refused is None:
            return None
        item, kind, key = checks[refused]
        stats = await self._limiter.get_window_stats(item, kind, key)
        return max(1, int(stats.reset_time - time.time()) + 1)

    async def clear(self, item: RateLimitItem, kind: str, key: str) -> None:
        await self._limiter.clear(item, kind, key)
