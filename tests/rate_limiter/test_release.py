"""Releasing concurrency leases: a client's lease id is never trusted, and a failed script
fails one call, never the whole process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from rate_limiter import Algorithm, FallbackBackend, Limit, RedisBackend
from rate_limiter.backends import state_key
from rate_limiter.errors import BackendError
from tests.rate_limiter.factories import check_body, client_for, write_rules

FORGED = "0" * 32 + ".9999999999"  # well-formed, claims a huge cost, was never granted


def release_body(lease: str) -> dict[str, object]:
    return {"domain": "api", "descriptors": [{"key": "job", "value": "j"}], "lease": lease}


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_forged_lease_never_degrades_the_service(
    tmp_path: Path, redis_url: str, mode: str
) -> None:
    async with client_for(write_rules(tmp_path), redis_url, on_backend_error=mode) as client:
        for _ in range(5):
            await client.post("/api/check", json=check_body(("user", "u1")))
        # Malformed ids (the reviewer's `x.100000`) are refused before they reach Redis.
        for bad in ("x.100000", "x", "0" * 32 + ".0", "0" * 32 + ".-5", "0" * 32 + ".1_000"):
            resp = await client.post("/api/release", json=release_body(bad))
            assert resp.status_code == 422, (bad, resp.text)
        # A well-formed id claiming a huge cost costs one lookup and releases nothing.
        started = time.perf_counter()
        resp = await client.post("/api/release", json=release_body(FORGED))
        assert resp.status_code == 200, resp.text
        assert time.perf_counter() - started < 0.5
        after = (await client.post("/api/check", json=check_body(("user", "u1")))).json()
        assert after["allowed"] is False  # still limited, from Redis
        assert after["decisions"][0]["degraded"] is False
        fresh = (await client.post("/api/check", json=check_body(("user", "fresh")))).json()
        assert fresh["allowed"] is True and fresh["decisions"][0]["degraded"] is False


async def test_a_forged_lease_cannot_free_anyone_elses_slots(redis: Redis) -> None:
    backend = RedisBackend(redis)
    limit = Limit(3, 3600, Algorithm.CONCURRENCY)
    held = await backend.acquire("k", limit, 3)
    assert held.allowed and held.lease
    prefix = held.lease.split(".")[0]
    for forged in (FORGED, f"{prefix}.2", f"{prefix}.4", held.lease + "0"):
        assert await backend.release("k", limit, forged) is False
    assert await redis.zcard(state_key("k", Algorithm.CONCURRENCY)) == 3
    assert await backend.release("k", limit, held.lease) is True
    assert await redis.zcard(state_key("k", Algorithm.CONCURRENCY)) == 0
    assert await backend.release("k", limit, held.lease) is False  # (twice: nothing held)
    await backend.aclose()


def test_sync_release_of_a_forged_lease_is_a_no_op(redis_url: str) -> None:
    from rate_limiter import SyncRedisBackend

    with sync_redis.Redis.from_url(redis_url) as client:
        backend = SyncRedisBackend(client)
        limit = Limit(2, 3600, Algorithm.CONCURRENCY)
        held = backend.acquire_sync("s", limit, 2)
        assert backend.release_sync("s", limit, "x.100000") is False
        assert backend.release_sync("s", limit, FORGED) is False
        assert client.zcard(state_key("s", Algorithm.CONCURRENCY)) == 2
        assert held.lease
        assert backend.release_sync("s", limit, held.lease) is True
        assert client.zcard(state_key("s", Algorithm.CONCURRENCY)) == 0


async def test_an_expired_lease_frees_nothing(redis: Redis) -> None:
    import asyncio

    from rate_limiter import MemoryBackend

    limit = Limit(2, 0.2, Algorithm.CONCURRENCY)  # leases live 0.2 s
    redis_backend = RedisBackend(redis)
    for backend in (redis_backend, MemoryBackend()):
        held = await backend.acquire("exp", limit, 2)
        assert held.lease
        await asyncio.sleep(0.25)
        assert await backend.release("exp", limit, held.lease) is False
    await redis_backend.aclose()


def test_the_memory_backend_says_whether_a_lease_was_held() -> None:
    from rate_limiter import MemoryBackend

    backend = MemoryBackend()
    limit = Limit(2, 3600, Algorithm.CONCURRENCY)
    assert backend.release_sync("m", limit, FORGED) is False  # (no state at all yet)
    held = backend.acquire_sync("m", limit, 2)
    assert held.lease
    assert backend.release_sync("m", limit, FORGED) is False
    assert backend.release_sync("m", limit, held.lease) is True
    assert backend.release_sync("m", limit, held.lease) is False
    # Releasing on a limit of another algorithm is a no-op: its state stays as it is.
    window = Limit(1, 3600, Algorithm.FIXED_WINDOW)
    assert backend.acquire_sync("m", window).allowed
    assert backend.release_sync("m", window, held.lease) is False
    assert not backend.acquire_sync("m", window).allowed


async def test_a_script_error_fails_one_call_not_the_backend(redis: Redis) -> None:
    # A key of the wrong type makes the script fail with WRONGTYPE: a ResponseError.
    await redis.set(state_key("broken", Algorithm.GCRA), "not a hash")
    backend = FallbackBackend(RedisBackend(redis), mode="closed")
    with pytest.raises(BackendError):
        await backend.acquire("broken", Limit.per_minute(10))
    assert not backend.degraded
    other = await backend.acquire("other", Limit.per_minute(10))
    assert other.allowed and not other.degraded
    await backend.primary.aclose()  # type: ignore[attr-defined]


async def test_a_script_error_is_a_502_for_that_request_only(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    await redis.set(state_key("api|user=u1", Algorithm.GCRA), "not a hash")
    async with client_for(write_rules(tmp_path), redis_url, on_backend_error="open") as client:
        resp = await client.post("/api/check", json=check_body(("user", "u1")))
        assert resp.status_code == 502, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        for _ in range(5):
            await client.post("/api/check", json=check_body(("user", "u2")))
        refused = (await client.post("/api/check", json=check_body(("user", "u2")))).json()
        assert refused["allowed"] is False and refused["decisions"][0]["degraded"] is False
