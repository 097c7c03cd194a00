"""create_app(settings): the FastAPI app; the lifespan opens and closes every connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from chat.api import api, pages
from chat.bus import Bus, listeners_for
from chat.errors import (
    Forbidden,
    InvalidRequest,
    MessageNotFound,
    RoomNameTaken,
    RoomNotFound,
    Unauthorized,
    UsernameTaken,
    UserNotFound,
)
from chat.hub import Hub
from chat.metrics import ChatMetrics
from chat.service import AccountService, ChatService
from chat.settings import ChatSettings
from chat.store import ChatStore
from chat.ws import router as ws_router
from common.app import build_app
from common.auth import TokenIssuer
from common.db import create_engine, session_factory
from common.health import HealthChecks
from common.migrations import upgrade
from common.redis import REDIS_DOWN, create_redis
from rate_limiter import Limit, RateLimiter

log = structlog.get_logger("chat")
MIGRATIONS = "chat.migrations"

ERRORS = {
    Unauthorized: 401,
    Forbidden: 403,
    UserNotFound: 404,
    RoomNotFound: 404,
    MessageNotFound: 404,
    UsernameTaken: 409,
    RoomNameTaken: 409,
    InvalidRequest: 422,
}


async def _every(seconds: float, job: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:  # keep the loop alive; the next round tries again
            log.warning("background_job_failed", job=name, error=str(exc))


def create_app(settings: ChatSettings) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("redis_url is required (python -m chat starts one if unset)")
    redis_url = settings.redis_url
    registry = CollectorRegistry()
    metrics = ChatMetrics(registry)
    checks = HealthChecks()
    instance = uuid.uuid4().hex[:12]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url or settings.sqlite_url("chat"), timeout=settings.sql_timeout
        )
        await upgrade(engine, MIGRATIONS)  # under a lock: instances starting together
        store = ChatStore(session_factory(engine))
        redis = create_redis(redis_url, timeout=settings.redis_timeout)
        listeners = listeners_for(redis_url)
        bus = Bus(redis, listeners, instance=instance)
        hub = Hub(
            bus=bus,
            store=store,
            metrics=metrics,
            gap_wait=settings.gap_wait,
            presence_ttl=settings.presence_ttl,
            delivery_receipts=settings.delivery_receipts,
            presence_debounce=settings.presence_debounce,
        )
        tokens = TokenIssuer(secret=settings.jwt_secret, ttl=settings.token_ttl_seconds)
        app.state.accounts = AccountService(store=store, tokens=tokens)
        app.state.chat = ChatService(store=store, hub=hub, max_text_chars=settings.max_text_chars)
        app.state.hub = hub
        app.state.chat_metrics = metrics
        # Per connection, so one process's memory is the right place (no Redis round trip).
        app.state.send_limiter = RateLimiter(
            Limit.per_second(settings.send_rate_per_second, burst=settings.send_burst)
        )

        async def sql_ok() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        checks.add("sql", sql_ok, required=True)
        # Without Redis, one instance still works alone; the others catch up from SQL later.
        checks.add("redis", redis.ping, required=False)

        async def heartbeat() -> None:
            await hub.refresh_presence()
            await hub.prune_presence()

        background = [
            asyncio.create_task(bus.listen(hub.on_event, hub.resync), name="pubsub"),
            asyncio.create_task(
                _every(settings.presence_interval, heartbeat, "presence"), name="presence"
            ),
            asyncio.create_task(
                _every(settings.receipt_interval, hub.flush_receipts, "receipts"), name="receipts"
            ),
            asyncio.create_task(
                _every(settings.reconcile_interval, hub.reconcile, "reconcile"), name="reconcile"
            ),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await hub.aclose()
            with contextlib.suppress(*REDIS_DOWN):
                for listener in listeners:
                    await listener.aclose()
                await redis.aclose()
            await engine.dispose()

    app = build_app(
        settings,
        title="Chat",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        errors=ERRORS,
        access_log=settings.access_log,
    )
    app.include_router(pages)
    app.include_router(api)
    app.include_router(ws_router)
    return app
