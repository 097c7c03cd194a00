"""Process-local backend: the pure algorithms over a dict, under a lock.

Exact within one process (threads and asyncio tasks alike); each process has its own
state, which is what makes it a *degraded* limiter when it stands in for Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rate_limiter.algorithms import STEPS, US, Algorithm, Decision, Limit, release
from rate_limiter.backends.base import new_lease, state_key
from rate_limiter.refunds import refund

SWEEP_EVERY = 4096


def _now_us() -> int:
    return time.time_ns() // 1000


class MemoryBackend:
    name = "memory"

    def __init__(self, *, clock: Callable[[], int] = _now_us) -> None:
        self.clock = clock
        self._states: dict[str, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def acquire_sync(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        skey = state_key(key, limit.algorithm)
        lease = new_lease(cost) if limit.algorithm is Algorithm.CONCURRENCY and cost else None
        with self._lock:
            now = self.clock()
            self._ops += 1
            if self._ops % SWEEP_EVERY == 0:
                self._sweep(now)
            stored = self._states.get(skey)
            state = stored[0] if stored and stored[1] > now else {}
            new_state, raw = STEPS[limit.algorithm](state, now, limit, cost, lease)
            if new_state is not None:
                # Kept a little past the moment it would be back to full anyway.
                expires = now + max(raw[3], limit.period_us) + US
                self._states[skey] = (new_state, expires)
            elif stored and stored[1] > now and now + raw[3] + US > stored[1]:
                # Nothing written, but under this limit (a slower rate, say) the state takes
                # longer to refill than its expiry allows for: never forget it early.
                self._states[skey] = (stored[0], now + raw[3] + US)
            # (GCRA's running total of tokens taken: where this decision's sit in the debt)
            kept = new_state if new_state is not None else state
            position = int(kept.get("a", 0)) if limit.algorithm is Algorithm.GCRA else 0
        return Decision.from_us(*raw, now, position, lease=lease if raw[0] else None)

    def release_sync(self, key: str, limit: Limit, lease: str) -> bool:
        if limit.algorithm is not Algorithm.CONCURRENCY:
            return False  # (only leases are released; another state must stay as it is)
        skey = state_key(key, limit.algorithm)
        with self._lock:
            stored = self._states.get(skey)
            if not stored or not stored[0]:
                return False
            now = self.clock()
            held = {k: exp for k, exp in stored[0].get("leases", {}).items() if exp > now}
            after = release({"leases": held}, lease)  # (an expired lease frees nothing)
            self._states[skey] = (after, stored[1])
            return len(after["leases"]) < len(held)

    def refund_sync(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        """Give back `cost` units that `decision` (made here) took for a request that did
        not go ahead, as much as the key still holds (`refunds.refund`); the decision
        with the remaining after it."""
        if not decision.allowed or cost <= 0 or limit.algorithm is Algorithm.CONCURRENCY:
            return decision
        skey = state_key(key, limit.algorithm)
        with self._lock:
            now = self.clock()
            stored = self._states.get(skey)
            if not stored or stored[1] <= now:
                return decision
            after, left = refund(stored[0], now, limit, cost, decision.at_us, decision.position)
            if after is None or left is None:
                return decision
            self._states[skey] = (after, stored[1])
        return decision._replace(remaining=max(0, left[0]), reset_after=left[1] / US)

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        return self.acquire_sync(key, limit, cost)

    async def refund(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        return self.refund_sync(key, limit, cost, decision)

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        return self.release_sync(key, limit, lease)

    async def ping(self) -> None:
        return None

    def clear(self) -> None:
        with self._lock:
            self._states.clear()

    def __len__(self) -> int:
        return len(self._states)

    def _sweep(self, now: int) -> None:
        for k in [k for k, (_, exp) in self._states.items() if exp <= now]:
            del self._states[k]
