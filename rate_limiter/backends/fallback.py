"""Redis first; while it is unreachable the failure policy answers, and recovery is automatic.

- `local`: the process-local backend decides (a degraded limiter: each process limits alone).
- `open`: allow everything (availability over protection).
- `closed`: refuse everything (protection over availability).

Only an unreachable or unavailable Redis counts as "down" (connection errors, timeouts, a
replica that became read-only, a cluster that is down, out of memory). Any other error (a
script that fails on its input, a wrong key type) fails that one call as `BackendError`: it
never switches the whole process to its failure policy.

After a failure Redis is not tried again for `retry_interval` seconds, so a dead Redis costs
one timeout per interval rather than one per request. The first failure and the recovery
each log one line; `rate_limiter_backend_errors_total` and `rate_limiter_degraded` track it.
"""

from __future__ import annotations

import time
from typing import Literal

import structlog
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rate_limiter.algorithms import Decision, Limit
from rate_limiter.backends.base import AsyncBackend
from rate_limiter.backends.memory import MemoryBackend
from rate_limiter.errors import BackendError
from rate_limiter.metrics import LimiterMetrics

FailMode = Literal["local", "open", "closed"]
# What "Redis is down" means; every other RedisError is a failure of one call only.
BACKEND_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # includes BusyLoadingError (LOADING) and MaxConnectionsError
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,  # includes MasterDownError
    OutOfMemoryError,
    OSError,
    TimeoutError,
    ConnectionError,
)
# Down, or failed one call: what a caller without a failure policy of its own (the
# middleware's fail_open, a refund that can stay undone) answers for that request only.
BACKEND_FAILED: tuple[type[BaseException], ...] = (*BACKEND_DOWN, RedisError, BackendError)
log = structlog.get_logger("rate_limiter.backend")


class FallbackBackend:
    name = "fallback"

    def __init__(
        self,
        primary: AsyncBackend,
        *,
        mode: FailMode = "local",
        local: MemoryBackend | None = None,
        metrics: LimiterMetrics | None = None,
        retry_interval: float = 0.5,
    ) -> None:
        self.primary = primary
        self.mode = mode
        self.local = local or MemoryBackend()
        self.metrics = metrics
        self.retry_interval = retry_interval
        self._down_until = 0.0
        self.degraded = False

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_interval
        if self.metrics:
            self.metrics.backend_errors.labels(self.primary.name).inc()
            self.metrics.degraded.set(1)
        if not self.degraded:
            self.degraded = True
            log.error(
                "rate_limiter_backend_down",
                backend=self.primary.name,
                policy=self.mode,
                error=f"{type(exc).__name__}: {exc}"[:200],
            )

    def _recovered(self) -> None:
        self.degraded = False
        if self.metrics:
            self.metrics.degraded.set(0)
        log.warning("rate_limiter_backend_recovered", backend=self.primary.name)

    async def _degraded(self, key: str, limit: Limit, cost: int) -> Decision:
        if self.mode == "local":
            decision = await self.local.acquire(key, limit, cost)
        else:
            allowed = self.mode == "open" and cost <= limit.capacity
            decision = Decision(
                allowed=allowed,
                limit=limit.capacity,
                remaining=limit.capacity if allowed else 0,
                reset_after=0.0,
                retry_after=0.0 if allowed else self.retry_interval,
            )
        return decision._replace(degraded=True)

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        if self.degraded and time.monotonic() < self._down_until:
            return await self._degraded(key, limit, cost)
        try:
            decision = await self.primary.acquire(key, limit, cost)
        except BACKEND_DOWN as exc:
            self._failed(exc)
            return await self._degraded(key, limit, cost)
        except RedisError as exc:
            raise self._call_failed("acquire", key, exc) from exc
        if self.degraded:
            self._recovered()
        return decision

    def _call_failed(self, what: str, key: str, exc: RedisError) -> BackendError:
        if self.metrics:
            self.metrics.backend_errors.labels(self.primary.name).inc()
        error = f"{type(exc).__name__}: {exc}"[:200]
        log.error("rate_limiter_backend_call_failed", call=what, key=key[:200], error=error)
        return BackendError(f"the rate limit backend failed this {what}: {error}")

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        # A lease may have come from either side; releasing both is harmless. The primary is
        # always tried (releasing is idempotent), even while degraded: a lease it granted
        # before it failed would otherwise stay held until it expires.
        local = await self.local.release(key, limit, lease)
        try:
            return await self.primary.release(key, limit, lease) or local
        except BACKEND_DOWN as exc:
            self._failed(exc)
            return local
        except RedisError as exc:
            raise self._call_failed("release", key, exc) from exc

    async def refund(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        """To the side that decided: the local backend for a degraded decision (in `local`
        mode; `open` and `closed` took nothing), else the primary. A primary that is down
        keeps the units: they come back with time (a little early refusal, never too many)."""
        if decision.degraded:
            if self.mode == "local":
                return await self.local.refund(key, limit, cost, decision)
            return decision
        try:
            return await self.primary.refund(key, limit, cost, decision)
        except BACKEND_DOWN as exc:
            self._failed(exc)
            return decision
        except RedisError as exc:
            raise self._call_failed("refund", key, exc) from exc

    async def ping(self) -> None:
        await self.primary.ping()
