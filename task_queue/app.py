"""create_app(settings): the FastAPI app; the lifespan opens and closes every connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from common.app import build_app
from common.db import create_engine, session_factory
from common.health import HealthChecks
from common.migrations import upgrade
from common.redis import create_redis
from task_queue import monitor
from task_queue.api import api
from task_queue.dispatch import MIGRATIONS, Dispatcher, celery_app
from task_queue.errors import (
    BadCursor,
    InvalidJob,
    JobConflict,
    JobNotFound,
    ScheduleNotFound,
    Unauthorized,
    WorkflowNotFound,
)
from task_queue.jobtypes import registry as job_registry
from task_queue.metrics import QueueMetrics
from task_queue.service import JobService
from task_queue.settings import TaskQueueSettings

ERRORS = {
    JobNotFound: 404,
    ScheduleNotFound: 404,
    WorkflowNotFound: 404,
    InvalidJob: 422,
    BadCursor: 422,
    JobConflict: 409,
    Unauthorized: 401,
}
DASHBOARD = Path(__file__).with_name("dashboard.html")


class NoConsumingWorker(Exception):
    pass


def create_app(settings: TaskQueueSettings) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("redis_url is required (python -m task_queue starts one if unset)")
    redis_url = settings.redis_url
    registry = CollectorRegistry()
    checks = HealthChecks()
    metrics = QueueMetrics(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database(), timeout=settings.sql_timeout)
        await upgrade(engine, MIGRATIONS)  # under a lock: instances starting together are safe
        redis = create_redis(redis_url, timeout=2.0)
        celery = celery_app(settings)
        app.state.redis = redis
        app.state.metrics = metrics
        app.state.jobs = JobService(
            settings=settings,
            sessions=session_factory(engine),
            dispatcher=Dispatcher(celery, settings),
            redis=redis,
            registry=job_registry,
        )

        async def sql_ok() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        async def workers_ok() -> None:
            # Alive is not enough: a worker must be consuming (its broker link up).
            if not await monitor.consuming_workers(settings, redis):
                raise NoConsumingWorker("no worker is consuming")

        checks.add("sql", sql_ok, required=True)
        checks.add("redis", redis.ping, required=True)
        checks.add("workers", workers_ok, required=False)
        try:
            yield
        finally:
            celery.close()
            await redis.aclose()
            await engine.dispose()

    app = build_app(
        settings,
        title="Task queue",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        errors=ERRORS,
        access_log=settings.access_log,
    )
    app.include_router(api)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD.read_text() if DASHBOARD.exists() else "<h1>Task queue</h1>")

    return app
