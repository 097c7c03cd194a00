"""`RateLimiter` / `SyncRateLimiter`, and exactness with 8 processes hammering one key."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from typing import Any

import pytest
import redis as sync_redis

from common.redis import create_redis
from rate_limiter import (
    Algorithm,
    InvalidCost,
    Limit,
    RateLimited,
    RateLimiter,
    RedisBackend,
    SyncRateLimiter,
    SyncRedisBackend,
)

PROCESSES = 8


def _hammer(url: str, limit: Limit, key: str, seconds: float, barrier: Any, out: Any) -> None:
    """One worker process: acquire as fast as possible until the deadline."""
    with sync_redis.Redis.from_url(url) as client:
        limiter = SyncRateLimiter(limit, SyncRedisBackend(client))
        limiter.acquire("warm-up", 0)
        barrier.wait()
        deadline = time.time() + seconds
        admitted = attempts = 0
        while time.time() < deadline or attempts == 0:
            attempts += 1
            admitted += limiter.acquire(key).allowed
        out.put((admitted, attempts))


def _run(url: str, limit: Limit, seconds: float) -> tuple[int, int, float]:
    """Admitted and attempted across the processes, and the Redis-time span they covered."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(PROCESSES + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(url, limit, "hot", seconds, barrier, out))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    with sync_redis.Redis.from_url(url) as client:
        sec, usec = client.time()  # before the barrier: no worker has started yet
        t0 = sec + usec / 1e6
        barrier.wait()
        results = [out.get(timeout=30) for _ in procs]
        sec, usec = client.time()
        t1 = sec + usec / 1e6
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return sum(r[0] for r in results), sum(r[1] for r in results), t1 - t0


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_eight_processes_admit_exactly_the_limit(redis_url: str, algorithm: Algorithm) -> None:
    limit = Limit(60, 86400, algorithm)  # no refill within the test: exactly 60 admitted
    admitted, attempts, _ = _run(redis_url, limit, 0.3)
    assert attempts > 300
    assert admitted == 60


@pytest.mark.slow
def test_eight_processes_with_refill_stay_within_the_exact_bound(redis_url: str) -> None:
    rate, burst = 200, 10
    limit = Limit(rate, 1.0, Algorithm.GCRA, burst=burst)
    admitted, attempts, span = _run(redis_url, limit, 0.8)
    bound = burst + math.floor(span * rate)
    seen = f"admitted {admitted} of {attempts} attempts in {span:.3f}s (bound {bound})"
    assert attempts > admitted, seen
    assert admitted <= bound, seen
    assert admitted >= 0.8 * (burst + 0.8 * rate), seen  # and it does not under-admit either


@pytest.mark.slow
def test_eight_processes_fixed_window_bound(redis_url: str) -> None:
    limit = Limit(50, 0.25, Algorithm.FIXED_WINDOW)
    admitted, _, span = _run(redis_url, limit, 0.6)
    windows = math.ceil(span / 0.25) + 1
    assert admitted <= 50 * windows


async def test_async_limiter_hold_and_refusal(redis_url: str) -> None:
    client = create_redis(redis_url)
    try:
        limiter = RateLimiter(Limit(1, 60, Algorithm.CONCURRENCY), RedisBackend(client))
        async with limiter.hold("job") as decision:
            assert decision.lease
            with pytest.raises(RateLimited) as refused:
                async with limiter.hold("job"):
                    pass
            assert refused.value.extra["retry_after"] >= 1
        async with limiter.hold("job"):  # released on exit
            pass
        assert (await limiter.peek("job")).remaining == 1
        with pytest.raises(InvalidCost):
            await limiter.acquire("job", -1)
        with pytest.raises(RateLimited) as never:
            async with limiter.hold("job", 2):
                pass
        assert "never" in never.value.detail
    finally:
        await client.aclose()


def test_sync_limiter_defaults_to_memory() -> None:
    limiter = SyncRateLimiter(Limit.per_minute(2))
    assert [limiter.acquire("k").allowed for _ in range(3)] == [True, True, False]
    assert limiter.peek("k").remaining == 0
    with pytest.raises(RateLimited), limiter.hold("k"):
        pass
