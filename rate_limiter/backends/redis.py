"""Redis backend: one Lua script per decision, one round trip, time from Redis `TIME`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.backends.base import lease_cost, new_lease, state_key

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


def load_sources() -> dict[str, str]:
    """Every script under `lua/`, by file stem (one per algorithm, plus `release`)."""
    return {p.stem: p.read_text() for p in sorted(LUA_DIR.glob("*.lua"))}


def _keys(key: str, limit: Limit) -> list[str]:
    skey = state_key(key, limit.algorithm)
    if limit.algorithm is Algorithm.SLIDING_LOG:
        return [skey, skey + ":seq"]
    return [skey]


def _args(limit: Limit, cost: int, lease: str | None) -> list[Any]:
    return [
        limit.rate,
        limit.period_us,
        limit.capacity,
        cost,
        1 if limit.count_refused else 0,
        lease or "",
    ]


def _sha(source: str) -> str:
    import hashlib

    return hashlib.sha1(source.encode()).hexdigest()


class _Scripts:
    def __init__(self) -> None:
        self.sources = load_sources()
        self.shas = {name: _sha(src) for name, src in self.sources.items()}


class RedisBackend:
    """Async Redis backend. `await load()` at start-up registers the scripts; a Redis that
    restarted empty (NOSCRIPT) gets them again transparently."""

    name = "redis"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._scripts = _Scripts()

    async def load(self) -> None:
        for source in self._scripts.sources.values():
            await self.redis.script_load(source)

    async def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        sha = self._scripts.shas[name]
        try:
            return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(self._scripts.sources[name])
            return await self.redis.evalsha(sha, len(keys), *keys, *args)

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        lease = new_lease(cost) if limit.algorithm is Algorithm.CONCURRENCY and cost else None
        raw = await self._eval(limit.algorithm.value, _keys(key, limit), _args(limit, cost, lease))
        return Decision.from_us(*raw, lease=lease if raw[0] else None)

    async def release(self, key: str, limit: Limit, lease: str) -> None:
        await self._eval("release", _keys(key, limit), [lease, lease_cost(lease)])

    async def ping(self) -> None:
        await self.redis.ping()


class SyncRedisBackend:
    """The same scripts over a blocking client, for programs without an event loop."""

    name = "redis"

    def __init__(self, redis: SyncRedis) -> None:
        self.redis = redis
        self._scripts = _Scripts()

    def load(self) -> None:
        for source in self._scripts.sources.values():
            self.redis.script_load(source)

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        sha = self._scripts.shas[name]
        try:
            return self.redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            self.redis.script_load(self._scripts.sources[name])
            return self.redis.evalsha(sha, len(keys), *keys, *args)

    def acquire_sync(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        lease = new_lease(cost) if limit.algorithm is Algorithm.CONCURRENCY and cost else None
        raw = self._eval(limit.algorithm.value, _keys(key, limit), _args(limit, cost, lease))
        return Decision.from_us(*raw, lease=lease if raw[0] else None)

    def release_sync(self, key: str, limit: Limit, lease: str) -> None:
        self._eval("release", _keys(key, limit), [lease, lease_cost(lease)])

    def ping(self) -> None:
        self.redis.ping()
