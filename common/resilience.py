"""Resilience primitives: a circuit breaker and retry with backoff and jitter."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class CircuitBreaker:
    """Stops calling a dependency for `reset_after` seconds once it has failed.

    closed: calls go through. open: `allow()` is False until `reset_after` has passed, then
    one call is let through as a probe (half-open); its success closes the breaker again.
    Callers report outcomes with `success()` / `failure()`. Time is monotonic.
    """

    def __init__(self, *, reset_after: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.reset_after = reset_after
        self.clock = clock
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.clock() - self.opened_at >= self.reset_after:
            self.opened_at = self.clock()  # one probe per period
            return True
        return False

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker (a recovery)."""
        recovered = self.opened_at is not None
        self.opened_at = None
        return recovered

    def failure(self) -> bool:
        """Record a failure; True when this opened a closed breaker (an outage began)."""
        began = self.opened_at is None
        self.opened_at = self.clock()
        return began


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    base: float = 0.05,
    cap: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call `fn` up to `attempts` times, sleeping with full-jitter exponential backoff."""
    for attempt in range(attempts):
        try:
            return await fn()
        except retry_on:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")
