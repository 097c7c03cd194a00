"""A hot key's requests in one event-loop turn share one script call, and each still gets the
decision it would have had alone (real Redis; call counts from Redis's own statistics)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from rate_limiter import Algorithm, Decision, Limit, MemoryBackend, RedisBackend
from rate_limiter.backends import redis as redis_backend
from tests.rate_limiter.factories import script_calls

COALESCED = [Algorithm.GCRA, Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW]


@pytest.fixture
async def backend(redis: Redis) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis)
    await backend.load()
    await backend.acquire("warm-up", Limit.per_second(1))  # the lean connection is up
    yield backend
    await backend.aclose()


async def _together(
    backend: RedisBackend, key: str, limit: Limit, costs: list[int]
) -> list[Decision]:
    """The costs asked for in one loop turn, in this order."""
    return await asyncio.gather(*(backend.acquire(key, limit, c) for c in costs))


def _same(coalesced: Decision, alone: Decision) -> None:
    assert (coalesced.allowed, coalesced.limit, coalesced.remaining) == (
        alone.allowed,
        alone.limit,
        alone.remaining,
    )
    assert math.isinf(coalesced.retry_after) == math.isinf(alone.retry_after)
    if not math.isinf(alone.retry_after):
        assert coalesced.retry_after == pytest.approx(alone.retry_after, abs=1.0)
    assert coalesced.reset_after == pytest.approx(alone.reset_after, abs=1.0)


@pytest.mark.parametrize("count_refused", [False, True])
@pytest.mark.parametrize("algorithm", COALESCED)
async def test_one_script_call_gives_each_request_its_own_sequential_decision(
    backend: RedisBackend, redis: Redis, algorithm: Algorithm, count_refused: bool
) -> None:
    """Costs mixed on purpose: peeks, a cost above the capacity, refusals in the middle.
    The twin in Python, run one cost after another at the same instant, is the reference."""
    limit = Limit(9, 86400, algorithm, count_refused=count_refused)
    costs = [1, 3, 0, 2, 12, 4, 1, 0, 2, 1, 1]
    await redis.config_resetstat()
    coalesced = await _together(backend, "hot", limit, costs)
    assert await script_calls(redis) == 1

    sec, usec = await redis.time()
    now = sec * 1_000_000 + usec
    twin = MemoryBackend(clock=lambda: now)
    for i, cost in enumerate(costs):
        alone = await twin.acquire("hot", limit, cost)
        assert coalesced[i].allowed == alone.allowed, (i, cost)
        _same(coalesced[i], alone)
    # And the state it left is the one the sequence leaves.
    peek = await backend.acquire("hot", limit, 0)
    _same(peek, await twin.acquire("hot", limit, 0))


async def test_keys_limits_and_algorithms_are_never_merged(
    backend: RedisBackend, redis: Redis
) -> None:
    per_minute, per_hour = Limit.per_minute(3), Limit.per_hour(3)
    window = Limit(3, 60, Algorithm.FIXED_WINDOW)
    await redis.config_resetstat()
    asks = [("a", per_minute), ("b", per_minute), ("a", per_hour), ("a", window)] * 4
    results = await asyncio.gather(*(backend.acquire(k, lim) for k, lim in asks))
    assert await script_calls(redis) == 4  # one per (key, limit), all in one turn
    own = [[results[j] for j in range(i, len(asks), 4)] for i in range(4)]
    for i in (0, 1, 3):
        assert [d.allowed for d in own[i]] == [True, True, True, False], asks[i]
        assert [d.remaining for d in own[i]] == [2, 1, 0, 0]
    # One key and algorithm is one state whatever the limit (a limit change keeps what was
    # consumed): the per-hour group, sent after the per-minute one, finds it used up.
    assert [d.allowed for d in own[2]] == [False] * 4


async def test_a_turn_larger_than_a_group_is_split_and_stays_exact(
    backend: RedisBackend, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "GROUP_MAX", 16)
    limit = Limit(40, 3600)
    await redis.config_resetstat()
    results = await _together(backend, "k", limit, [1] * 50)
    assert await script_calls(redis) == 4  # 16 + 16 + 16 + 2
    assert [d.allowed for d in results] == [True] * 40 + [False] * 10
    assert [d.remaining for d in results[:40]] == list(range(39, -1, -1))


async def test_a_cancelled_request_does_not_disturb_the_others(backend: RedisBackend) -> None:
    limit = Limit(10, 3600)
    tasks = [asyncio.create_task(backend.acquire("k", limit)) for _ in range(6)]
    await asyncio.sleep(0)  # all six have joined the group; it is not sent yet
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    kept = [r for r in results if isinstance(r, Decision)]
    # Its cost was already on its way to Redis, so it counts (as an uncoalesced one would).
    assert [d.remaining for d in kept] == [9, 8, 6, 5, 4]


async def test_a_connection_lost_before_the_group_goes_out_fails_it_and_the_next_reconnects(
    backend: RedisBackend,
) -> None:
    limit = Limit(10, 3600)
    tasks = [asyncio.create_task(backend.acquire("k", limit)) for _ in range(3)]
    await asyncio.sleep(0)  # joined, not yet sent
    lean = backend._lean
    assert lean is not None and lean._protocol is not None
    lean._protocol.connection_lost(ConnectionResetError("reset by peer"))  # as asyncio reports it
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    decision = await backend.acquire("k", limit)
    assert decision.allowed and decision.remaining == 9  # nothing was counted for the lost ones


async def test_a_lone_request_cancelled_on_its_way_keeps_the_replies_in_line(
    backend: RedisBackend,
) -> None:
    """A group of one hands its reply to the caller's own future: cancelled, that future
    still takes its reply off the line, so the next caller gets its own."""
    limit = Limit(10, 3600)
    lone = asyncio.create_task(backend.acquire("a", limit))
    other = asyncio.create_task(backend.acquire("b", Limit(3, 3600)))
    await asyncio.sleep(0)  # both joined (two keys: two groups of one), not yet sent
    lone.cancel()
    assert (await other).remaining == 2
    with pytest.raises(asyncio.CancelledError):
        await lone
    assert (await backend.acquire("a", limit)).remaining == 8  # the cancelled one counted
    # Lost before it went out: the cancelled one is left alone, the next in line still fails.
    lone = asyncio.create_task(backend.acquire("a", limit))
    other = asyncio.create_task(backend.acquire("b", Limit(3, 3600)))
    await asyncio.sleep(0)
    lone.cancel()
    lean = backend._lean
    assert lean is not None and lean._protocol is not None
    lean._protocol.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(asyncio.CancelledError):
        await lone
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(other, 2)
    assert (await backend.acquire("a", limit)).remaining == 7


async def test_coalescing_can_be_turned_off(redis: Redis) -> None:
    backend = RedisBackend(redis, coalesce=False)
    await backend.load()
    await backend.acquire("warm-up", Limit.per_second(1))
    try:
        await redis.config_resetstat()
        results = await _together(backend, "k", Limit(5, 3600), [1] * 8)
        assert await script_calls(redis) == 8
        assert [d.allowed for d in results] == [True] * 5 + [False] * 3
    finally:
        await backend.aclose()


async def test_a_hot_key_costs_redis_a_fraction_of_the_script_time(
    backend: RedisBackend, redis: Redis
) -> None:
    """What coalescing is for: the same 2,000 decisions, 50 at a time, with and without.
    Redis's own accounting (not a wall clock): the hot key's shard does several times less."""
    limit = Limit(10**9, 1)

    async def spent(b: RedisBackend) -> float:
        await redis.config_resetstat()
        for _ in range(40):
            await _together(b, f"spent-{time.monotonic_ns()}", limit, [1] * 50)
        stats = await redis.info("commandstats")
        return float(stats["cmdstat_evalsha"]["usec"])

    single = RedisBackend(redis, coalesce=False)
    await single.acquire("warm-up", Limit.per_second(1))
    try:
        assert await spent(backend) * 3 < await spent(single)
    finally:
        await single.aclose()
