"""Fixtures shared by the rate limiter's tests (the session's Redis is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.redis import AnyRedis, create_redis
from rate_limiter import AsyncBackend, MemoryBackend, RedisBackend


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AnyRedis]:
    """An async client on the session's (emptied) Redis."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[AsyncBackend]:
    """Each backend in turn: the process-local one, and Redis (the session's, emptied)."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    client = create_redis(redis_url)
    backend = RedisBackend(client)
    await backend.load()
    yield backend
    await backend.aclose()
    await client.aclose()
