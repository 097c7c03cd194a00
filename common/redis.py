"""Redis client factory and Lua script loading."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What "Redis is unavailable" looks like to callers that degrade instead of failing.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


def create_redis(url: str, *, timeout: float = 0.5, max_connections: int = 200) -> Redis:
    """An asyncio Redis client with short timeouts, so a dead Redis fails fast, not slowly."""
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        max_connections=max_connections,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
        retry_on_error=[RedisConnectionError],
    )


def load_script(redis: Redis, path: Path) -> AsyncScript:
    """Register a Lua script file; redis-py runs it with EVALSHA and reloads it on NOSCRIPT."""
    return redis.register_script(path.read_text())
