"""Request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


def iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class JobCreate(BaseModel):
    """`args` must fit the type's signature (GET /api/job-types) and `queue` be configured;
    give at most one of `delay_seconds` and `run_at` (with a timezone). Otherwise 422
    `invalid-job`."""

    type: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=5, ge=0, le=9, description="0-9, higher runs first")
    delay_seconds: float | None = Field(default=None, ge=0, le=366 * 86400)
    run_at: datetime | None = None
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_seconds: float | None = Field(default=None, gt=0, le=86400)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


# The most jobs one batch submit takes (a larger batch is a 422; a body over the size limit,
# TASK_QUEUE_MAX_BODY_BYTES, a 413 first). One batch is one SQL statement: 500 rows of ~27
# columns stay under SQLite's and PostgreSQL's bound-parameter limits.
MAX_BATCH_JOBS = 500


class JobBatchCreate(BaseModel):
    """Each item as `POST /api/jobs` takes it (idempotency keys per item, in the body). The
    batch is all or nothing: an item that is not valid refuses the whole batch (422
    `invalid-job` naming the item in `index` and in `detail`, or `validation-failed` whose
    `errors[].loc` has the index), and nothing is recorded."""

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


class AttemptRead(BaseModel):
    number: int
    worker: str
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None


class Progress(BaseModel):
    percent: float
    message: str


class JobRead(BaseModel):
    id: str
    type: str
    args: dict[str, Any]
    queue: str
    priority: int
    status: str
    progress: Progress
    attempts: list[AttemptRead]
    max_retries: int
    timeout_seconds: float
    idempotency_key: str | None
    result: Any = None
    error: str | None
    worker: str | None
    run_at: datetime | None
    created_at: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    workflow_id: str | None
    step: int | None
    schedule_id: str | None


class JobBatchRead(BaseModel):
    jobs: list[JobRead] = Field(description="One per item, in the order submitted.")
    created: int = Field(description="How many items made a new job.")
    replayed: list[int] = Field(
        description="Indexes of the items answered with an existing job: their idempotency "
        "key was already held, by an earlier job or by an earlier item of this batch."
    )


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


class StepSpec(BaseModel):
    type: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)


class WorkflowCreate(BaseModel):
    """Exactly one of `chain` and `group`; `final` only with a group (else 422
    `invalid-job`)."""

    chain: list[StepSpec] | None = Field(default=None, min_length=1, max_length=100)
    group: list[StepSpec] | None = Field(default=None, min_length=1, max_length=100)
    final: StepSpec | None = None
    queue: str | None = Field(default=None, max_length=64)


class StepRead(BaseModel):
    step: int
    type: str
    status: str
    job_id: str | None
    result: Any = None
    error: str | None = None


class WorkflowRead(BaseModel):
    id: str
    kind: Literal["chain", "group"]
    status: str
    steps: list[StepRead]
    created_at: datetime | None
    finished_at: datetime | None


class ScheduleCreate(BaseModel):
    """Exactly one of `cron` (UTC) and `every_seconds` (else 422 `invalid-job`)."""

    type: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=5, ge=0, le=9)
    cron: str | None = Field(default=None, max_length=100)
    every_seconds: float | None = Field(default=None, ge=1, le=366 * 86400)


class ScheduleRead(BaseModel):
    id: str
    type: str
    args: dict[str, Any]
    queue: str
    priority: int
    cron: str | None
    every_seconds: float | None
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    runs: int


class ScheduleUpdate(BaseModel):
    paused: bool


class QueueRead(BaseModel):
    name: str
    depth: int
    oldest_age_seconds: float | None
    consumers: int


class WorkerRead(BaseModel):
    hostname: str
    alive: bool
    consuming: bool
    queues: list[str]
    concurrency: int
    current_jobs: list[str]
    processed: int
    last_heartbeat: datetime | None


class JobTypeRead(BaseModel):
    name: str
    queue: str
    description: str
    args_schema: dict[str, Any]
