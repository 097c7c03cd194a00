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


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[AsyncBackend]:
    """Each backend in turn: the process-local one, Redis and a Redis Cluster (the session's,
    emptied; on the cluster the backend goes through redis-py's cluster client)."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    fixture = "redis_url" if request.param == "redis" else "redis_cluster_url"
    client = create_redis(request.getfixturevalue(fixture))
    backend = RedisBackend(client)
    await backend.load()
    yield backend
    await backend.aclose()
    await client.aclose()
