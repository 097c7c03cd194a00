"""Visits, off the redirect path and out of the serving process.

A redirect only appends a small tuple to an in-process buffer: no I/O, no parsing. Every
`flush_interval` seconds (or sooner when `batch_size` are waiting) a background task ships
the buffer to a Redis stream as one entry: a batch id and the visits' raw fields in JSON.
Writer processes (`python -m url_shortener.writer`, writer.py) read the stream through a
consumer group, parse the visits (User-Agent, visitor hash) and write them to SQL, each batch
exactly once (its id is recorded in the same transaction), acknowledging after the commit.

On graceful shutdown the buffer is shipped before the process exits; a crash (SIGKILL, power
loss) loses at most the visits of the last `flush_interval` seconds. Redis away: the server
writes the batch to SQL itself. Both away: batches are kept (up to `buffer_limit` visits,
oldest dropped first and counted) and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import transaction
from common.net import Network, client_ip, parse_networks
from common.redis import REDIS_DOWN, AnyRedis
from url_shortener import store, useragent
from url_shortener.metrics import VisitMetrics
from url_shortener.settings import UrlShortenerSettings
from url_shortener.store import VisitRecord

log = structlog.get_logger("url_shortener.visits")


class Visitor(NamedTuple):
    """Who followed a link: the peer address and the request's raw headers as the server gave
    them. Nothing is decoded on the redirect path; the background writer does that. (A named
    tuple: one is built per redirect, and a frozen dataclass costs several times more.)"""

    peer: str | None
    headers: Sequence[tuple[bytes, bytes]]

    def analytics_headers(self) -> tuple[str, str, str]:
        """(User-Agent, X-Forwarded-For, Referer) in one pass; "" for each one missing.
        Several X-Forwarded-For lines are one list, in order (a proxy may add its own line
        after the client's: taking only the first would believe the client)."""
        ua = ref = b""
        xff: list[bytes] = []
        for key, value in self.headers:
            if key == b"user-agent":
                ua = ua or value
            elif key == b"x-forwarded-for":
                xff.append(value)
            elif key == b"referer":
                ref = ref or value
        return ua.decode("latin-1"), b",".join(xff).decode("latin-1"), ref.decode("latin-1")


# What the redirect path buffers: (link id, unix time, visitor, already counted in SQL).
RawVisit = tuple[int, float, Visitor, bool]


MAX_UA = 512


@lru_cache(maxsize=4096)
def referrer_host(referrer: str) -> str | None:
    """The host of a Referer header; None when absent or malformed (it is client input)."""
    if not referrer:
        return None
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host[:255] if host else None


def make_record(
    item: Sequence[Any],
    *,
    salt: bytes,
    trusted_proxies: tuple[Network, ...] = (),
) -> VisitRecord:
    """A shipped visit (see `encode`) as stored: the referrer's host, the browser family and
    a salted visitor hash.

    The IP address itself is never stored; `visitor` (a keyed hash of IP and User-Agent) is
    enough to count unique visitors. X-Forwarded-For counts only from trusted proxies.
    """
    link_id, ts, peer, user_agent, forwarded_for, referrer, counted = item
    # Headers are the client's: bounded before anything looks at them.
    user_agent = str(user_agent)[:MAX_UA]
    # The right end is kept: hops are walked from the right, where trusted proxies append.
    ip = client_ip(peer, str(forwarded_for)[-2048:], trusted_proxies)
    digest = hashlib.blake2b(f"{ip}|{user_agent}".encode(), key=salt[:64], digest_size=8)
    ref_host = referrer_host(str(referrer)[:2048])  # cached: bounded input, bounded cache
    family, bot = useragent.classify(user_agent)
    return VisitRecord(
        link_id=int(link_id),
        ts=datetime.fromtimestamp(float(ts), UTC),
        referrer_host=ref_host,
        user_agent=user_agent or None,
        browser=family,
        is_bot=bot,
        visitor=digest.hexdigest(),
        counted=bool(counted),
    )


def visitor_salt(settings: UrlShortenerSettings) -> bytes:
    """The key of the visitor hash (servers and writers must agree on it)."""
    return hashlib.sha256(b"visitor:" + settings.code_secret.encode()).digest()


def encode(batch: Sequence[RawVisit]) -> str:
    """A batch as one stream entry's payload: per visit, what analytics needs, nothing else
    (no cookies or other headers leave the process)."""
    items = []
    for link_id, ts, visitor, counted in batch:
        ua, xff, ref = visitor.analytics_headers()
        items.append((link_id, ts, visitor.peer, ua, xff, ref, 1 if counted else 0))
    return json.dumps(items, separators=(",", ":"))


async def write_batches(
    sessions: async_sessionmaker[AsyncSession],
    batches: dict[str, str],
    *,
    salt: bytes,
    trusted_proxies: tuple[Network, ...],
) -> Written:
    """Write batches (id -> payload) to SQL in one transaction, each exactly once: a batch
    whose id was written before is skipped."""
    records: list[VisitRecord] = []
    bad = 0
    async with transaction(sessions) as session:
        new = await store.new_batches(session, list(batches))
        for batch_id in sorted(new):
            try:
                items = json.loads(batches[batch_id])
            except ValueError:
                items = []
                bad += 1
            for item in items:
                try:
                    records.append(make_record(item, salt=salt, trusted_proxies=trusted_proxies))
                except Exception as exc:
                    # One unparsable visit must not hold back every visit behind it.
                    bad += 1
                    log.warning("visit_unparsable", error=str(exc)[:200])
        written = await store.write_visits(session, records)
    return Written(written, bad, len(batches) - len(new))


class Written(NamedTuple):
    visits: int
    unparsable: int
    duplicates: int  # batches written before, skipped


class VisitRecorder:
    """The serving process's end: buffers raw visits and ships them, a batch per stream
    entry, to the Redis stream the writers read (`python -m url_shortener.writer`). While
    Redis is away it writes the batch to SQL itself, under the same batch id."""

    def __init__(
        self,
        redis: AnyRedis,
        sessions: async_sessionmaker[AsyncSession],
        *,
        stream: str,
        stream_maxlen: int,
        salt: bytes,
        trusted_proxies: tuple[str, ...] = (),
        flush_interval: float,
        batch_size: int,
        buffer_limit: int,
        metrics: VisitMetrics,
        redis_usable: Callable[[], bool] = lambda: True,
    ) -> None:
        self.redis = redis
        self.sessions = sessions
        self.stream = stream
        self.stream_maxlen = stream_maxlen
        self.salt = salt
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.buffer: deque[RawVisit] = deque(maxlen=buffer_limit)
        self.metrics = metrics
        self.redis_usable = redis_usable
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, link_id: int, visitor: Visitor, *, counted: bool = False) -> None:
        """Called on the redirect path: O(1), no I/O."""
        if len(self.buffer) == self.buffer.maxlen:
            self.metrics.dropped.inc()
        self.buffer.append((link_id, time.time(), visitor, counted))
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="visit-recorder")

    async def stop(self) -> None:
        """Stop the loop and ship everything still buffered (graceful shutdown).

        The loop is asked to stop, not cancelled: a cancelled flush would lose its batch."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        for _ in range(3):
            if not self.buffer:
                break
            await self.flush()
        if self.buffer:
            log.error("visits_lost_on_shutdown", count=len(self.buffer))

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Ship everything buffered now, in batches; returns how many visits left."""
        total = 0
        async with self._lock:
            while self.buffer:
                n = min(self.batch_size, len(self.buffer))
                batch = [self.buffer.popleft() for _ in range(n)]
                try:
                    await self._ship(batch)
                except Exception as exc:
                    self._requeue(batch)
                    log.error("visit_flush_failed", error=str(exc), buffered=len(self.buffer))
                    break
                total += n
        return total

    async def _ship(self, batch: list[RawVisit]) -> None:
        batch_id = uuid.uuid4().hex
        payload = encode(batch)
        if self.redis_usable():
            try:
                await self.redis.xadd(
                    self.stream,
                    {"b": batch_id, "v": payload},
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
            except REDIS_DOWN as exc:
                # The entry may have landed all the same: the batch id makes that delivery
                # and the write below one write.
                log.warning("visit_stream_unavailable", error=str(exc), fallback="sql")
            else:
                self.metrics.shipped.inc(len(batch))
                return
        done = await write_batches(
            self.sessions,
            {batch_id: payload},
            salt=self.salt,
            trusted_proxies=self.trusted_proxies,
        )
        self.metrics.written.inc(done.visits)
        self.metrics.dropped.inc(done.unparsable)

    def _requeue(self, batch: list[RawVisit]) -> None:
        """Put a batch back in front, oldest first; when full, the oldest are dropped."""
        maxlen = self.buffer.maxlen or len(batch) + len(self.buffer)
        room = maxlen - len(self.buffer)
        if room < len(batch):
            self.metrics.dropped.inc(len(batch) - room)
            batch = batch[len(batch) - room :] if room > 0 else []
        self.buffer.extendleft(reversed(batch))
