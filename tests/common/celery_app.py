"""A tiny Celery app for common/celery.py's tests, built from the environment."""

from __future__ import annotations

import os
import time
from typing import Any

import structlog

from common.celery import create_celery
from common.settings import ServiceSettings

settings = ServiceSettings(
    service_name="celery_test",
    redis_url=os.environ["TEST_CELERY_REDIS_URL"],
    log_format="json",
    _env_file=None,  # type: ignore[call-arg]
)
settings.__dict__["broker_url"] = os.environ.get("TEST_CELERY_BROKER_URL")
celery_app = create_celery(settings, name="celery_test")


@celery_app.task(name="test.add")
def add(x: int, y: int) -> int:
    return x + y


@celery_app.task(name="test.context")
def context() -> dict[str, Any]:
    """What a task sees of its caller: the bound log context."""
    return dict(structlog.contextvars.get_contextvars())


@celery_app.task(name="test.slow", bind=True)
def slow(self: Any, key: str, seconds: float) -> int:
    """Records each start in Redis (so a test can count runs), sleeps, returns its pid."""
    import redis

    with redis.Redis.from_url(os.environ["TEST_CELERY_REDIS_URL"]) as r:
        r.rpush(f"runs:{key}", os.getpid())
    time.sleep(seconds)
    return os.getpid()


@celery_app.task(name="test.trace")
def trace_id() -> str:
    """The trace id current while the task runs (the caller's, carried in the message)."""
    from opentelemetry import trace

    return format(trace.get_current_span().get_span_context().trace_id, "032x")
