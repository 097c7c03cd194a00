"""Raw Celery for the experiment (`task_queue/experiment.py`): the acknowledgement mode and
Redis's visibility timeout come from the environment, so each run can choose them."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("EXP_REDIS_URL", "redis://127.0.0.1:6379/0")
ACKS_LATE = os.environ.get("EXP_ACKS_LATE", "1") == "1"

app = Celery("experiment", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=ACKS_LATE,
    task_reject_on_worker_lost=ACKS_LATE,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("EXP_VT", "3600")),
        # Sweep for messages past their visibility timeout every second (kombu's default
        # is about every 100 s), as a deployment with a short timeout would tune it.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
)
_client: redis.Redis | None = None


@app.task(name="experiment.work")
def work(key: str, seconds: float) -> None:
    """Counts its starts and finishes per key in Redis, so a run can be audited."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    _client.hincrby("exp:started", key, 1)
    time.sleep(seconds)
    _client.hincrby("exp:finished", key, 1)
