"""Redis stopped and restarted under the library: the failure policy, then recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis as sync_redis
from prometheus_client import CollectorRegistry

from common.redis import create_redis
from common.redis_server import RedisProcess
from rate_limiter import (
    Algorithm,
    FailMode,
    FallbackBackend,
    Limit,
    LimiterMetrics,
    RateLimiter,
    RedisBackend,
)
from rate_limiter.backends import state_key

pytestmark = pytest.mark.slow  # starts and stops its own redis-server processes


@pytest.mark.parametrize(
    ("mode", "allowed_while_down"),
    [("local", [True, True, False]), ("open", [True] * 3), ("closed", [False] * 3)],
)
async def test_policy_while_redis_is_down_then_automatic_recovery(
    redis_factory: Callable[..., RedisProcess], mode: FailMode, allowed_while_down: list[bool]
) -> None:
    server = redis_factory()
    redis = create_redis(server.url, timeout=0.2)
    metrics = LimiterMetrics(CollectorRegistry())
    backend = FallbackBackend(RedisBackend(redis), mode=mode, metrics=metrics, retry_interval=0.1)
    limiter = RateLimiter(Limit.per_hour(2), backend)
    try:
        first = await limiter.acquire("k")
        assert first.allowed and not first.degraded
        server.stop()
        down = [await limiter.acquire("k") for _ in range(3)]
        assert [d.allowed for d in down] == allowed_while_down
        assert all(d.degraded for d in down)
        assert backend.degraded and metrics.degraded._value.get() == 1
        assert metrics.backend_errors.labels("redis")._value.get() >= 1
        server.start()
        await asyncio.sleep(0.15)
        back = await limiter.acquire("k")
        # Redis kept nothing (no persistence here): a fresh count, from Redis again.
        assert back.allowed and not back.degraded
        assert not backend.degraded and metrics.degraded._value.get() == 0
    finally:
        await redis.aclose()


async def test_a_dead_redis_costs_one_attempt_per_interval(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    redis = create_redis(server.url, timeout=0.2)
    metrics = LimiterMetrics(CollectorRegistry())
    backend = FallbackBackend(RedisBackend(redis), metrics=metrics, retry_interval=5)
    server.stop()
    try:
        for _ in range(50):
            await backend.acquire("k", Limit.per_second(100))
        assert metrics.backend_errors.labels("redis")._value.get() == 1
    finally:
        await redis.aclose()


async def test_a_redis_lease_is_released_even_while_degraded(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """A lease Redis granted before it failed is given back as soon as Redis answers again,
    not only after the retry interval: otherwise it stays held until it expires."""
    server = redis_factory(appendonly=True)  # the lease survives the restart
    redis = create_redis(server.url, timeout=0.2)
    backend = FallbackBackend(RedisBackend(redis), retry_interval=60)
    limit = Limit(1, 3600, Algorithm.CONCURRENCY)
    try:
        held = await backend.acquire("job", limit)
        assert held.allowed and held.lease and not held.degraded
        server.stop()
        assert (await backend.acquire("other", Limit.per_second(5))).degraded
        server.start()
        assert backend.degraded  # still within the retry interval
        await backend.release("job", limit, held.lease)
        with sync_redis.Redis.from_url(server.url) as check:
            assert check.zcard(state_key("job", Algorithm.CONCURRENCY)) == 0
    finally:
        await backend.primary.aclose()  # type: ignore[attr-defined]
        await redis.aclose()


@pytest.mark.parametrize(("keeps_data", "bound"), [(True, 3), (False, 4)])
async def test_what_n_instances_admit_across_an_outage(
    redis_factory: Callable[..., RedisProcess], keeps_data: bool, bound: int
) -> None:
    """The README's bound, measured: within one period of a limit L, N instances under the
    `local` policy admit at most (N + 1) x L across a Redis outage (what Redis admitted
    before it, then a fresh local L in each process; Redis goes on from its own count
    after), and one L more when Redis comes back without its data. Here N = 2."""
    server = redis_factory(appendonly=keeps_data)
    redis = create_redis(server.url, timeout=0.2)
    limit = Limit.per_hour(5)  # (refills one unit in 12 minutes: none during the test)
    instances = [
        FallbackBackend(RedisBackend(redis), mode="local", retry_interval=0.1) for _ in range(2)
    ]

    async def admitted(backend: FallbackBackend) -> int:
        return sum([(await backend.acquire("k", limit)).allowed for _ in range(20)])

    try:
        before = await admitted(instances[0])  # Redis: the whole limit, once
        server.stop()
        during = [await admitted(b) for b in instances]  # each process: a fresh local limit
        server.start()
        await asyncio.sleep(0.15)
        after = [await admitted(b) for b in instances]  # Redis again, from what it kept
        assert all(not b.degraded for b in instances)
        assert (before, during) == (5, [5, 5])
        assert sum(after) == (0 if keeps_data else 5)
        assert before + sum(during) + sum(after) == bound * 5
        assert before + during[0] + after[0] <= 2 * 5 + (0 if keeps_data else 5)
    finally:
        await redis.aclose()
