"""Redis backend: one Lua script per decision, one round trip, time from Redis `TIME`."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.exceptions import NoScriptError

from common.redis import AnyRedis
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
# The most requests for one key decided by one script call (a hot key's batch).
GROUP_MAX = 128
LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
# Enum members read once: `Algorithm.X` is an attribute lookup through the enum's metaclass,
# slow enough to show on the hot path (~60 ns each on CPython 3.11).
_CONCURRENCY, _SLIDING_LOG = Algorithm.CONCURRENCY, Algorithm.SLIDING_LOG


def load_sources() -> dict[str, str]:
    """Every script under `lua/`, by file stem (one per algorithm, plus `release`, `refund`
    and `gcra_prefetch`)."""
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


def _refund_args(
    limit: Limit, cost: int, decision: Decision, shared: bool = False
) -> list[Any] | None:
    """refund.lua's arguments, or None when the decision took nothing to give back (refused,
    a peek, or a lease, which is released instead)."""
    if not decision.allowed or cost <= 0 or limit.algorithm is Algorithm.CONCURRENCY:
        return None
    cost = min(cost, limit.capacity)  # (no decision ever took more)
    return [limit.algorithm.value, limit.spec, cost, decision.at_us, decision.position, int(shared)]


def _refunded(decision: Decision, reply: Any) -> Decision:
    """The decision with the remaining and the reset after its refund (unchanged when
    nothing went back: refund.lua answers -1)."""
    if not isinstance(reply, list):
        return decision
    remaining, reset_us = int(reply[0]), int(reply[1])
    return decision._replace(remaining=max(0, remaining), reset_after=reset_us / 1_000_000)


def _sha(source: str) -> str:
    import hashlib

    return hashlib.sha1(source.encode()).hexdigest()


class _Scripts:
    def __init__(self) -> None:
        self.sources = load_sources()
        self.shas = {name: _sha(src) for name, src in self.sources.items()}


Pending = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


@functools.lru_cache(maxsize=256)
def _packed_arg(value: bytes | int) -> bytes:
    """One argument in RESP, packed once (a limit's spec, a cost): packing is most of the
    client's cost per call."""
    return pack_args([value])


class _Group:
    """The requests for one key and limit made in one event-loop turn: one script call
    decides them one after another, in the order they came (exactly as that many calls at
    the same instant would), and each caller gets its own decision.

    It waits in the connection's reply queue in place of a future (`ReplyWaiter`) and hands
    the reply out in slices of seven, one per member; a failure fails every member."""

    __slots__ = ("costs", "key", "limit", "members")

    def __init__(self, limit: Limit, key: str) -> None:
        self.limit, self.key = limit, key
        self.costs: list[int] = []
        self.members: list[asyncio.Future[Any]] = []

    def done(self) -> bool:
        return False  # each member is settled on its own (one may have been cancelled)

    def set_result(self, reply: list[int]) -> None:
        at = 0
        for member in self.members:
            if not member.done():
                member.set_result(reply[at : at + 7])
            at += 7

    def set_exception(self, exception: BaseException) -> None:
        for member in self.members:
            if not member.done():
                member.set_exception(exception)


class RedisBackend:
    """Async Redis backend. `await load()` at start-up registers the scripts; a Redis that
    restarted empty (NOSCRIPT) gets them again transparently.

    With `autopipeline` (the default) the decisions asked for in the same event-loop turn
    go out together in one write (as Envoy ratelimit's implicit pipelining does): each is
    still its own atomic script and still one round trip, but the client pays for one
    write per batch instead of per decision. Over plain TCP this uses a lean pipelined
    connection of its own (close it with `aclose()`); otherwise redis-py pipelines."""

    name = "redis"

    def __init__(
        self,
        redis: AnyRedis,
        *,
        autopipeline: bool = True,
        max_batch: int = 256,
        coalesce: bool = True,
    ) -> None:
        self.redis = redis
        self.autopipeline = autopipeline
        # A hot key's requests in one loop turn share one script call (GCRA and the two
        # window counters, over the lean connection): Redis runs one script, not one each.
        self.coalesce = coalesce
        # Plain TCP: the lean pipelined connection; TLS / Unix sockets: redis-py pipelines.
        self._lean = PipelinedConnection.from_redis_py(redis) if autopipeline else None
        self.max_batch = max_batch
        self._scripts = _Scripts()
        self._pending: list[Pending] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._commands: dict[int, tuple[Limit, dict[Any, bytes]]] = {}
        self._cached = 0
        self._groups: list[_Group] = []  # this loop turn's, in the order they were opened
        self._open: dict[tuple[int, str], _Group] = {}  # the group still taking members
        self._turn: asyncio.AbstractEventLoop | None = None  # where `_send_groups` is due

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
        algorithm = limit.algorithm
        if lean is not None and lean.ready and algorithm is not _CONCURRENCY:
            # The hot path: join this turn's group for the key (one script call for all of
            # them, sent at the end of the turn) or, not coalesced, send the whole command
            # from a cache (a key asks again and again); await the reply here.
            try:
                if self.coalesce and algorithm is not _SLIDING_LOG:
                    raw = await self._join_group(lean, key, limit, cost)
                else:
                    raw = await lean.send(self._command(key, limit, cost))
            except (NoScriptError, StaleLoopError):  # reload the scripts / reconnect
                raw = await self._eval(algorithm.value, _keys(key, limit), _args(limit, cost, None))
            return decision_from_reply(raw)
        lease = new_lease(cost) if algorithm is Algorithm.CONCURRENCY and cost else None
        raw = await self._eval(algorithm.value, _keys(key, limit), _args(limit, cost, lease))
        return Decision.from_us(*raw, lease=lease if raw[0] else None)

    def _join_group(
        self, lean: PipelinedConnection, key: str, limit: Limit, cost: int
    ) -> asyncio.Future[Any]:
        """This request's place in the turn's group for (limit, key): its reply's future."""
        loop = lean.live_loop()
        group = self._open.get((id(limit), key)) if self._turn is loop else None
        if group is None or len(group.costs) >= GROUP_MAX:
            if self._turn is not loop:  # the turn's first group: all are sent at its end
                self._turn = loop
                self._groups, self._open = [], {}  # (any left by a loop that has gone)
                loop.call_soon(self._send_groups)
            group = self._open[(id(limit), key)] = _Group(limit, key)
            self._groups.append(group)
        future: asyncio.Future[Any] = loop.create_future()
        group.costs.append(cost)
        group.members.append(future)
        return future

    def _send_groups(self) -> None:
        """The end of the turn: one command per group, all in one write."""
        groups, self._groups = self._groups, []
        self._open, self._turn = {}, None
        lean = self._lean
        assert lean is not None
        for group in groups:
            if len(group.costs) == 1:  # (many keys, one request each: the usual case)
                # The member's own future takes the reply: no group in between.
                packed = self._command(group.key, group.limit, group.costs[0])
                lean.put(packed, group.members[0])
            else:
                lean.put(self._pack(group.key, group.limit, group.costs), group)
        lean.flush()  # (all of them in one write, now)

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
        packed = self._pack(key, limit, [cost])
        entry[1][(key, cost) if cost != 1 else key] = packed
        self._cached += 1
        return packed

    def _pack(self, key: str, limit: Limit, costs: list[int]) -> bytes:
        """`EVALSHA <script> <keys> <spec> <cost> ...`: one decision per cost."""
        sha = self._scripts.shas[limit.algorithm.value]
        tail = b"".join([_packed_arg(limit.spec), *map(_packed_arg, costs)])
        return pack_evalsha_tail(sha, _keys(key, limit), tail, 1 + len(costs))

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        cost = lease_cost(lease)
        if cost is not None and limit.algorithm is Algorithm.CONCURRENCY:
            return bool(await self._eval("release", _keys(key, limit), [lease, cost]))
        return False

    async def refund(
        self, key: str, limit: Limit, cost: int, decision: Decision, *, shared: bool = False
    ) -> Decision:
        """Give back `cost` units that `decision` took for a request that did not go ahead
        (as much as the key still holds; see `refunds.refund`). The decision with the
        remaining after it (unchanged when nothing went back). `shared`: its position is
        a prefetched batch's (see `PrefetchBackend.refund`)."""
        args = _refund_args(limit, cost, decision, shared)
        if args is None:
            return decision
        return _refunded(decision, await self._eval("refund", _keys(key, limit), args))

    async def prefetch(
        self,
        key: str,
        limit: Limit,
        cost: int,
        want: int,
        refund: int = 0,
        taken_us: int = 0,
        refund_position: int = 0,
    ) -> tuple[Decision, int, int]:
        """GCRA only: decide `cost` and, if it is allowed, take up to `want` tokens in all
        (at least `cost`), after giving back what is still owed of `refund` unspent tokens
        of a batch taken at `taken_us` (Redis time) whose position was `refund_position`.
        The decision, the tokens taken (0 when refused) and Redis's time in µs; the batch's
        position is the decision's plus the surplus. `PrefetchBackend` spends the surplus
        locally."""
        if limit.algorithm is not Algorithm.GCRA:
            raise ValueError(f"only GCRA limits prefetch, not {limit.algorithm.value}")
        args = [limit.spec, cost, want, refund, taken_us, refund_position]
        raw = await self._eval("gcra_prefetch", _keys(key, limit), args)
        # The request's tokens count as the batch's lowest: its position is where they end.
        position = int(raw[7]) - int(raw[5]) + cost
        return decision_from_reply([*raw[:5], raw[6], position]), int(raw[5]), int(raw[6])

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

    def release_sync(self, key: str, limit: Limit, lease: str) -> bool:
        cost = lease_cost(lease)
        if cost is not None and limit.algorithm is Algorithm.CONCURRENCY:
            return bool(self._eval("release", _keys(key, limit), [lease, cost]))
        return False

    def refund_sync(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        """As `RedisBackend.refund`."""
        args = _refund_args(limit, cost, decision)
        if args is None:
            return decision
        return _refunded(decision, self._eval("refund", _keys(key, limit), args))

    def ping(self) -> None:
        self.redis.ping()
