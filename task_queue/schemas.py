"""Request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


def iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class JobCreate(BaseModel):
    type: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=5, ge=0, le=9, description="0-9, higher runs first")
    delay_seconds: float | None = Field(default=None, ge=0, le=366 * 86400)
    run_at: datetime | None = None
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_seconds: float | None = Field(default=None, gt=0, le=86400)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_delay(self) -> JobCreate:
        if self.delay_seconds is not None and self.run_at is not None:
            raise ValueError("give delay_seconds or run_at, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at needs a timezone (e.g. 2030-01-01T00:00:00Z)")
        return self


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
    chain: list[StepSpec] | None = Field(default=None, min_length=1, max_length=100)
    group: list[StepSpec] | None = Field(default=None, min_length=1, max_length=100)
    final: StepSpec | None = None
    queue: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_kind(self) -> WorkflowCreate:
        if (self.chain is None) == (self.group is None):
            raise ValueError("give exactly one of chain or group")
        if self.final is not None and self.group is None:
            raise ValueError("final goes with a group")
        return self


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
    type: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=5, ge=0, le=9)
    cron: str | None = Field(default=None, max_length=100)
    every_seconds: float | None = Field(default=None, ge=1, le=366 * 86400)

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleCreate:
        if (self.cron is None) == (self.every_seconds is None):
            raise ValueError("give exactly one of cron or every_seconds")
        return self


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
