"""Visit recording, off the redirect path.

A redirect only appends a small tuple to an in-process buffer: no I/O, no parsing. A
background task turns the buffer into rows (User-Agent parsing, visitor hashing) and writes
them to SQL in batches every `flush_interval` seconds, or sooner when
`batch_size` records are waiting. On graceful shutdown the buffer is drained before the
process exits, so nothing is lost; a crash (SIGKILL, power loss) loses at most the visits of
the last `flush_interval` seconds. If SQL is down, batches are kept (up to `buffer_limit`
records, oldest dropped first and counted) and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import transaction
from common.net import Network, client_ip, parse_networks
from url_shortener import useragent
from url_shortener.store import VisitRecord, write_visits

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
    *,
    link_id: int,
    ts: float,
    visitor: Visitor,
    salt: bytes,
    trusted_proxies: tuple[Network, ...] = (),
    counted: bool = False,
) -> VisitRecord:
    """A visit as stored: the referrer's host, the browser family and a salted visitor hash.

    The IP address itself is never stored; `visitor` (a keyed hash of IP and User-Agent) is
    enough to count unique visitors. X-Forwarded-For counts only from trusted proxies.
    """
    # Headers are the client's: bounded before anything looks at them.
    user_agent, forwarded_for, referrer = visitor.analytics_headers()
    user_agent = user_agent[:MAX_UA]
    # The right end is kept: hops are walked from the right, where trusted proxies append.
    ip = client_ip(visitor.peer, forwarded_for[-2048:], trusted_proxies)
    digest = hashlib.blake2b(f"{ip}|{user_agent}".encode(), key=salt[:64], digest_size=8)
    ref_host = referrer_host(referrer[:2048])  # cached: bounded input, bounded cache
    family, bot = useragent.classify(user_agent)
    return VisitRecord(
        link_id=link_id,
        ts=datetime.fromtimestamp(ts, UTC),
        referrer_host=ref_host,
        user_agent=user_agent or None,
        browser=family,
        is_bot=bot,
        visitor=digest.hexdigest(),
        counted=counted,
    )


class VisitRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        salt: bytes,
        trusted_proxies: tuple[str, ...] = (),
        flush_interval: float,
        batch_size: int,
        buffer_limit: int,
        written: Counter,
        dropped: Counter,
    ) -> None:
        self.sessions = sessions
        self.salt = salt
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.buffer: deque[RawVisit] = deque(maxlen=buffer_limit)
        self.written = written
        self.dropped = dropped
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: list[RawVisit] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, link_id: int, visitor: Visitor, *, counted: bool = False) -> None:
        """Called on the redirect path: O(1), no I/O."""
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped.inc()
        self.buffer.append((link_id, time.time(), visitor, counted))
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="visit-recorder")

    async def stop(self) -> None:
        """Stop the loop and drain everything still buffered (graceful shutdown).

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
        """Write everything buffered now, in batches; returns how many were written."""
        total = 0
        async with self._lock:
            while self.buffer:
                batch = [
                    self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))
                ]
                self._inflight = batch
                try:
                    total += await self._write(batch)
                except Exception as exc:
                    self._requeue(batch)
                    log.error("visit_flush_failed", error=str(exc), buffered=len(self.buffer))
                    break
                finally:
                    self._inflight = []
        return total

    async def _write(self, batch: list[RawVisit]) -> int:
        rows = []
        for raw in batch:
            try:
                rows.append(self._row(raw))
            except Exception as exc:
                # One unparsable visit must not hold back every visit behind it.
                self.dropped.inc()
                log.warning("visit_unparsable", error=str(exc)[:200])
        async with transaction(self.sessions) as session:
            written = await write_visits(session, rows)
        self.written.inc(len(rows))
        return written

    def _requeue(self, batch: list[RawVisit]) -> None:
        """Put a batch back in front, oldest first; when full, the oldest are dropped."""
        maxlen = self.buffer.maxlen or len(batch) + len(self.buffer)
        room = maxlen - len(self.buffer)
        if room < len(batch):
            self.dropped.inc(len(batch) - room)
            batch = batch[len(batch) - room :] if room > 0 else []
        self.buffer.extendleft(reversed(batch))

    def _row(self, raw: RawVisit) -> VisitRecord:
        link_id, ts, visitor, counted = raw
        return make_record(
            link_id=link_id,
            ts=ts,
            visitor=visitor,
            salt=self.salt,
            trusted_proxies=self.trusted_proxies,
            counted=counted,
        )

    def pending(self, link_id: int) -> int:
        """Visits of one link buffered or being written, not yet counted in SQL."""
        waiting = (v for part in (self.buffer, self._inflight) for v in part)
        return sum(1 for v in waiting if v[0] == link_id and not v[3])
