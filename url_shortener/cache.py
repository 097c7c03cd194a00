"""The caches of the shortener: Redis (shared, cache-aside) with a small in-process cache in
front of it.

Keys (hash-tagged so a link's keys live in one Redis Cluster slot):
  {l:CODE}     hash, the cached link (or a negative entry for unknown codes), with a TTL
  {l:CODE}:v   version, bumped by each invalidation; a fill after a miss only lands if the
               version is still the one the miss saw (lua/put.lua)

  links:invalidate   pub/sub channel: codes whose cached entry every instance must drop

The in-process cache (`LocalCache`) holds links without max_visits for a few seconds, so a
hot link's redirect needs no network round trip at all. Updates and deletes publish the code
on `links:invalidate`; every instance drops it on receipt, and drops everything when its
subscription breaks (messages may have been missed). Links with max_visits are never held
locally, and their visits are claimed in SQL (see service.py): Redis only says where they go.

Every Redis call goes through a circuit breaker: once Redis fails, callers skip it (and fall
back to SQL) for `retry_after` seconds, so a dead Redis costs one timeout, not one per request.
Invalidations that could not reach Redis are kept and replayed when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import NamedTuple

import structlog
from redis.asyncio import RedisCluster

from common.redis import REDIS_DOWN, AnyRedis, load_script
from common.resilience import CircuitBreaker

log = structlog.get_logger("url_shortener.cache")
LUA = Path(__file__).parent / "lua"


class CacheUnavailable(Exception):
    """Redis is down (or the breaker is open, or it keeps dropping what is written): the
    caller answers from SQL instead."""


class Mode(StrEnum):
    """Why a code is being resolved (passed to lua/redirect.lua as is)."""

    LOOK = "look"  # HEAD, the password form: no visit
    VISIT = "visit"  # a real GET: a visit
    UNLOCKED = "unlocked"  # the password was checked: a visit past the form


class Outcome(IntEnum):
    """What lua/redirect.lua answered (its first return value)."""

    MISS = 0
    UNKNOWN = 1
    REDIRECT = 2
    GONE = 4
    PASSWORD = 5


@dataclass(frozen=True, slots=True)
class CachedLink:
    id: int
    url: str
    status: int
    max_visits: int | None
    has_password: bool
    expires_at: datetime | None


class Resolved(NamedTuple):
    """What the redirect script said (one per Redis lookup: a cheap named tuple)."""

    outcome: Outcome
    url: str = ""
    status: int = 302
    link_id: int = 0
    limited: bool = False  # the link has max_visits: its visit is claimed in SQL


Loader = Callable[[str], Awaitable[CachedLink | None]]


INVALIDATE_CHANNEL = "links:invalidate"
# Local entries read again at once by the refresher (each one Redis round trip).
REFRESH_BATCH = 16


class _Entry:
    """A link held in process: until when, and whether a request asked for it since it was
    read from Redis (only such entries are refreshed)."""

    __slots__ = ("expires", "link", "used")

    def __init__(self, expires: float, link: CachedLink, used: bool) -> None:
        self.expires = expires
        self.link = link
        self.used = used


class LocalCache:
    """A bounded, short-lived, in-process LRU of links without max_visits.

    No entry is served more than `ttl` seconds after it was read from Redis. Entries that
    were hit since they were read are read again shortly before they expire (`due`, run by
    `LinkCache.refresh_ahead` in the background): a link that keeps being followed never
    misses, so no redirect waits for Redis because its entry's time ran out. An entry
    nobody asked for since it was read just expires."""

    def __init__(self, *, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        # How long before expiry a used entry is read again (and half of it: how often the
        # refresher looks for such entries).
        self.lead = min(max(ttl / 10, 0.05), 5.0)
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        # (expires at, code) in the order entries were put: with one ttl for all, also the
        # order they expire in, so finding the entries due costs nothing per entry held.
        self._expiry: deque[tuple[float, str]] = deque()
        # Bumped by every invalidation: a value read from Redis before an invalidation
        # arrived must not be stored after it (it may be the old value).
        self.epoch = 0
        self.hits = 0
        self.misses = 0
        self.refreshes = 0

    def get(self, code: str) -> CachedLink | None:
        item = self._items.get(code)
        if item is None or item.expires < time.monotonic():
            if item is not None:
                del self._items[code]
            self.misses += 1
            return None
        self._items.move_to_end(code)
        item.used = True
        self.hits += 1
        return item.link

    def put(self, code: str, link: CachedLink, *, epoch: int, used: bool = True) -> None:
        """Hold `link` for `ttl` seconds. `used`: a request asked for it (a miss being
        filled); False for a refresh, so a link nobody follows again is not kept for good."""
        if self.ttl <= 0 or epoch != self.epoch or link.max_visits is not None:
            return
        expires = time.monotonic() + self.ttl
        self._items[code] = _Entry(expires, link, used)
        self._items.move_to_end(code)
        self._expiry.append((expires, code))
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        if len(self._expiry) > 4 * self.size:
            # Records are consumed as they fall due (`due`); this only bounds them when
            # nothing consumes them. Losing the oldest costs at most that entry's refresh.
            self._expiry.popleft()

    def due(self, limit: int) -> list[str]:
        """Up to `limit` codes to read again now: entries expiring within `lead` seconds
        that were hit since they were read, oldest first. Each is handed out once (the
        records are consumed); the rest wait for the next call."""
        out: list[str] = []
        horizon = time.monotonic() + self.lead
        expiry, items = self._expiry, self._items
        while expiry and len(out) < limit and expiry[0][0] <= horizon:
            expires, code = expiry.popleft()
            item = items.get(code)
            # Only the entry this record was made for (not one put again since), if used.
            if item is not None and item.expires == expires and item.used:
                out.append(code)
        self.refreshes += len(out)
        return out

    def discard(self, code: str) -> None:
        """Forget one entry (it is no longer what Redis says); no invalidation."""
        self._items.pop(code, None)

    def drop(self, code: str) -> None:
        self.epoch += 1
        self._items.pop(code, None)

    def clear(self) -> None:
        self.epoch += 1
        self._items.clear()
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._items)


def link_key(code: str) -> str:
    return f"{{l:{code}}}"


def version_key(code: str) -> str:
    return f"{{l:{code}}}:v"


VERSION_TTL = 86_400  # far longer than any read-to-fill window


class LinkCache:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        ttl: int,
        negative_ttl: int,
        retry_after: float,
        local: LocalCache,
        on_state: object = None,
    ) -> None:
        self.redis = redis
        self.local = local
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.breaker = CircuitBreaker(reset_after=retry_after)
        self._resolve = load_script(redis, LUA / "redirect.lua")
        self._put = load_script(redis, LUA / "put.lua")
        self._pending: set[str] = set()  # codes whose invalidation has not reached Redis yet
        self._on_state = on_state
        self._stopping = False

    # -- plumbing -------------------------------------------------------------------------

    async def _check(self) -> None:
        """Raise CacheUnavailable while the breaker is open; on a probe, heal first."""
        was_open = self.breaker.is_open
        if not self.breaker.allow():
            raise CacheUnavailable
        if was_open:
            # Replay queued invalidations before anything is read from the cache again.
            try:
                await self.redis.ping()
                await self._delete_codes(list(self._pending))
            except REDIS_DOWN as exc:
                raise self._failed(exc) from exc
            self._recovered()

    def _recovered(self) -> None:
        if self.breaker.success():
            log.warning("redis_recovered")
            self._notify(True)

    def _failed(self, exc: BaseException) -> CacheUnavailable:
        if self.breaker.failure():
            log.error("redis_unavailable", error=str(exc), fallback="sql")
            self._notify(False)
        return CacheUnavailable(str(exc))

    def _notify(self, up: bool) -> None:
        if callable(self._on_state):
            self._on_state(up)

    # -- the redirect path ----------------------------------------------------------------

    async def lookup(
        self, code: str, mode: Mode, load: Loader, *, refreshing: bool = False
    ) -> Resolved:
        """Read-through: run the redirect script; on a miss, `load` the link (from SQL), fill
        the entry and run it again. Raises CacheUnavailable when Redis is away or keeps
        refusing fills (evicting under memory pressure): the caller then asks SQL itself.

        A link without max_visits that Redis returns is also kept in the local cache (as
        used by a request, unless `refreshing`: the refresher's own reads)."""
        for _ in range(3):
            await self._check()
            epoch = self.local.epoch
            try:
                res = await self._resolve(keys=[link_key(code), version_key(code)], args=[mode])
            except REDIS_DOWN as exc:
                raise self._failed(exc) from exc
            outcome = Outcome(int(res[0]))
            if outcome is Outcome.MISS:
                version = res[1].decode()
                link = await load(code)
                if link is None:
                    await self.put_unknown(code, version=version)
                else:
                    await self.put(code, link, version=version)
                continue  # filled (or refused: changed meanwhile); look again
            if outcome not in (Outcome.REDIRECT, Outcome.PASSWORD):
                return Resolved(outcome)
            url, status, link_id = res[1].decode(), int(res[2]), int(res[4])
            if res[5]:  # max_visits
                return Resolved(outcome, url, status, link_id, limited=True)
            expires = datetime.fromtimestamp(int(res[6]), UTC) if res[6] else None
            self.local.put(
                code,
                CachedLink(link_id, url, status, None, res[3] == b"1", expires),
                epoch=epoch,
                used=not refreshing,
            )
            return Resolved(outcome, url, status, link_id)
        raise CacheUnavailable("the cache entry did not stay")

    async def refresh_ahead(self, load: Loader) -> None:
        """Background task (runs until cancelled): read again, from Redis, the local entries
        that are about to expire and were used since they were read (`LocalCache.due`), so
        hot links never miss in process. A miss is what made the redirect's tail: under load
        its one Redis round trip waits behind every request the event loop has in hand, and
        1,000 hot links with a 30 s lifetime made 30-60 such misses a second (README,
        "Headline figures"). At most REFRESH_BATCH lookups are in flight at once; one that
        fails (Redis away) leaves its entry to expire, and the next request misses as
        before."""
        local = self.local
        if local.ttl <= 0:
            return
        while True:
            await asyncio.sleep(local.lead / 2)
            while codes := local.due(REFRESH_BATCH):
                await asyncio.gather(*(self._refresh(code, load) for code in codes))

    async def _refresh(self, code: str, load: Loader) -> None:
        try:
            # LOOK: no visit; lookup() puts what Redis says in the local cache (unless an
            # invalidation arrived meanwhile: the epoch check), with a new lifetime.
            found = await self.lookup(code, Mode.LOOK, load, refreshing=True)
        except CacheUnavailable:
            return
        except Exception as exc:  # a background task: log it, never end the loop
            log.warning("local_refresh_failed", code=code, error=str(exc)[:200])
            return
        if found.outcome not in (Outcome.REDIRECT, Outcome.PASSWORD) or found.limited:
            self.local.discard(code)  # gone, or no longer a link that may be held locally

    async def put(self, code: str, link: CachedLink, *, version: str) -> bool:
        """Cache a link (TTL never past its expiry) unless invalidated since `version`."""
        ttl = self.ttl
        if link.expires_at is not None:
            left = int(link.expires_at.timestamp() - time.time())
            # An expired link is cached like an unknown code: briefly, answering 410.
            ttl = min(ttl, left) if left > 0 else self.negative_ttl
        fields: dict[str, str | int] = {
            "i": link.id,
            "u": link.url,
            "s": link.status,
            "m": "" if link.max_visits is None else link.max_visits,
            "p": "1" if link.has_password else "0",
            "x": "" if link.expires_at is None else int(link.expires_at.timestamp()),
        }
        return await self._write(code, fields, ttl, version)

    async def put_unknown(self, code: str, *, version: str) -> bool:
        """Negative cache: remember for a short while that a code does not exist."""
        return await self._write(code, {"u": ""}, self.negative_ttl, version)

    async def _write(self, code: str, fields: dict[str, str | int], ttl: int, version: str) -> bool:
        """True when written; False when refused (a newer invalidation) or Redis is away."""
        args: list[str | int] = [version, ttl]
        for name, value in fields.items():
            args += [name, value]
        try:
            await self._check()
            written = await self._put(keys=[link_key(code), version_key(code)], args=args)
        except CacheUnavailable:
            return False
        except REDIS_DOWN as exc:
            self._failed(exc)
            return False
        return bool(written)

    # -- invalidation ---------------------------------------------------------------------

    async def invalidate(self, code: str) -> None:
        """Drop a code's cache entry on every instance at once, or queue it."""
        keys = [link_key(code)]
        self.local.drop(code)
        try:
            await self._check()
            await self._send_invalidations({code: keys})
        except CacheUnavailable:
            self._pending.add(code)
        except REDIS_DOWN as exc:
            self._pending.add(code)
            self._failed(exc)

    async def _send_invalidations(self, keys_by_code: dict[str, list[str]]) -> None:
        """For each code: drop its keys, bump its version, tell every instance; one round
        trip. (A cluster pipeline refuses PUBLISH: there the messages follow it.)"""
        cluster = isinstance(self.redis, RedisCluster)
        async with self.redis.pipeline(transaction=False) as pipe:
            for code, keys in keys_by_code.items():
                pipe.delete(*keys)
                pipe.incr(version_key(code))
                pipe.expire(version_key(code), VERSION_TTL)
                if not cluster:
                    pipe.publish(INVALIDATE_CHANNEL, code)
            await pipe.execute()
        if cluster:
            for code in keys_by_code:
                await self.redis.publish(INVALIDATE_CHANNEL, code)

    async def _delete_codes(self, codes: list[str]) -> None:
        if codes:
            # One DEL per link: a multi-key DEL across slots would fail on Redis Cluster.
            await self._send_invalidations({c: [link_key(c)] for c in codes})
            self._pending.difference_update(codes)

    async def heal(self) -> bool:
        """Background probe while the breaker is open; True when Redis is usable."""
        if not self.breaker.is_open:
            return True
        try:
            await self._check()
        except CacheUnavailable:
            return False
        return True

    async def listen(self) -> None:
        """Drop local entries as other instances invalidate them, until `stop_listening`.

        Whenever the subscription is (re)established, everything local is dropped: messages
        published while it was down are lost, so any local entry may be stale. (It polls in
        short steps because redis-py's blocking read does not always honour cancellation.)"""
        while not self._stopping:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATE_CHANNEL)
                self.local.clear()
                while not self._stopping:
                    message = await pubsub.get_message(timeout=0.2)
                    if message is not None:
                        self.local.drop(message["data"].decode())
            except REDIS_DOWN:
                self.local.clear()
                await asyncio.sleep(max(self.breaker.reset_after, 0.1))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def stop_listening(self) -> None:
        self._stopping = True
