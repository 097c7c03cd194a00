"""Putting deliveries on the broker: one Celery queue per channel, so a channel whose
provider is failing or slow fills its own queue and its own workers, never the others'."""

from __future__ import annotations

from celery import Celery

TASK_NAME = "notifications.deliver"
# Redis emulates priorities with sub-queues where 0 is served first.
PRIORITIES = {"critical": 0, "high": 3, "normal": 5, "low": 8}


def queue_for(channel: str) -> str:
    return f"notifications.{channel}"


def enqueue(app: Celery, delivery_id: str, channel: str, priority: str) -> None:
    app.send_task(
        TASK_NAME,
        args=[delivery_id],
        queue=queue_for(channel),
        priority=PRIORITIES.get(priority, 5),
        # Fail fast when the broker is down: the delivery's lease expires and the sweeper
        # hands it out again, so nothing waits on a dead connection.
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    )
