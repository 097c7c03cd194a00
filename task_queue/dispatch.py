"""Handing a job to the broker: one Celery message naming the job and its dispatch number.

The dispatch number tells a stale redelivery from the current message; the job's args and
counts ride along (the worker claims it in Redis without reading SQL), and its deadlines as
Celery's soft and hard limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from celery import Celery

from common.celery import create_celery
from task_queue.settings import TaskQueueSettings

TASK_NAME = "task_queue.run"
MIGRATIONS = "task_queue.migrations"  # the schema's Alembic revisions


def celery_app(settings: TaskQueueSettings) -> Celery:
    """The queue's Celery app (API, scheduler, workers alike), with no result backend: SQL
    holds results, and a backend would subscribe to every sent task's result (two Redis
    commands per send) and make sending depend on that Redis being up."""
    return create_celery(
        settings,
        name="task_queue",
        visibility_timeout=settings.visibility_timeout_seconds,
        result_backend=None,
    )


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
    args: dict[str, Any]
    attempts_count: int
    attempt_base: int
    max_retries: int
    workflow_id: str | None
    queued_at: float | None


def spec(job: Sendable) -> dict[str, Any]:
    """What a worker needs to run the job: its args, which attempt this is, how many retries
    it has, its workflow, when it was queued."""
    return {
        "args": job.args,
        "attempt": job.attempts_count - job.attempt_base + 1,
        "max_retries": job.max_retries,
        "workflow_id": job.workflow_id,
        "queued_at": job.queued_at,
    }


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
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.app.send_task(
            TASK_NAME,
            args=[job_id, dispatch, type, spec],
            # What logs and monitors show of the message (else the repr of all its args).
            argsrepr=repr([job_id, dispatch, type]),
            kwargsrepr="{}",
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
            spec=spec(job),
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
