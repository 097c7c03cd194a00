"""common/celery.py on real worker processes and a real broker (Redis; RabbitMQ too when
TEST_AMQP_URL is set): settings, request ids across the hop, kill -9 mid-task."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis as sync_redis
import structlog
from celery import Celery

from common.celery import broker_url_for, create_celery
from common.celery_workers import CeleryWorker
from common.settings import ServiceSettings
from tests.support import wait_for


def test_factory_defaults_are_safe_for_long_jobs() -> None:
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0", _env_file=None)  # type: ignore[call-arg]
    app = create_celery(settings, name="x")
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"


def test_broker_url_setting_wins_over_redis() -> None:
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0", _env_file=None)  # type: ignore[call-arg]
    settings.__dict__["broker_url"] = "amqp://guest:guest@127.0.0.1:5672//"
    assert broker_url_for(settings).startswith("amqp://")
    with pytest.raises(ValueError):
        broker_url_for(ServiceSettings(_env_file=None))  # type: ignore[call-arg]


@pytest.fixture
def queue() -> str:
    return f"q{uuid.uuid4().hex[:8]}"


@pytest.fixture
def caller(redis_url: str, broker_url: str) -> Iterator[Celery]:
    settings = ServiceSettings(redis_url=redis_url, _env_file=None)  # type: ignore[call-arg]
    settings.__dict__["broker_url"] = broker_url
    app = create_celery(settings, name="caller")
    yield app
    app.close()


@pytest.fixture
def worker(
    celery_worker_factory: Callable[..., CeleryWorker], redis_url: str, broker_url: str, queue: str
) -> CeleryWorker:
    env = {"TEST_CELERY_REDIS_URL": redis_url, "TEST_CELERY_BROKER_URL": broker_url}
    return celery_worker_factory(
        ["-A", "tests.common.celery_app:celery_app"],
        env,
        broker_url=broker_url,
        concurrency=2,
        queues=[queue],
    )


def test_a_real_worker_runs_tasks(caller: Celery, worker: CeleryWorker, queue: str) -> None:
    result = caller.send_task("test.add", args=[2, 3], queue=queue)
    assert result.get(timeout=10) == 5
    assert worker.ping()


def test_request_id_crosses_the_hop(caller: Celery, worker: CeleryWorker, queue: str) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-123")
    try:
        result = caller.send_task("test.context", queue=queue)
    finally:
        structlog.contextvars.clear_contextvars()
    seen = result.get(timeout=10)
    assert seen["request_id"] == "req-123" and seen["task_id"] == result.id


def test_trace_context_crosses_the_hop(caller: Celery, worker: CeleryWorker, queue: str) -> None:
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(
        trace_id=0x1234ABCD, span_id=0x42, is_remote=False, trace_flags=TraceFlags(1)
    )
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        result = caller.send_task("test.trace", queue=queue)
    finally:
        context.detach(token)
    assert result.get(timeout=10) == format(0x1234ABCD, "032x")


def test_kill_9_of_a_pool_process_redelivers_its_task(
    caller: Celery, worker: CeleryWorker, queue: str, redis_url: str
) -> None:
    key = uuid.uuid4().hex
    result = caller.send_task("test.slow", args=[key, 1.5], queue=queue)
    r = sync_redis.Redis.from_url(redis_url)
    first = int(wait_for(lambda: r.lindex(f"runs:{key}", 0), timeout=10))
    worker.kill_child(first)
    # acks_late + reject_on_worker_lost: the message goes back and another process runs it.
    pid = result.get(timeout=20)
    runs = [int(p) for p in r.lrange(f"runs:{key}", 0, -1)]
    assert len(runs) == 2 and runs[0] == first and pid == runs[1] != first
