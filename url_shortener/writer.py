"""python -m url_shortener.writer: the visit writer, a process of its own.

Servers ship visits to a Redis stream (visits.py); writers read it through one consumer
group, so any number of them share the work and each entry goes to one of them. A writer
parses a few entries' visits, writes them to SQL in one transaction together with the
entries' batch ids, and acknowledges the entries only after the commit:

- killed before the commit: nothing was written; the entries stay pending under its name
  and another writer takes them over once they have been idle `writer_claim_idle_seconds`;
- killed between the commit and the acknowledgement: the entries are delivered again, and
  their batch ids, already in SQL, make the second write skip them (exactly once).

The writer serves /healthz, /readyz and /metrics on `URL_SHORTENER_WRITER_PORT` (0: a port
the OS picks, logged at start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError
from sqlalchemy import text

from common.app import build_app
from common.db import create_engine, session_factory, transaction
from common.health import HealthChecks
from common.migrations import upgrade
from common.net import parse_networks
from common.redis import REDIS_DOWN, AnyRedis, create_redis
from common.redis_server import ensure_shared_redis
from common.server import serve
from url_shortener import store
from url_shortener.metrics import WriterMetrics
from url_shortener.settings import UrlShortenerSettings
from url_shortener.visits import visitor_salt, write_batches

log = structlog.get_logger("url_shortener.writer")
GROUP = "writers"
BLOCK_SECONDS = 1.0  # how long one read waits for new entries (and for a stop request)
PARENT_ENV = "URL_SHORTENER_WRITER_PARENT_PID"
BATCH_ID_DAYS = 2  # batch ids are kept this long: far past any redelivery


Entry = tuple[bytes, dict[bytes, bytes] | None]


class VisitWriter:
    def __init__(
        self,
        redis: AnyRedis,
        sessions: store.Sessions,
        *,
        stream: str,
        salt: bytes,
        trusted_proxies: tuple[str, ...] = (),
        batch_entries: int,
        claim_idle: float,
        metrics: WriterMetrics,
        consumer: str | None = None,
    ) -> None:
        self.redis = redis
        self.sessions = sessions
        self.stream = stream
        self.salt = salt
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.batch_entries = batch_entries
        self.claim_idle = claim_idle
        self.metrics = metrics
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stopping = False
        self._next_claim = 0.0
        self._next_prune = 0.0

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group (from the stream's start: visits shipped
        before any writer ran are read too); a group that exists already is kept."""
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def step(self, *, block: float | None) -> int:
        """Take over idle entries of dead writers, else read new ones; write and ack them.
        Returns how many entries were handled (0: nothing to do)."""
        entries = await self._claim() if time.monotonic() >= self._next_claim else []
        if not entries:
            entries = await self._read(block)
        if entries:
            await self._write(entries)
        return len(entries)

    async def _read(self, block: float | None) -> list[Entry]:
        response: Any = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {self.stream: ">"},
            count=self.batch_entries,
            block=None if block is None else int(block * 1000),
        )
        return list(response[0][1]) if response else []

    async def _claim(self) -> list[Entry]:
        """Entries pending with a writer for longer than `claim_idle`: it is presumed dead."""
        self._next_claim = time.monotonic() + self.claim_idle / 2
        response = await self.redis.xautoclaim(
            self.stream,
            GROUP,
            self.consumer,
            min_idle_time=int(self.claim_idle * 1000),
            start_id="0-0",
            count=self.batch_entries,
        )
        entries = list(response[1])
        if entries:
            self._next_claim = 0.0  # there may be more
            self.metrics.claimed.inc(len(entries))
            log.warning("visit_entries_claimed", count=len(entries), consumer=self.consumer)
        return entries

    async def _write(self, entries: list[Entry]) -> None:
        batches: dict[str, str] = {}
        for entry_id, fields in entries:
            if not fields or b"b" not in fields or b"v" not in fields:
                log.warning("visit_entry_malformed", entry=entry_id.decode())
                continue
            batches[fields[b"b"].decode()] = fields[b"v"].decode()
        done = await write_batches(
            self.sessions, batches, salt=self.salt, trusted_proxies=self.trusted_proxies
        )
        self.metrics.visits.written.inc(done.visits)
        self.metrics.visits.dropped.inc(done.unparsable)
        self.metrics.duplicates.inc(done.duplicates)
        # Only now, after the commit: acknowledged entries are never delivered again.
        ids = [entry_id for entry_id, _ in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def drain(self) -> int:
        """Write everything the stream holds now (tests; a one-off catch-up)."""
        await self.ensure_group()
        self._next_claim = 0.0
        total = 0
        while n := await self.step(block=None):
            total += n
        return total

    async def _prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        async with transaction(self.sessions) as session:
            await store.forget_batches(session, datetime.now(UTC) - timedelta(days=BATCH_ID_DAYS))

    async def run(self) -> None:
        """Until `stop`: read, write, acknowledge; wait and retry while Redis or SQL fail."""
        log.info("visit_writer_started", consumer=self.consumer, stream=self.stream)
        while not self._stopping:
            try:
                await self.ensure_group()  # again after a Redis that lost its data
                while not self._stopping:
                    await self.step(block=BLOCK_SECONDS)
                    self.metrics.lag.set(await self.redis.xlen(self.stream))
                    await self._prune()
            except (*REDIS_DOWN, ResponseError) as exc:
                log.error("visit_writer_redis_error", error=str(exc))
            except Exception as exc:  # SQL away: the entries stay pending, retried later
                log.error("visit_writer_failed", error=str(exc)[:500])
            if not self._stopping:
                await asyncio.sleep(1.0)

    def stop(self) -> None:
        """Finish the entries in hand, then return from `run` (graceful)."""
        self._stopping = True


def create_writer_app(settings: UrlShortenerSettings, *, parent_pid: int | None = None) -> FastAPI:
    """A writer as an app: its loop runs in the lifespan; /healthz, /readyz, /metrics.
    With `parent_pid` (started by `python -m url_shortener all`) it stops when that
    process is gone, however it ended."""
    if not settings.redis_url:
        raise ValueError("redis_url is required (python -m url_shortener.writer starts one)")
    redis_url = settings.redis_url
    registry = CollectorRegistry()
    metrics = WriterMetrics(registry)
    checks = HealthChecks()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url or settings.sqlite_url("url_shortener"),
            timeout=settings.sql_timeout,
        )
        await upgrade(engine, "url_shortener.migrations")
        # Reads block for BLOCK_SECONDS: the socket must wait longer than that.
        redis = create_redis(redis_url, timeout=BLOCK_SECONDS + 4)
        writer = VisitWriter(
            redis,
            session_factory(engine),
            stream=settings.visit_stream,
            salt=visitor_salt(settings),
            trusted_proxies=tuple(settings.trusted_proxies),
            batch_entries=settings.writer_batch_entries,
            claim_idle=settings.writer_claim_idle_seconds,
            metrics=metrics,
        )
        app.state.writer = writer

        async def sql_ok() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        checks.add("sql", sql_ok, required=True)
        checks.add("redis", redis.ping, required=True)
        task = asyncio.create_task(writer.run(), name="visit-writer")
        watch = asyncio.create_task(_stop_with_parent(parent_pid), name="parent-watch")
        try:
            yield
        finally:
            watch.cancel()
            writer.stop()
            await task
            await redis.aclose()
            await engine.dispose()

    return build_app(
        settings,
        title="URL shortener visit writer",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        access_log=False,
    )


async def _stop_with_parent(parent_pid: int | None) -> None:
    while parent_pid is not None:
        await asyncio.sleep(0.5)
        if os.getppid() != parent_pid:
            log.warning("visit_writer_parent_gone", parent=parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            return


def writer_settings(settings: UrlShortenerSettings) -> UrlShortenerSettings:
    return settings.model_copy(
        update={"service_name": "url_shortener_writer", "port": settings.writer_port}
    )


def main() -> None:
    settings = UrlShortenerSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    settings = writer_settings(settings)
    parent = os.environ.get(PARENT_ENV)
    serve(create_writer_app(settings, parent_pid=int(parent) if parent else None), settings)


if __name__ == "__main__":
    main()
