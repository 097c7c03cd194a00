"""Fixtures shared by the rate limiter's tests (the session's Redis is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from common.redis import create_redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An async client on the session's (emptied) Redis."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()
