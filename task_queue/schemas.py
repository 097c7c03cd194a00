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
