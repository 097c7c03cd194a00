"""Prefetching (opt-in): a busy GCRA key's tokens taken from Redis in batches and spent in
the process. Real Redis; a test that needs time to pass for the process only (a batch's
expiry) moves the backend's own clock, never Redis's."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from common.redis import create_redis
from common.redis_server import RedisProcess
from rate_limiter import Algorithm, FallbackBackend, Limit, PrefetchBackend, RedisBackend
from rate_limiter.backends import state_key
from tests.rate_limiter.factories import script_calls
from tests.support import ManualClock as Clock


@pytest.fixture
async def primary(redis: Redis) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis)
    await backend.load()
    yield backend
    await backend.aclose()


async def _redis_remaining(primary: RedisBackend, key: str, limit: Limit) -> int:
    return (await primary.acquire(key, limit, 0)).remaining  # a peek, straight to Redis


async def test_the_script_grants_up_to_want_and_never_fewer_than_the_cost(
    primary: RedisBackend,
) -> None:
    limit = Limit(100, 3600)
    decision, granted, now_us = await primary.prefetch("k", limit, 1, 30)
    assert decision.allowed and granted == 30 and decision.remaining == 70
    assert now_us == pytest.approx(time.time() * 1e6, abs=5e6)  # Redis's clock, in µs
    decision, granted, _ = await primary.prefetch("k", limit, 5, 100)  # only 70 are left
    assert decision.allowed and granted == 70 and decision.remaining == 0
    decision, granted, _ = await primary.prefetch("k", limit, 1, 10)
    assert not decision.allowed and granted == 0
    assert decision.retry_after == pytest.approx(36, abs=1)  # one token: 3600 s / 100
    decision, granted, _ = await primary.prefetch("other", limit, 101, 200)
    assert not decision.allowed and granted == 0 and math.isinf(decision.retry_after)
    # It shares the bucket that plain decisions use.
    assert await _redis_remaining(primary, "k", limit) == 0
    with pytest.raises(ValueError, match="only GCRA"):
        await primary.prefetch("k", Limit(10, 1, Algorithm.FIXED_WINDOW), 1, 5)


async def test_a_redis_that_lost_its_scripts_gets_the_prefetch_script_again(
    redis: Redis, primary: RedisBackend
) -> None:
    limit = Limit(100, 3600)
    await primary.prefetch("k", limit, 1, 1)
    await redis.script_flush()  # as a restarted Redis would have it
    decision, granted, _ = await primary.prefetch("k", limit, 1, 5)
    assert decision.allowed and granted == 5 and decision.remaining == 94


async def test_a_refund_gives_back_only_what_has_not_been_repaid_meanwhile(
    primary: RedisBackend,
) -> None:
    limit = Limit(10, 1.0)  # one token back every 100 ms
    first, granted, taken_us = await primary.prefetch("k", limit, 1, 10)
    assert granted == 10  # 1 spent, 9 held
    position = first.position - 1 + granted  # (the batch's top)
    await asyncio.sleep(0.25)  # 2.5 tokens repaid...
    assert (await primary.acquire("k", limit, 2)).allowed  # ...and another client takes 2
    decision, _, _ = await primary.prefetch(
        "k", limit, 1, 1, refund=9, taken_us=taken_us, refund_position=position
    )
    # Of the batch's 10, about 7.5 were still owed (the spent one counts as the first
    # repaid): what is left is about what it would be had the 9 never been taken (1 + 2 + 1
    # spent, 6 or 7 remaining). Giving all 9 back would leave 9: the 2 the other client took
    # would have been handed out twice.
    assert decision.allowed and decision.remaining <= 7
    assert decision.remaining >= 5


async def test_unspent_tokens_of_a_busy_key_go_back_whole(primary: RedisBackend) -> None:
    """A busy key's batch sits at the top of its debt: none of it is repaid when it comes
    back, so all of it goes back (the time since would have lost 3 tokens here)."""
    limit = Limit(10, 1.0, burst=100)  # one token every 100 ms
    for key in ("busy", "quiet"):
        await primary.acquire(key, limit, 50)  # a debt that takes 5 s to repay
    first, granted, taken_us = await primary.prefetch("busy", limit, 1, 10)
    assert granted == 10
    await primary.acquire("quiet", limit, 1)  # the same, without the 9 held
    await asyncio.sleep(0.3)  # 3 repaid: the oldest of the debt, not the batch's
    position = first.position - 1 + granted
    await primary.prefetch(
        "busy", limit, 1, 1, refund=9, taken_us=taken_us, refund_position=position
    )
    await primary.acquire("quiet", limit, 1)
    quiet = await _redis_remaining(primary, "quiet", limit)
    assert await _redis_remaining(primary, "busy", limit) >= quiet - 1


async def test_a_decision_from_an_expired_batch_is_refunded_to_redis(
    redis: Redis, primary: RedisBackend
) -> None:
    clock = Clock()
    backend = PrefetchBackend(primary, ttl=0.05, share=0.1, clock=clock)
    limit = Limit(1000, 3600)
    await backend.acquire("k", limit)  # a batch of one
    clock.now += 0.001
    await backend.acquire("k", limit)  # a batch of 50: 49 here
    local = await backend.acquire("k", limit)
    assert backend.fetches == 2
    clock.now += 0.06  # expired: the refund cannot go back into it
    debt = float(await redis.hget(state_key("k", Algorithm.GCRA), "d") or 0)
    await backend.refund("k", limit, 1, local)
    assert float(await redis.hget(state_key("k", Algorithm.GCRA), "d") or 0) < debt - 0.99


async def test_a_busy_key_asks_redis_for_a_fraction_of_its_decisions(
    redis: Redis, primary: RedisBackend
) -> None:
    backend = PrefetchBackend(primary, ttl=0.05, share=0.01)
    limit = Limit(1_000_000, 3600)  # a big bucket that refills slowly (278 tokens a second)
    before = await script_calls(redis)
    decisions = []
    for _ in range(100):  # 100 loop turns of 32 requests
        decisions += await asyncio.gather(*(backend.acquire("hot", limit) for _ in range(32)))
    calls = await script_calls(redis) - before
    assert all(d.allowed for d in decisions)
    assert calls < len(decisions) / 10
    assert backend.fetches == calls
    # Every decision sees Redis's count plus this process's unspent tokens: never more than
    # the bucket holds, and the last one down from full by what was spent here (less what
    # Redis refilled meanwhile: a few hundred tokens at most).
    assert all(d.remaining <= limit.capacity for d in decisions)
    spent = limit.capacity - len(decisions)
    assert spent <= decisions[-1].remaining <= spent + 600


async def test_a_waiting_crowd_shares_one_fetch(primary: RedisBackend) -> None:
    backend = PrefetchBackend(primary, ttl=0.05, share=0.01)
    limit = Limit.per_second(1_000_000)
    first = await asyncio.gather(*(backend.acquire("k", limit) for _ in range(64)))
    # The first request fetches a batch of one (nothing is known of the key yet), the
    # other 63 wait for it, then one of them fetches for all (sized by their number).
    assert all(d.allowed for d in first)
    assert backend.fetches == 2


async def test_a_key_asked_rarely_is_decided_exactly_as_without_prefetching(
    primary: RedisBackend,
) -> None:
    backend = PrefetchBackend(primary, ttl=0.05, share=0.01)
    limit = Limit(5, 1.0)  # capacity 5 x share 0.01 < 1: batches of one
    ours = [await backend.acquire("a", limit) for _ in range(6)]
    exact = [await primary.acquire("b", limit) for _ in range(6)]
    assert [(d.allowed, d.remaining) for d in ours] == [(d.allowed, d.remaining) for d in exact]
    assert [d.allowed for d in ours] == [True] * 5 + [False]
    assert backend.fetches == 6


async def test_tokens_expire_after_ttl_and_go_back_with_the_next_fetch(
    primary: RedisBackend,
) -> None:
    clock = Clock()
    backend = PrefetchBackend(primary, ttl=0.05, share=0.1, clock=clock)
    limit = Limit(1000, 3600)  # no refill to speak of within the test
    await backend.acquire("k", limit)  # a batch of one: nothing known yet
    clock.now += 0.001  # one request a millisecond: a batch of 50 for the next 50 ms
    second = await backend.acquire("k", limit)
    assert backend.fetches == 2
    assert second.remaining == 998  # Redis's 949 plus the 49 unspent here
    assert await _redis_remaining(primary, "k", limit) == 949
    clock.now += 0.001
    third = await backend.acquire("k", limit)
    assert (third.allowed, third.remaining, backend.fetches) == (True, 997, 2)  # spent here
    clock.now += 0.05  # the 48 left have expired: never spent, and given back
    fourth = await backend.acquire("k", limit)
    assert fourth.allowed and backend.fetches == 3
    # 4 spent and a small batch for the next 50 ms (2 asked in 51 ms: a batch of 2). (The
    # 48 given back are less the refill of the milliseconds they were held: a fraction.)
    assert await _redis_remaining(primary, "k", limit) >= 1000 - 4 - 1 - 1


async def test_a_refusal_is_kept_until_its_retry_after_unless_refusals_count(
    redis: Redis, primary: RedisBackend
) -> None:
    clock = Clock()
    backend = PrefetchBackend(primary, ttl=0.05, share=1.0, clock=clock)
    limit = Limit(3, 3.0)  # one token a second
    assert [(await backend.acquire("k", limit)).allowed for _ in range(3)] == [True] * 3
    refused = await backend.acquire("k", limit)
    assert not refused.allowed and refused.retry_after == pytest.approx(1, abs=0.05)
    calls = await script_calls(redis)
    clock.now += 0.5
    again = await backend.acquire("k", limit)
    assert not again.allowed and again.retry_after == pytest.approx(0.5, abs=0.05)
    assert await script_calls(redis) == calls  # decided here
    await asyncio.sleep(1.1)  # Redis refills one token; the refusal has run out here too
    clock.now += 0.6
    assert (await backend.acquire("k", limit)).allowed

    counted = Limit(3, 3.0, count_refused=True)
    for _ in range(4):
        await backend.acquire("c", counted)
    calls = await script_calls(redis)
    assert not (await backend.acquire("c", counted)).allowed
    assert await script_calls(redis) == calls + 1  # counted in Redis, not kept here


async def test_other_algorithms_and_peeks_go_straight_to_redis(
    redis: Redis, primary: RedisBackend
) -> None:
    backend = PrefetchBackend(primary, ttl=0.05, share=1.0)
    window = Limit(100, 60, Algorithm.FIXED_WINDOW)
    calls = await script_calls(redis)
    for _ in range(5):
        await backend.acquire("k", window)
    await backend.acquire("k", Limit(100, 60), 0)
    assert await script_calls(redis) == calls + 6
    assert backend.fetches == 0


async def test_limits_opt_in_or_out_of_prefetching(redis: Redis, primary: RedisBackend) -> None:
    busy = [None, True, False]  # prefetch= of three otherwise equal busy limits

    async def calls_for(backend: PrefetchBackend, prefetch: bool | None) -> int:
        """Script calls for 100 decisions one after another (as a busy key asks: concurrent
        ones for one key would share a call even in exact mode)."""
        limit = Limit.per_second(1_000_000, prefetch=prefetch)
        before = await script_calls(redis)
        for _ in range(100):
            assert (await backend.acquire(f"k{prefetch}", limit)).allowed
        return await script_calls(redis) - before

    # By default every GCRA limit is prefetched, but those that say prefetch=False ...
    everyone = PrefetchBackend(primary, ttl=0.05, share=0.01)
    calls = [await calls_for(everyone, p) for p in busy]
    assert calls[0] < 25 and calls[1] < 25 and calls[2] == 100, calls
    # ... and with default=False (the service's default) only those that say prefetch=True.
    opted_in = PrefetchBackend(primary, ttl=0.05, share=0.01, default=False)
    calls = [await calls_for(opted_in, p) for p in busy]
    assert calls[0] == 100 and calls[1] < 25 and calls[2] == 100, calls


def _hammer(url: str, limit: Limit, seconds: float, barrier: Any, out: Any) -> None:
    """One process: 16 tasks acquiring as fast as they can through a PrefetchBackend."""

    async def main() -> tuple[int, int, int]:
        redis = create_redis(url)
        primary = RedisBackend(redis)
        await primary.load()
        backend = PrefetchBackend(primary, ttl=0.05, share=0.1)
        await primary.acquire("warm-up", limit)
        admitted = attempts = 0

        async def task(deadline: float) -> None:
            nonlocal admitted, attempts
            while time.time() < deadline:
                attempts += 1
                decision = await backend.acquire("hot", limit)
                admitted += decision.allowed  # (`x += await ...` would read x before the await)

        barrier.wait()
        deadline = time.time() + seconds
        await asyncio.gather(*(task(deadline) for _ in range(16)))
        await primary.aclose()
        await redis.aclose()
        return admitted, attempts, backend.fetches

    out.put(asyncio.run(main()))


@pytest.mark.slow
def test_four_processes_stay_within_the_bound_shifted_by_ttl(redis_url: str) -> None:
    rate, burst, ttl, processes = 2000, 200, 0.05, 4
    limit = Limit(rate, 1.0, burst=burst)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(redis_url, limit, 0.8, barrier, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    with sync_redis.Redis.from_url(redis_url) as client:
        sec, usec = client.time()
        t0 = sec + usec / 1e6
        barrier.wait()
        results = [out.get(timeout=60) for _ in procs]
        sec, usec = client.time()
        span = sec + usec / 1e6 - t0
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    admitted = sum(r[0] for r in results)
    attempts = sum(r[1] for r in results)
    fetches = sum(r[2] for r in results)
    assert attempts > 2 * admitted  # the limit was really pressed
    assert admitted <= burst + math.floor(rate * (span + ttl))
    assert admitted >= 0.8 * (burst + rate * 0.8)  # nor does it refuse much too early
    # (How many of the attempts were decided in the processes is not asserted here: once
    # the bucket is empty every new token is a round trip, and how many refusals fall inside
    # a kept refusal's retry_after (0.5 ms at this rate) depends on the machine's speed. The
    # saving is shown where the bucket has room: test_a_busy_key_asks_redis_for_a_fraction.)
    assert fetches > 0  # (the processes did take batches)


async def test_redis_down_is_handled_by_the_fallback_around_it(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    redis = create_redis(server.url, timeout=0.2)
    primary = RedisBackend(redis)
    await primary.load()
    backend = FallbackBackend(
        PrefetchBackend(primary, ttl=0.05, share=1.0), mode="closed", retry_interval=0.1
    )
    limit = Limit(1000, 3600)
    try:
        assert (await backend.acquire("k", limit)).allowed
        server.stop()
        await asyncio.sleep(0.06)  # any tokens held have expired
        down = await asyncio.gather(*(backend.acquire("k", limit) for _ in range(8)))
        assert all(d.degraded and not d.allowed for d in down)
        server.start()
        await asyncio.sleep(0.15)
        back = await backend.acquire("k", limit)
        assert back.allowed and not back.degraded
    finally:
        await primary.aclose()
        await redis.aclose()


def test_settings_reject_a_bad_share_or_ttl(primary: RedisBackend) -> None:
    with pytest.raises(ValueError, match="ttl"):
        PrefetchBackend(primary, ttl=0)
    with pytest.raises(ValueError, match="share"):
        PrefetchBackend(primary, share=1.5)
