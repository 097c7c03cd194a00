"""Resilience primitives shared by services (add one here once two services need it)."""

from __future__ import annotations

import time
from collections.abc import Callable


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
