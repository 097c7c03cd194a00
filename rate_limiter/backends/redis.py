"""Redis backend: one Lua script per decision, one round trip, time from Redis `TIME`."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rate_limiter.algorithms import Algorithm, Decision, Limit, decision_from_reply
from rate_limiter.backends.base import lease_cost, new_lease, state_key
from rate_limiter.backends.pipelined import (
    PipelinedConnection,
    StaleLoopError,
    pack_args,
    pack_evalsha,
    pack_evalsha_tail,
)

# Packed hot-path commands kept per backend (a few hundred bytes each).
COMMAND_CACHE = 10_000
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
    # Few arguments on purpose: packing them is most of the client's cost per call.
    if lease:
        return [limit.spec, cost, lease]
    return [limit.spec, cost]


@functools.lru_cache(maxsize=1024)
def _tail(limit: Limit, cost: int) -> tuple[bytes, int]:
    """The arguments after the keys, packed once per limit and cost (and how many)."""
    args = _args(limit, cost, None)
    return pack_args(args), len(args)


def _sha(source: str) -> str:
    import hashlib

    return hashlib.sha1(source.encode()).hexdigest()


class _Scripts:
    def __init__(self) -> None:
        self.sources = load_sources()
        self.shas = {name: _sha(src) for name, src in self.sources.items()}


Pending = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


class RedisBackend:
    """Async Redis backend. `await load()` at start-up registers the scripts; a Redis that
    restarted empty (NOSCRIPT) gets them again transparently.

    With `autopipeline` (the default) the decisions asked for in the same event-loop turn
    go out together in one write (as Envoy ratelimit's implicit pipelining does): each is
    still its own atomic script and still one round trip, but the client pays for one
    write per batch instead of per decision. Over plain TCP this uses a lean pipelined
    connection of its own (close it with `aclose()`); otherwise redis-py pipelines."""

    name = "redis"

    def __init__(self, redis: Redis, *, autopipeline: bool = True, max_batch: int = 256) -> None:
        self.redis = redis
        self.autopipeline = autopipeline
        # Plain TCP: the lean pipelined connection; TLS / Unix sockets: redis-py pipelines.
        self._lean = PipelinedConnection.from_redis_py(redis) if autopipeline else None
        self.max_batch = max_batch
        self._scripts = _Scripts()
        self._pending: list[Pending] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._commands: dict[int, tuple[Limit, dict[Any, bytes]]] = {}
        self._cached = 0

    async def load(self) -> None:
        for source in self._scripts.sources.values():
            await self.redis.script_load(source)

    async def _eval_one(self, name: str, keys: list[str], args: list[Any]) -> Any:
        sha = self._scripts.shas[name]
        try:
            return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(self._scripts.sources[name])
            return await self.redis.evalsha(sha, len(keys), *keys, *args)

    async def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._lean is not None:
            sha = self._scripts.shas[name]
            try:
                return await self._lean.execute_packed(pack_evalsha(sha, keys, args))
            except NoScriptError:
                await self._lean.execute("SCRIPT", "LOAD", self._scripts.sources[name])
                return await self._lean.execute("EVALSHA", sha, len(keys), *keys, *args)
        if not self.autopipeline:
            return await self._eval_one(name, keys, args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((name, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            task = asyncio.ensure_future(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            if len(batch) == 1:
                name, keys, args, future = batch[0]
                results: list[Any] = [await self._eval_one(name, keys, args)]
            else:
                pipe = self.redis.pipeline(transaction=False)
                for name, keys, args, _ in batch:
                    pipe.evalsha(self._scripts.shas[name], len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (name, keys, args, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, NoScriptError):
                try:
                    future.set_result(await self._eval_one(name, keys, args))
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        lean = self._lean
        if lean is not None and lean.ready and limit.algorithm is not Algorithm.CONCURRENCY:
            # The hot path: the whole command comes from a cache (a key asks again and
            # again), the reply future is awaited here, the decision built without a frame.
            entry = self._commands.get(id(limit))
            packed = entry[1].get(key) if entry is not None and cost == 1 else None
            if packed is None:
                packed = self._command(key, limit, cost)
            try:
                raw = await lean.send(packed)
            except (NoScriptError, StaleLoopError):  # reload the scripts / reconnect
                name, keys = limit.algorithm.value, _keys(key, limit)
                raw = await self._eval(name, keys, _args(limit, cost, None))
            return decision_from_reply(raw)
        algorithm = limit.algorithm
        lease = new_lease(cost) if algorithm is Algorithm.CONCURRENCY and cost else None
        raw = await self._eval(algorithm.value, _keys(key, limit), _args(limit, cost, lease))
        return Decision.from_us(*raw, lease=lease if raw[0] else None)

    def _command(self, key: str, limit: Limit, cost: int) -> bytes:
        """The packed EVALSHA for (key, limit, cost), from the cache when it was made before.

        The cache is by limit object (`id`, with the limit kept alive by its entry so the id
        cannot be reused), then by cost and key; at `COMMAND_CACHE` commands it starts over."""
        entry = self._commands.get(id(limit))
        if entry is not None:
            packed = entry[1].get((key, cost) if cost != 1 else key)
            if packed is not None:
                return packed
        if self._cached >= COMMAND_CACHE:
            self._commands.clear()
            self._cached = 0
            entry = None
        if entry is None:
            entry = self._commands[id(limit)] = (limit, {})
        sha = self._scripts.shas[limit.algorithm.value]
        packed = pack_evalsha_tail(sha, _keys(key, limit), *_tail(limit, cost))
        entry[1][(key, cost) if cost != 1 else key] = packed
        self._cached += 1
        return packed

    async def release(self, key: str, limit: Limit, lease: str) -> None:
        cost = lease_cost(lease)
        if cost is not None and limit.algorithm is Algorithm.CONCURRENCY:
            await self._eval("release", _keys(key, limit), [lease, cost])

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        """Close the pipelined connection (the redis-py client stays the caller's)."""
        if self._lean is not None:
            await self._lean.aclose()


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
        cost = lease_cost(lease)
        if cost is not None and limit.algorithm is Algorithm.CONCURRENCY:
            self._eval("release", _keys(key, limit), [lease, cost])

    def ping(self) -> None:
        self.redis.ping()
