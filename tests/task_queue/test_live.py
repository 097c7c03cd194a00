"""Claims in Redis, on a real server: each dispatch of a job is claimed once, and a deferred
or cancelled dispatch never; claims SQL has not recorded wait where the reaper looks."""

from __future__ import annotations

import asyncio
import time

import redis as sync_redis
from redis import asyncio as aioredis

from task_queue.live import Live, mark_cancelled


def test_a_dispatch_is_claimed_once_and_a_stale_one_never(redis_url: str) -> None:
    live = Live(sync_redis.Redis.from_url(redis_url))
    before = time.time()
    started = live.claim("j1", 1, "node-a/11")
    assert started is not None and before - 1 < started < time.time() + 1
    assert live.claim("j1", 1, "node-b/12") is None  # the same message, redelivered
    assert live.claim("j1", 2, "node-b/12") is not None  # the job sent again (a retry)
    assert live.claim("j1", 1, "node-a/11") is None  # an older message: stale
    assert live.claim("j2", 1, "node-a/11") is not None  # other jobs are their own


def test_a_deferred_dispatch_is_never_claimed_but_the_next_one_is(redis_url: str) -> None:
    live = Live(sync_redis.Redis.from_url(redis_url))
    live.defer("j1", 3)
    assert live.claim("j1", 3, "node-a/11") is None
    assert live.claim("j1", 4, "node-a/11") is not None


def test_a_cancel_stops_later_claims_and_says_whether_one_ran(redis_url: str) -> None:
    live = Live(sync_redis.Redis.from_url(redis_url))

    async def cancel(job_id: str, dispatch: int) -> bool:
        async with aioredis.Redis.from_url(redis_url) as redis:
            return await mark_cancelled(redis, job_id, dispatch)

    assert asyncio.run(cancel("queued", 1)) is False
    assert live.claim("queued", 1, "node-a/11") is None  # cancelled before any worker took it
    assert live.claim("queued", 2, "node-a/11") is not None  # replayed: a new dispatch runs

    assert live.claim("running", 1, "node-a/11") is not None
    assert asyncio.run(cancel("running", 1)) is True  # a worker has it: it must be stopped


def test_unrecorded_claims_are_listed_until_sql_has_them(redis_url: str) -> None:
    live = Live(sync_redis.Redis.from_url(redis_url))
    started = live.claim("j1", 2, "node-a/11")
    assert started is not None
    live.claim("j2", 1, "node-b/12")
    assert live.unrecorded(before=started - 10) == []  # nothing that old
    found = {u.job_id: u for u in live.unrecorded(before=time.time() + 10)}
    assert set(found) == {"j1", "j2"}
    assert (found["j1"].dispatch, found["j1"].worker) == (2, "node-a/11")
    assert found["j1"].started == started
    live.recorded(("j1", 2))
    assert [u.job_id for u in live.unrecorded(before=time.time() + 10)] == ["j2"]
