"""`RateLimiter` / `SyncRateLimiter`: one limit bound to a backend, behind `acquire()`.

limiter = RateLimiter(Limit.per_minute(100, burst=20), RedisBackend(redis))
decision = await limiter.acquire("user:42")
if not decision.allowed:
    ...  # wait decision.retry_after seconds

async with limiter.hold("user:42"):   # raises RateLimited when refused; releases leases
    ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from rate_limiter.algorithms import Decision, Limit
from rate_limiter.backends.base import AsyncBackend, SyncBackend
from rate_limiter.backends.memory import MemoryBackend
from rate_limiter.errors import InvalidCost, RateLimited


def _check_cost(cost: int) -> None:
    if cost < 0:
        raise InvalidCost("cost must be 0 or more")


class RateLimiter:
    """Async limiter; without a backend it limits within this process only."""

    def __init__(self, limit: Limit, backend: AsyncBackend | None = None) -> None:
        self.limit = limit
        self.backend: AsyncBackend = backend if backend is not None else MemoryBackend()

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        """Take `cost` units for `key`, or learn how long to wait."""
        _check_cost(cost)
        return await self.backend.acquire(key, self.limit, cost)

    async def peek(self, key: str) -> Decision:
        """The key's state without consuming anything."""
        return await self.backend.acquire(key, self.limit, 0)

    async def release(self, key: str, lease: str) -> bool:
        """Give back a concurrency lease (a no-op for the other algorithms); whether it
        was held."""
        return await self.backend.release(key, self.limit, lease)

    async def refund(self, key: str, decision: Decision, cost: int = 1) -> Decision:
        """Give back what an allowed `decision` for `cost` took, when the work it admitted
        did not happen (another limit refused it, the call failed early): as much as the
        key still holds, never more. Once per decision, and with the cost it was made for
        (a larger one, or a second refund, would give back other requests' units). A
        concurrency decision's lease is released. The decision with the remaining after it."""
        _check_cost(cost)
        if decision.lease:
            await self.release(key, decision.lease)
            return decision._replace(lease=None)
        return await self.backend.refund(key, self.limit, cost, decision)

    @asynccontextmanager
    async def hold(self, key: str, cost: int = 1) -> AsyncIterator[Decision]:
        """Acquire or raise `RateLimited`; a concurrency lease is released on exit."""
        decision = await self.acquire(key, cost)
        if not decision.allowed:
            raise RateLimited.from_decision(decision)
        try:
            yield decision
        finally:
            if decision.lease:
                await self.release(key, decision.lease)


class SyncRateLimiter:
    """The same over a blocking backend (`SyncRedisBackend` or `MemoryBackend`)."""

    def __init__(self, limit: Limit, backend: SyncBackend | None = None) -> None:
        self.limit = limit
        self.backend: SyncBackend = backend if backend is not None else MemoryBackend()

    def acquire(self, key: str, cost: int = 1) -> Decision:
        _check_cost(cost)
        return self.backend.acquire_sync(key, self.limit, cost)

    def peek(self, key: str) -> Decision:
        return self.backend.acquire_sync(key, self.limit, 0)

    def release(self, key: str, lease: str) -> bool:
        return self.backend.release_sync(key, self.limit, lease)

    def refund(self, key: str, decision: Decision, cost: int = 1) -> Decision:
        _check_cost(cost)
        if decision.lease:
            self.release(key, decision.lease)
            return decision._replace(lease=None)
        return self.backend.refund_sync(key, self.limit, cost, decision)

    @contextmanager
    def hold(self, key: str, cost: int = 1) -> Iterator[Decision]:
        decision = self.acquire(key, cost)
        if not decision.allowed:
            raise RateLimited.from_decision(decision)
        try:
            yield decision
        finally:
            if decision.lease:
                self.release(key, decision.lease)
