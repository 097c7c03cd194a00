"""Raw Celery's no-op for `make bench-task_queue` (no result backend, no tracking).
Each run counts itself in Redis: how the benchmark knows every job has run."""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:done"

raw = Celery("raw", broker=REDIS_URL)
raw.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)
_client: redis.Redis | None = None


def _count() -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    _client.incr(COUNTER)


@raw.task(name="bench.noop")
def celery_noop() -> None:
    _count()
