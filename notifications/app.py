"""create_app(settings): the FastAPI app; the lifespan opens and closes every connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text

from common.app import build_app
from common.celery import create_celery
from common.db import create_engine, session_factory
from common.health import HealthChecks
from common.migrations import upgrade
from common.redis import REDIS_DOWN, create_redis
from notifications import dispatch
from notifications.api import api
from notifications.directory import Directory
from notifications.errors import (
    BadCursor,
    IdempotencyConflict,
    InvalidNotification,
    NotFound,
    NotReplayable,
    TemplateError,
    Unauthorized,
)
from notifications.inbox import Inbox
from notifications.metrics import NotificationMetrics
from notifications.providers_view import ProvidersView
from notifications.service import NotificationService
from notifications.settings import NotificationsSettings
from notifications.store import Delivery

log = structlog.get_logger("notifications")
MIGRATIONS = "notifications.migrations"

ERRORS = {
    NotFound: 404,
    InvalidNotification: 422,
    TemplateError: 422,
    BadCursor: 422,
    IdempotencyConflict: 422,
    NotReplayable: 409,
    Unauthorized: 401,
}


def create_app(settings: NotificationsSettings) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("redis_url is required (python -m notifications starts one if unset)")
    redis_url = settings.redis_url
    registry = CollectorRegistry()
    metrics = NotificationMetrics(registry)
    checks = HealthChecks()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database(), timeout=settings.sql_timeout)
        await upgrade(engine, MIGRATIONS)
        sessions = session_factory(engine)
        redis = create_redis(redis_url, timeout=2.0)
        celery_app = create_celery(settings, name="notifications")

        async def enqueue(delivery_id: str, channel: str, priority: str) -> None:
            # kombu's publish blocks: off the event loop.
            await asyncio.to_thread(dispatch.enqueue, celery_app, delivery_id, channel, priority)

        app.state.notifications = NotificationService(
            settings=settings, sessions=sessions, enqueue=enqueue
        )
        app.state.directory = Directory(sessions)
        app.state.inbox = Inbox(sessions, redis, lifetime=settings.stream_lifetime_seconds)
        view = ProvidersView(settings, redis)
        app.state.providers = view

        async def sql_ok() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        checks.add("sql", sql_ok, required=True)
        checks.add("redis", redis.ping, required=True)

        async def refresh_metrics() -> None:
            while True:
                with contextlib.suppress(*REDIS_DOWN):
                    for p in await view.list():
                        metrics.set_breaker(p.name, p.state, p.opened_total)
                with contextlib.suppress(Exception):
                    async with sessions() as session:
                        rows = await session.execute(
                            select(Delivery.channel, Delivery.status, func.count()).group_by(
                                Delivery.channel, Delivery.status
                            )
                        )
                        for channel, status, count in rows:
                            metrics.deliveries.labels(channel, status).set(count)
                await asyncio.sleep(1.0)

        refresher = asyncio.create_task(refresh_metrics(), name="metrics-refresh")
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            celery_app.close()
            await redis.aclose()
            await engine.dispose()

    app = build_app(
        settings,
        title="Notifications",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        errors=ERRORS,
        access_log=settings.access_log,
    )
    app.state.metrics = metrics
    app.include_router(api)
    return app
