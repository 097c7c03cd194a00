"""Test data for the task queue: job rows written straight to SQL, as the API would."""

from __future__ import annotations

from task_queue.ledger import Ledger
from task_queue.states import JobStatus
from task_queue.store import Job, job_row


def queued_job(
    ledger: Ledger, type_name: str = "noop", *, earlier_attempts: int = 0, max_retries: int = 3
) -> Job:
    """A job `queued` at dispatch 1 (its message is not sent: the test plays the worker)."""
    job = job_row(
        type=type_name,
        args={},
        queue="default",
        status=JobStatus.QUEUED,
        max_retries=max_retries,
        timeout_seconds=600,
        dispatch=1,
        attempts_count=earlier_attempts,
    )
    with ledger.sessions.begin() as s:
        s.add(job)
    return job
