"""Refunds: what an allowed decision took goes back when its request did not go ahead (another
rule refused it). On every algorithm and backend (memory and a real Redis), never more than
the key still holds; windows moved on by the memory backend's own clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from common.redis import create_redis
from common.redis_server import RedisProcess
from rate_limiter import (
    Algorithm,
    AsyncBackend,
    Decision,
    FallbackBackend,
    Limit,
    MemoryBackend,
    PrefetchBackend,
    RateLimiter,
    RedisBackend,
    SyncRateLimiter,
    SyncRedisBackend,
)
from rate_limiter.algorithms import gcra
from rate_limiter.backends import state_key
from rate_limiter.refunds import refund
from tests.rate_limiter.test_algorithms import Clock
from tests.support import ManualClock

REFUNDED = [a for a in Algorithm if a is not Algorithm.CONCURRENCY]


@pytest.mark.parametrize("algorithm", REFUNDED)
async def test_a_refund_gives_back_what_the_decision_took(
    backend: AsyncBackend, algorithm: Algorithm
) -> None:
    limit = Limit(5, 3600, algorithm)
    big = await backend.acquire("k", limit, 3)
    await backend.acquire("k", limit, 2)
    assert not (await backend.acquire("k", limit)).allowed
    after = await backend.refund("k", limit, 3, big)
    assert (after.allowed, after.remaining) == (True, 3)
    assert [(await backend.acquire("k", limit)).allowed for _ in range(4)] == [True] * 3 + [False]
    assert (await backend.acquire("other", limit, 5)).allowed  # (other keys untouched)


@pytest.mark.parametrize("algorithm", REFUNDED)
async def test_a_refund_moves_the_reset_back_with_the_remaining(
    backend: AsyncBackend, algorithm: Algorithm
) -> None:
    """What the response's reset_after (and the RateLimit header's `t`) says after a refund
    agrees with a peek at the key: the key is full again sooner, or at once."""
    limit = Limit(10, 3600, algorithm)
    held = await backend.acquire("k", limit, 4)
    taken = await backend.acquire("k", limit, 4)
    after = await backend.refund("k", limit, 4, taken)
    peek = await backend.acquire("k", limit, 0)
    assert after.remaining == peek.remaining == 6
    assert after.reset_after == pytest.approx(peek.reset_after, abs=1)
    if algorithm is Algorithm.GCRA:  # (the debt fell from 8 tokens to 4: 360 s each)
        assert taken.reset_after == pytest.approx(2880, abs=1)
        assert after.reset_after == pytest.approx(1440, abs=1)
    emptied = await backend.refund("k", limit, 4, held)
    assert emptied.remaining == 10 and emptied.reset_after == 0


async def test_a_refusal_and_a_lease_give_nothing_back(backend: AsyncBackend) -> None:
    limit = Limit(2, 3600)
    await backend.acquire("k", limit, 2)
    refused = await backend.acquire("k", limit)
    assert await backend.refund("k", limit, 1, refused) == refused
    assert (await backend.acquire("k", limit, 0)).remaining == 0
    leases = Limit(1, 3600, Algorithm.CONCURRENCY)
    held = await backend.acquire("job", leases)
    assert held.allowed and held.lease
    assert await backend.refund("job", leases, 1, held) == held  # (leases are released)
    assert not (await backend.acquire("job", leases)).allowed


async def test_refunds_in_any_order_give_everything_back(backend: AsyncBackend) -> None:
    limit = Limit.per_hour(20)
    taken = [await backend.acquire("k", limit) for _ in range(20)]
    for decision in reversed(taken):  # newest first: each is the top of the debt in turn
        await backend.refund("k", limit, 1, decision)
    assert (await backend.acquire("k", limit, 0)).remaining == 20


async def test_a_refund_over_a_lowered_limit_reports_none_remaining(
    backend: AsyncBackend,
) -> None:
    wide = Limit.per_hour(10)
    last = [await backend.acquire("k", wide) for _ in range(6)][-1]
    assert last.remaining == 4
    after = await backend.refund("k", Limit.per_hour(3), 1, last)  # 5 owed, 3 allowed now
    assert after.remaining == 0  # (not "nothing went back", which would leave the 4)


async def test_the_lua_and_python_refunds_agree(redis: Redis) -> None:
    """The same costs; now and then the oldest allowed decision not refunded yet is: the same
    verdicts and counts from both twins."""
    rb, mb = RedisBackend(redis), MemoryBackend()
    costs = [1, 3, 2, 5, 1, 1, 4, 2, 1, 9, 2, 3, 1, 2]
    for algorithm in REFUNDED:
        limit = Limit(9, 3600, algorithm)
        held: list[tuple[int, Decision, Decision]] = []
        for i, cost in enumerate(costs):
            r = await rb.acquire("twin", limit, cost)
            m = await mb.acquire("twin", limit, cost)
            assert (r.allowed, r.remaining) == (m.allowed, m.remaining), (algorithm, i)
            if r.allowed:
                held.append((cost, r, m))
            if i % 3 == 2 and held:
                was, r, m = held.pop(0)
                r = await rb.refund("twin", limit, was, r)
                m = await mb.refund("twin", limit, was, m)
                assert r.remaining == m.remaining, (algorithm, i, "refund")
    await rb.aclose()


# --- never more than the key still holds (the memory backend's clock moved by the test) ---


@pytest.fixture
def clock() -> Clock:
    return Clock()  # (starts on a whole multiple of 10 s: a window's first instant)


async def test_gcra_gives_back_only_what_has_not_been_repaid(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    limit = Limit(10, 1.0)  # one token every 100 ms, 10 at most
    first = await backend.acquire("k", limit, 5)
    clock.advance(0.3)  # 3 of the 5 repaid: others may have them now
    assert (await backend.acquire("k", limit, 4)).remaining == 4
    after = await backend.refund("k", limit, 5, first)
    # Only the 2 still owed go back (5 would hand out again the 3 others already had).
    assert after.remaining == 6
    assert [(await backend.acquire("k", limit)).allowed for _ in range(7)] == [True] * 6 + [False]
    clock.advance(1.0)
    assert await backend.refund("k", limit, 1, first) == first  # all repaid: nothing goes back
    assert (await backend.acquire("k", limit, 0)).remaining == 10


async def test_gcra_gives_a_busy_keys_units_back_whole(clock: Clock) -> None:
    """On a busy key a decision's tokens sit at the top of the debt, so none of them is repaid
    when the refund comes a round trip later: all go back. A refused user retrying as fast as
    tokens refill then takes nothing from anyone (counting the units as the oldest would have
    lost half a token a retry here)."""
    backend = MemoryBackend(clock=clock)
    limit = Limit(10, 1.0)  # one token every 100 ms
    await backend.acquire("busy", limit, 10)
    await backend.acquire("quiet", limit, 10)  # the same, without the retries
    clock.advance(0.05)
    for _ in range(10):
        clock.advance(0.05)
        retry = await backend.acquire("busy", limit)  # takes the token that just came back
        assert retry.allowed
        clock.advance(0.05)  # the round trip to the rule that refuses it, and back
        back = await backend.refund("busy", limit, 1, retry)
        assert back.remaining == (await backend.acquire("quiet", limit, 0)).remaining
    assert (await backend.acquire("busy", limit, 0)).remaining == 10


async def test_gcra_never_gives_back_tokens_taken_after_a_decision(clock: Clock) -> None:
    """A refund below a decision moves its tokens down the debt; counting them where they
    were taken would then give back later tokens (here C's) once time repaid the rest."""
    backend = MemoryBackend(clock=clock)
    limit = Limit(10, 1.0, burst=15)
    a, b, _ = [await backend.acquire("k", limit, 5) for _ in range(3)]
    assert (await backend.refund("k", limit, 5, a)).remaining == 5
    clock.advance(0.5)  # 5 repaid: all of B's, as they are the oldest now
    assert await backend.refund("k", limit, 5, b) == b  # nothing of B's is owed
    assert (await backend.acquire("k", limit, 0)).remaining == 10  # C's 5 still count


async def test_gcra_refund_holds_when_the_rate_was_raised_meanwhile(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    slow = Limit(1, 1.0, burst=10)
    first = await backend.acquire("k", slow, 5)
    fast = Limit(100, 1.0, burst=10)  # a reload: 5 repaid in the next 50 ms
    clock.advance(0.05)
    assert (await backend.acquire("k", fast, 5)).remaining == 5
    # `first`'s tokens were repaid at the new rate: the refund (with the limit it was decided
    # under) finds nothing of them left (the time since and the old rate would say ~5).
    assert await backend.refund("k", slow, 5, first) == first
    assert (await backend.acquire("k", fast, 0)).remaining == 5


async def test_a_counted_refusal_never_lowers_a_debt_above_a_lowered_burst(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    await backend.acquire("k", Limit(10, 1.0, count_refused=True), 10)
    lowered = Limit(10, 1.0, burst=5, count_refused=True)
    assert not (await backend.acquire("k", lowered)).allowed  # (10 owed: kept, not cut to 5)
    clock.advance(0.1)
    assert not (await backend.acquire("k", lowered)).allowed  # 9 owed still


def test_a_shared_batch_position_never_lowers_the_running_total() -> None:
    """The decisions made from one prefetched batch share its position; one of them given
    back as "the newest" would let a later one take tokens taken after the batch."""
    limit = Limit(10, 1.0, burst=20)  # one token every 100 ms
    batch = {"d": 10.0, "t": 0, "a": 10, "c": 0}  # 10 taken at 0 as one batch: position 10
    state, _ = refund(batch, 0, limit, 1, 0, 10, shared=True)  # one of them comes back
    assert state is not None and state["a"] == 10
    state, _ = gcra(state, 0, limit, 5, None)  # then 5 more are taken, above the batch
    assert state is not None
    # 0.9 s on, the batch's other 9 are repaid and the 5 are all owed: another of the
    # batch's coming back finds nothing (with the total lowered it would take one of the 5).
    assert refund(state, 900_000, limit, 1, 0, 10, shared=True) == (None, None)


async def test_a_fixed_window_gives_back_only_while_it_lasts(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    limit = Limit(5, 10, Algorithm.FIXED_WINDOW)
    first = await backend.acquire("k", limit, 3)
    clock.advance(10)  # the next window: the 3 no longer count
    assert (await backend.acquire("k", limit, 4)).allowed
    assert await backend.refund("k", limit, 3, first) == first  # (not from this window's 4)
    assert [(await backend.acquire("k", limit)).allowed for _ in range(2)] == [True, False]


async def test_a_sliding_window_gives_back_from_the_window_that_counted_them(
    clock: Clock,
) -> None:
    backend = MemoryBackend(clock=clock)
    limit = Limit(10, 10, Algorithm.SLIDING_WINDOW)
    first = await backend.acquire("k", limit, 4)
    clock.advance(10)
    assert (await backend.acquire("k", limit, 2)).remaining == 4  # 4 (previous, all of it) + 2
    clock.advance(5)  # the previous window weighs half: 2 + 2
    assert (await backend.acquire("k", limit, 0)).remaining == 6
    assert (await backend.refund("k", limit, 4, first)).remaining == 8  # its 4 leave it
    assert [(await backend.acquire("k", limit)).allowed for _ in range(9)] == [True] * 8 + [False]
    clock.advance(20)  # two windows on: they weigh nothing, nothing to give back
    again = await backend.acquire("k", limit, 3)
    assert await backend.refund("k", limit, 3, first) == first
    assert (await backend.acquire("k", limit, 0)).remaining == again.remaining


async def test_a_sliding_log_gives_back_its_own_entries_once(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    limit = Limit(5, 10, Algorithm.SLIDING_LOG)
    first = await backend.acquire("k", limit, 2)
    clock.advance(1)
    assert (await backend.acquire("k", limit, 3)).remaining == 0
    assert (await backend.refund("k", limit, 2, first)).remaining == 2
    assert await backend.refund("k", limit, 2, first) == first  # already gone: nothing more
    assert (await backend.acquire("k", limit, 0)).remaining == 2
    clock.advance(10)  # all expired: nothing left to give back
    later = await backend.acquire("k", limit, 5)
    clock.advance(10)
    assert await backend.refund("k", limit, 5, later) == later


async def test_a_gcra_receipt_from_an_earlier_life_of_the_key_gives_nothing(redis: Redis) -> None:
    backend = RedisBackend(redis)
    limit = Limit.per_hour(10)
    old = await backend.acquire("k", limit, 5)
    await redis.delete(state_key("k", Algorithm.GCRA))  # (as if it expired)
    await backend.acquire("k", limit, 7)
    assert await backend.refund("k", limit, 5, old) == old
    assert (await backend.acquire("k", limit, 0)).remaining == 3
    await backend.aclose()


async def test_a_write_by_a_version_without_positions_voids_the_earlier_ones(
    redis: Redis,
) -> None:
    """During a rolling upgrade an instance of the version before refunds keeps the debt
    but not the running total: positions handed out before its write no longer say what
    lies above them, so they give nothing back; later ones count from after it."""
    backend = RedisBackend(redis)
    limit = Limit.per_hour(10)
    first = await backend.acquire("k", limit, 3)
    skey = state_key("k", Algorithm.GCRA)
    sec, usec = await redis.time()
    debt = float(await redis.hget(skey, "d") or 0)
    await redis.hset(skey, mapping={"d": debt + 4, "t": sec * 1_000_000 + usec})  # (its 4)
    assert await backend.refund("k", limit, 3, first) == first
    later = await backend.acquire("k", limit, 1)
    assert await backend.refund("k", limit, 3, first) == first  # (still void)
    assert (await backend.refund("k", limit, 1, later)).remaining == 3  # 10 - 3 - 4
    await backend.aclose()


async def test_a_sliding_log_refund_on_redis_removes_entries_of_that_time_only(
    redis: Redis,
) -> None:
    backend = RedisBackend(redis)
    limit = Limit(6, 3600, Algorithm.SLIDING_LOG)
    first = await backend.acquire("k", limit, 2)
    await backend.acquire("k", limit, 3)
    assert (await backend.refund("k", limit, 2, first)).remaining == 3
    assert await backend.refund("k", limit, 2, first) == first  # already gone: nothing more
    skey = state_key("k", Algorithm.SLIDING_LOG)
    assert await redis.zcard(skey) == 3
    assert await redis.zcount(skey, "-inf", first.at_us) == 0  # (the later call's 3 stay)
    await backend.aclose()


async def _at_window_start(redis: Redis, period: float) -> None:
    """Wait, by Redis's clock, for the first tenth of a window of `period` seconds."""
    sec, usec = await redis.time()
    into = (sec + usec / 1e6) % period
    if into > period / 10:
        await asyncio.sleep(period - into + period / 100)


async def test_the_lua_refunds_give_back_only_what_the_key_still_holds(redis: Redis) -> None:
    """On Redis's own clock: GCRA tokens repaid meanwhile, a window gone by, a window rolled
    over into the previous one."""
    backend = RedisBackend(redis)
    bucket = Limit(10, 1.0)  # one token every 100 ms
    first = await backend.acquire("g", bucket, 5)
    await asyncio.sleep(0.3)  # 3 of the 5 repaid: others may have them now
    await backend.acquire("g", bucket, 4)
    after = await backend.refund("g", bucket, 5, first)
    # The debt is back to the 4 of the second call whatever the timing (5 back would make
    # it about 1, and 9 remaining).
    assert 4 <= after.remaining <= 6
    # A busy key: each retry takes the token that just came back and returns it 30 ms later,
    # all of it (the cost less the time since would lose 0.3 of a token each time).
    await backend.acquire("busy", bucket, 10)
    await backend.acquire("quiet", bucket, 10)
    for _ in range(10):
        await asyncio.sleep(0.07)
        retry = await backend.acquire("busy", bucket)
        await asyncio.sleep(0.03)
        if retry.allowed:
            await backend.refund("busy", bucket, 1, retry)
    busy = (await backend.acquire("busy", bucket, 0)).remaining
    assert busy >= (await backend.acquire("quiet", bucket, 0)).remaining - 1
    fixed = Limit(5, 1.0, Algorithm.FIXED_WINDOW)
    await _at_window_start(redis, 1.0)
    first = await backend.acquire("f", fixed, 3)
    await asyncio.sleep(1.0)  # the next window
    await backend.acquire("f", fixed, 4)
    assert await backend.refund("f", fixed, 3, first) == first  # (not from this window's 4)
    sliding = Limit(10, 1.0, Algorithm.SLIDING_WINDOW)
    await _at_window_start(redis, 1.0)
    first = await backend.acquire("s", sliding, 4)
    await asyncio.sleep(1.4)  # the next window's middle: the 4 weigh about half
    assert (await backend.acquire("s", sliding, 2)).remaining in (5, 6, 7)  # (timing)
    assert (await backend.refund("s", sliding, 4, first)).remaining == 8  # they leave it
    await backend.aclose()


# --- the limiter, prefetching and the fallback ---------------------------------------------


async def test_the_limiters_refund_through_their_backend(redis: Redis, redis_url: str) -> None:
    limiter = RateLimiter(Limit.per_hour(2), RedisBackend(redis))
    first = await limiter.acquire("k")
    await limiter.acquire("k")
    assert (await limiter.refund("k", first)).remaining == 1
    assert (await limiter.acquire("k")).allowed
    with sync_redis.Redis.from_url(redis_url) as client:
        blocking = SyncRateLimiter(
            Limit.per_hour(2, algorithm=Algorithm.FIXED_WINDOW), SyncRedisBackend(client)
        )
        taken = blocking.acquire("s", 2)
        assert blocking.refund("s", taken, 2).remaining == 2
        assert blocking.acquire("s", 2).allowed


async def test_refunding_a_lease_releases_it(redis: Redis) -> None:
    limiter = RateLimiter(Limit(1, 3600, Algorithm.CONCURRENCY), RedisBackend(redis))
    held = await limiter.acquire("job")
    assert held.lease and not (await limiter.acquire("job")).allowed
    assert (await limiter.refund("job", held)).lease is None
    assert (await limiter.acquire("job")).allowed


async def test_prefetched_units_go_back_into_the_batch_or_else_to_redis(redis: Redis) -> None:
    primary = RedisBackend(redis)
    clock = ManualClock()
    backend = PrefetchBackend(primary, ttl=0.05, share=0.1, clock=clock)
    limit = Limit(1000, 3600)
    first = await backend.acquire("k", limit)  # a batch of one: nothing known yet
    clock.now += 0.001
    second = await backend.acquire("k", limit)  # a batch of 50, 49 left here
    assert backend.fetches == 2
    skey = state_key("k", Algorithm.GCRA)

    async def debt_now() -> float:
        return float(await redis.hget(skey, "d") or 0)

    debt = await debt_now()
    # Taken with the batch that is still here: back into it, spent here; Redis unchanged.
    assert (await backend.refund("k", limit, 1, second)).remaining == second.remaining + 1
    assert await debt_now() == debt
    for _ in range(50):
        assert (await backend.acquire("k", limit)).allowed
    assert backend.fetches == 2
    # Taken before it (the first batch): back to Redis.
    await backend.refund("k", limit, 1, first)
    assert await debt_now() < debt - 0.99
    await primary.aclose()


@pytest.mark.slow  # starts and stops its own redis-server
async def test_the_fallback_refunds_where_the_decision_was_made(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    redis = create_redis(server.url, timeout=0.2)
    backend = FallbackBackend(RedisBackend(redis), retry_interval=60)
    limit = Limit.per_hour(3)
    try:
        shared = await backend.acquire("k", limit)
        assert not shared.degraded
        server.stop()
        local = await backend.acquire("k", limit, 3)
        assert local.degraded and local.remaining == 0
        assert (await backend.refund("k", limit, 3, local)).remaining == 3  # the local one's
        # Redis down: the units it holds stay taken (no error; they come back with time).
        assert await backend.refund("k", limit, 1, shared) == shared
    finally:
        await backend.primary.aclose()  # type: ignore[attr-defined]
        await redis.aclose()
