"""The words a job's life is told in: its statuses and its attempts' outcomes."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for run_at (held by our scheduler, not by the broker)
    QUEUED = "queued"  # sent to the broker
    RUNNING = "running"
    RETRYING = "retrying"  # failed; waiting for its backoff to pass
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a permanent error: not retried
    CANCELLED = "cancelled"
    DEAD = "dead"  # retries exhausted: a dead letter


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DEAD})
# Statuses the scheduler sends to the broker once their run_at has passed.
WAITING = frozenset({JobStatus.SCHEDULED, JobStatus.RETRYING})


class Outcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERROR = "error"  # failed, will be retried if retries remain
    PERMANENT = "permanent"  # failed, never retried
    TIMEOUT = "timeout"
    LOST = "lost"  # its worker stopped sending heartbeats (killed, OOM, machine gone)
    CANCELLED = "cancelled"
