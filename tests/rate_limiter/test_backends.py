"""Every algorithm against every backend (memory and a real Redis), on real time."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from common.redis import create_redis
from rate_limiter import Algorithm, AsyncBackend, Limit, MemoryBackend, RedisBackend
from rate_limiter.backends.redis import load_sources


@pytest.mark.parametrize("algorithm", list(Algorithm))
class TestEveryAlgorithmEveryBackend:
    async def test_admits_exactly_the_limit(
        self, backend: AsyncBackend, algorithm: Algorithm
    ) -> None:
        limit = Limit(7, 3600, algorithm)
        decisions = [await backend.acquire("user:1", limit) for _ in range(10)]
        assert [d.allowed for d in decisions] == [True] * 7 + [False] * 3
        assert [d.remaining for d in decisions[:7]] == [6, 5, 4, 3, 2, 1, 0]
        assert all(d.limit == 7 for d in decisions)
        assert all(d.retry_after > 0 for d in decisions[7:])
        # Keys are independent.
        assert (await backend.acquire("user:2", limit)).allowed

    async def test_concurrent_tasks_never_exceed(
        self, backend: AsyncBackend, algorithm: Algorithm
    ) -> None:
        limit = Limit(25, 3600, algorithm)
        results = await asyncio.gather(*(backend.acquire("hot", limit) for _ in range(100)))
        assert sum(d.allowed for d in results) == 25

    async def test_cost_above_capacity(self, backend: AsyncBackend, algorithm: Algorithm) -> None:
        limit = Limit(3, 3600, algorithm)
        d = await backend.acquire("k", limit, 4)
        assert not d.allowed and math.isinf(d.retry_after)
        assert (await backend.acquire("k", limit, 3)).allowed

    async def test_peek_and_limit_change_keep_consumption(
        self, backend: AsyncBackend, algorithm: Algorithm
    ) -> None:
        for _ in range(4):
            await backend.acquire("k", Limit(10, 3600, algorithm))
        assert (await backend.acquire("k", Limit(10, 3600, algorithm), 0)).remaining == 6
        bigger = Limit(12, 3600, algorithm)
        assert (await backend.acquire("k", bigger, 0)).remaining == 8
        assert sum([(await backend.acquire("k", bigger)).allowed for _ in range(10)]) == 8


async def test_lua_and_python_agree_step_by_step(redis: Redis) -> None:
    """The same sequence of costs gets the same verdicts and counts from both twins."""
    rb = RedisBackend(redis)
    mb = MemoryBackend()
    costs = [1, 3, 2, 5, 1, 1, 4, 2, 0, 1, 9]
    for algorithm in Algorithm:
        limit = Limit(9, 3600, algorithm, burst=None)
        for i, cost in enumerate(costs):
            r = await rb.acquire("twin", limit, cost)
            m = await mb.acquire("twin", limit, cost)
            assert (r.allowed, r.limit, r.remaining) == (m.allowed, m.limit, m.remaining), (
                algorithm,
                i,
            )
            assert math.isinf(r.retry_after) == math.isinf(m.retry_after)


async def test_keys_are_hash_tagged_and_expire(redis: Redis) -> None:
    backend = RedisBackend(redis)
    await backend.acquire("api:alice", Limit(5, 10, Algorithm.SLIDING_LOG))
    await backend.acquire("api:alice", Limit(5, 10, Algorithm.GCRA))
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await redis.keys("*"))
    assert keys == [
        "rl:{api:alice}:gcra",
        "rl:{api:alice}:sliding_log",
        "rl:{api:alice}:sliding_log:seq",
    ]
    for key in keys:
        assert 0 < await redis.pttl(key) <= 11_000


async def test_scripts_reload_after_script_flush(redis: Redis) -> None:
    backend = RedisBackend(redis)
    await backend.load()
    await redis.script_flush()
    assert (await backend.acquire("k", Limit.per_second(1))).allowed
    assert set(load_sources()) == {a.value for a in Algorithm} | {
        "release",
        "refund",
        "gcra_prefetch",
    }


async def _redis_now(redis: Redis) -> float:
    sec, usec = await redis.time()
    return sec + usec / 1e6


async def test_redis_burst_then_steady_refill(redis: Redis) -> None:
    backend = RedisBackend(redis)
    limit = Limit(20, 1.0, Algorithm.GCRA, burst=5)
    assert sum([(await backend.acquire("k", limit)).allowed for _ in range(8)]) == 5
    refused = await backend.acquire("k", limit)
    assert not refused.allowed and 0 < refused.retry_after <= 0.05
    await asyncio.sleep(refused.retry_after + 0.005)
    assert (await backend.acquire("k", limit)).allowed
    # Then about 20/s: over 0.5 s between 9 and 11 more (the timer is not exact).
    start = time.monotonic()
    admitted = 0
    while time.monotonic() - start < 0.5:
        admitted += (await backend.acquire("k", limit)).allowed
        await asyncio.sleep(0.002)
    assert 8 <= admitted <= 11


async def test_redis_fixed_window_boundary_uses_redis_time(redis: Redis) -> None:
    backend = RedisBackend(redis)
    limit = Limit(3, 0.5, Algorithm.FIXED_WINDOW)
    now = await _redis_now(redis)
    boundary = (math.floor(now / 0.5) + 1) * 0.5
    if boundary - now < 0.15:
        await asyncio.sleep(boundary - now + 0.01)
        boundary += 0.5
    results = [(await backend.acquire("k", limit)).allowed for _ in range(5)]
    assert results == [True, True, True, False, False]
    refused = await backend.acquire("k", limit)
    assert refused.retry_after == pytest.approx(boundary - await _redis_now(redis), abs=0.02)
    await asyncio.sleep(refused.retry_after + 0.005)
    assert sum([(await backend.acquire("k", limit)).allowed for _ in range(5)]) == 3


async def test_redis_concurrency_lease_release(redis: Redis) -> None:
    backend = RedisBackend(redis)
    limit = Limit(2, 0.3, Algorithm.CONCURRENCY)
    a = await backend.acquire("k", limit, 2)
    assert a.allowed and a.lease and a.lease.endswith(".2")
    assert not (await backend.acquire("k", limit)).allowed
    await backend.release("k", limit, a.lease)
    b = await backend.acquire("k", limit)
    assert b.allowed
    await backend.acquire("k", limit)
    assert not (await backend.acquire("k", limit)).allowed
    await asyncio.sleep(0.31)  # nobody released: the leases expire
    assert (await backend.acquire("k", limit, 2)).allowed


def test_sync_backend_shares_state_with_async(redis_url: str) -> None:
    from rate_limiter import SyncRedisBackend

    with sync_redis.Redis.from_url(redis_url) as client:
        backend = SyncRedisBackend(client)
        backend.load()
        limit = Limit(3, 60, Algorithm.SLIDING_LOG)
        assert [backend.acquire_sync("k", limit).allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        lease_limit = Limit(1, 60, Algorithm.CONCURRENCY)
        d = backend.acquire_sync("c", lease_limit)
        assert d.lease and not backend.acquire_sync("c", lease_limit).allowed
        backend.release_sync("c", lease_limit, d.lease)
        assert backend.acquire_sync("c", lease_limit).allowed


async def test_autopipelined_batches_survive_a_script_flush(redis: Redis) -> None:
    backend = RedisBackend(redis)
    await backend.load()
    await redis.script_flush()
    limit = Limit(30, 3600, Algorithm.GCRA)
    results = await asyncio.gather(*(backend.acquire("k", limit) for _ in range(40)))
    assert sum(d.allowed for d in results) == 30


async def test_autopipelining_can_be_turned_off(redis: Redis) -> None:
    backend = RedisBackend(redis, autopipeline=False)
    limit = Limit(5, 3600, Algorithm.FIXED_WINDOW)
    results = await asyncio.gather(*(backend.acquire("k", limit) for _ in range(8)))
    assert sum(d.allowed for d in results) == 5


async def test_a_dead_redis_fails_every_waiter_in_a_batch() -> None:
    client = create_redis("redis://127.0.0.1:1/0", timeout=0.2)
    backend = RedisBackend(client)
    results = await asyncio.gather(
        *(backend.acquire("k", Limit.per_second(5)) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    await client.aclose()


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_a_large_legitimate_cost_works_on_every_algorithm(
    redis: Redis, algorithm: Algorithm
) -> None:
    """Costs in the thousands (allowed when the rate is larger) must not break a script: the
    sorted-set algorithms add one member per unit and must do so in chunks."""
    backend = RedisBackend(redis)
    limit = Limit(10_000, 3600, algorithm)
    first = await backend.acquire("big", limit, 5000)
    assert first.allowed and first.remaining == 5000
    second = await backend.acquire("big", limit, 5000)
    assert second.allowed and second.remaining == 0
    assert not (await backend.acquire("big", limit, 1)).allowed
    if algorithm is Algorithm.CONCURRENCY:
        assert first.lease
        await backend.release("big", limit, first.lease)
        assert (await backend.acquire("big", limit, 0)).remaining == 5000
    await backend.aclose()


async def test_gcra_debt_outlives_the_old_expiry_after_the_rate_is_lowered(
    backend: AsyncBackend,
) -> None:
    """Under 100 per 0.1 s a debt of 100 is repaid in 0.1 s, so the key was set to expire
    then (plus a second); under 1 per hour the same debt takes 100 hours. A decision under the
    new limit must keep the key that long, even one that writes nothing (a peek)."""
    fast = Limit(100, 0.1)
    slow = Limit(1, 3600, burst=100)
    assert (await backend.acquire("g", fast, 100)).allowed
    assert (await backend.acquire("g", slow, 0)).remaining == 0
    await asyncio.sleep(1.3)  # past the expiry set under the fast rate
    assert (await backend.acquire("g", slow, 0)).remaining == 0
    assert not (await backend.acquire("g", slow)).allowed


@pytest.mark.parametrize(
    ("algorithm", "kept"),
    [
        (Algorithm.GCRA, True),
        (Algorithm.SLIDING_LOG, True),
        (Algorithm.CONCURRENCY, True),
        # The windowed counters are per calendar window of the *period*: a new period means
        # new windows, so they start from zero (documented in the README).
        (Algorithm.FIXED_WINDOW, False),
        (Algorithm.SLIDING_WINDOW, False),
    ],
)
async def test_a_period_change_keeps_consumption_except_for_windowed_counters(
    backend: AsyncBackend, algorithm: Algorithm, kept: bool
) -> None:
    for _ in range(5):
        assert (await backend.acquire("p", Limit(5, 60, algorithm))).allowed
    after = await backend.acquire("p", Limit(5, 3600, algorithm), 0)
    assert after.remaining == (0 if kept else 5)


async def test_sliding_log_entries_outlive_the_old_expiry_after_the_period_grows(
    redis: Redis,
) -> None:
    backend = RedisBackend(redis)
    short, long = Limit(2, 0.2, Algorithm.SLIDING_LOG), Limit(2, 3600, Algorithm.SLIDING_LOG)
    for _ in range(2):
        assert (await backend.acquire("l", short)).allowed
    assert not (await backend.acquire("l", long)).allowed  # refused: writes nothing
    await asyncio.sleep(1.3)  # past the expiry set under the 0.2 s period
    assert (await backend.acquire("l", long, 0)).remaining == 0


async def test_concurrency_leases_outlive_a_shorter_lifetime_set_later(redis: Redis) -> None:
    backend = RedisBackend(redis)
    hour, brief = Limit(3, 3600, Algorithm.CONCURRENCY), Limit(3, 0.1, Algorithm.CONCURRENCY)
    held = await backend.acquire("c", hour, 2)
    assert held.allowed
    assert (await backend.acquire("c", brief)).allowed
    await asyncio.sleep(1.3)  # the brief lease and the key's expiry under `brief` have passed
    assert (await backend.acquire("c", hour, 0)).remaining == 1  # the hour lease still held


@pytest.mark.parametrize("key", ["", "}", "}x", "}}", "\x00}x", "a}b", "{a", "plain"])
async def test_a_keys_companions_always_share_one_slot(redis: Redis, key: str) -> None:
    from redis.crc import key_slot

    from rate_limiter.backends.redis import _keys

    keys = _keys(key, Limit(3, 60, Algorithm.SLIDING_LOG))
    assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    backend = RedisBackend(redis)
    assert (await backend.acquire(key, Limit(3, 60, Algorithm.SLIDING_LOG))).allowed
    await backend.aclose()


def test_escaped_keys_stay_distinct() -> None:
    from rate_limiter.backends import state_key

    keys = ["", "\x00", "}x", "\x00}x", "\x00\x00}x", "x", "\x00x"]
    assert len({state_key(k, Algorithm.GCRA) for k in keys}) == len(keys)


async def test_hot_path_commands_are_cached_per_limit_key_and_cost_within_a_bound(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packed EVALSHA is reused per (limit, key, cost); two limits never share one, a
    different cost is its own command, and the cache starts over at its bound."""
    from rate_limiter.backends import redis as redis_backend

    monkeypatch.setattr(redis_backend, "COMMAND_CACHE", 5)
    backend = RedisBackend(redis)
    await backend.load()
    gcra = Limit.per_minute(10)
    window = Limit.per_minute(10, algorithm=Algorithm.FIXED_WINDOW)
    keys = [f"cache-{time.monotonic_ns()}-{i}" for i in range(4)]
    try:
        for cost, left in ((1, 9), (2, 7), (1, 6)):
            for key in keys:
                for limit in (gcra, window):
                    decision = await backend.acquire(key, limit, cost)
                    assert decision.allowed and decision.remaining == left, (key, limit, cost)
                    assert backend._cached <= 5
        assert backend._lean is not None and backend._lean.ready  # the hot path was taken
    finally:
        await backend.aclose()
