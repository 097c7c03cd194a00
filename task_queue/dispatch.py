"""Handing a job to the broker: one Celery message naming the job and its dispatch number.

The message carries no arguments (SQL has them), so a stale redelivery can always be told
from the current one, and the job's deadlines ride along as Celery's soft and hard limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from celery import Celery

from task_queue.settings import TaskQueueSettings

TASK_NAME = "task_queue.run"
MIGRATIONS = "task_queue.migrations"  # the schema's Alembic revisions


def task_id(job_id: str, dispatch: int) -> str:
    """Deterministic, so a running job can be revoked by id without looking it up."""
    return f"{job_id}.{dispatch}"


def broker_priority(priority: int, broker_url: str) -> int:
    """Our priorities: 0-9, higher first. Redis's emulation serves 0 first; RabbitMQ, 9."""
    return priority if broker_url.startswith("amqp") else 9 - priority


class Sendable(Protocol):
    """What a message is made from (a job row has it)."""

    id: str
    dispatch: int
    type: str
    queue: str
    priority: int
    timeout_seconds: float


class Dispatcher:
    def __init__(self, app: Celery, settings: TaskQueueSettings) -> None:
        self.app = app
        self.settings = settings
        self.broker_url = str(app.conf.broker_url or "")

    def send(
        self,
        *,
        job_id: str,
        dispatch: int,
        type: str,
        queue: str,
        priority: int,
        timeout: float,
        producer: Any = None,
    ) -> None:
        self.app.send_task(
            TASK_NAME,
            args=[job_id, dispatch, type],
            queue=queue,
            routing_key=queue,
            priority=broker_priority(priority, self.broker_url),
            task_id=task_id(job_id, dispatch),
            soft_time_limit=timeout,
            time_limit=timeout + self.settings.hard_timeout_grace_seconds,
            producer=producer,
        )

    def send_many(self, jobs: list[Sendable]) -> None:
        """One message per job through one producer, batched: on Redis the LPUSHes go out
        in one pipeline (kombu's `Producer.batch`); a transport without batches (or an older
        kombu) publishes each at once, still on one connection."""
        if not jobs:
            return
        with self.app.producer_or_acquire() as producer, _batch(producer):
            for job in jobs:
                self.send_job(job, producer=producer)

    def send_job(self, job: Sendable, *, producer: Any = None) -> None:
        """The message for a job row at its current dispatch number."""
        self.send(
            job_id=job.id,
            dispatch=job.dispatch,
            type=job.type,
            queue=job.queue,
            priority=job.priority,
            timeout=job.timeout_seconds,
            producer=producer,
        )

    def cancel_running(self, job_id: str, dispatch: int) -> None:
        """Stop a running job: its pool process is terminated (the job is already
        `cancelled` in SQL, so nothing records it as lost)."""
        self.app.control.revoke(task_id(job_id, dispatch), terminate=True, signal="SIGTERM")


@contextlib.contextmanager
def _batch(producer: Any) -> Iterator[None]:
    batch = getattr(producer, "batch", None)  # kombu >= 5.7
    with batch() if batch is not None else contextlib.nullcontext():
        yield
