"""SQL history: jobs, their attempts, schedules and workflows (SQLite or PostgreSQL).

Times are Unix seconds (floats) so SQLite and PostgreSQL compare them the same way. The API
reads and writes through the async functions here; workers and the scheduler, which have no
event loop, use `ledger.py` over the same tables.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from task_queue.errors import JobConflict, JobNotFound, ScheduleNotFound, WorkflowNotFound
from task_queue.states import JobStatus


class Base(DeclarativeBase):
    pass


def new_id(prefix: str) -> str:
    """Time-ordered ids (ms clock, then random bits): newest first is `ORDER BY id DESC`."""
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(5).hex()}"


class Job(Base):
    __tablename__ = "tq_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=5)
    status: Mapped[str] = mapped_column(String(16), index=True)
    max_retries: Mapped[int] = mapped_column(Integer)
    timeout_seconds: Mapped[float] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    run_at: Mapped[float | None] = mapped_column(Float)
    # How many times the job was handed to the broker: a message carries its number, and a
    # message whose number is not the job's current one is stale (a redelivery) and dropped.
    dispatch: Mapped[int] = mapped_column(Integer, default=0)
    attempts_count: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts made before the last replay: retries are counted from here.
    attempt_base: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(500), default="")
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    queued_at: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    workflow_id: Mapped[str | None] = mapped_column(String(40), index=True)
    step: Mapped[int | None] = mapped_column(Integer)
    schedule_id: Mapped[str | None] = mapped_column(String(40))

    attempts: Mapped[list[Attempt]] = relationship(
        order_by="Attempt.number", lazy="selectin", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_tq_jobs_due", "status", "run_at"),
        Index("ix_tq_jobs_queue_status", "queue", "status"),
    )


class Attempt(Base):
    __tablename__ = "tq_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("tq_jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


class Schedule(Base):
    __tablename__ = "tq_schedules"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(100))
    every_seconds: Mapped[float | None] = mapped_column(Float)
    paused: Mapped[bool] = mapped_column(default=False)
    next_run_at: Mapped[float] = mapped_column(Float, index=True)
    last_run_at: Mapped[float | None] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class Workflow(Base):
    __tablename__ = "tq_workflows"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # chain | group
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    final: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


def job_row(**fields: Any) -> Job:
    """A new job row with its bookkeeping filled in."""
    now = time.time()
    defaults: dict[str, Any] = {
        "id": new_id("j"),
        "created_at": now,
        "updated_at": now,
        "dispatch": 0,
        "attempts_count": 0,
        "attempt_base": 0,
        "progress": 0.0,
        "progress_message": "",
        "attempts": [],
    }
    return Job(**{**defaults, **fields})


_INSERT_JOB = insert(Job)


async def insert_job(sessions: async_sessionmaker[AsyncSession], job: Job) -> tuple[Job, bool]:
    """Insert, or return the job already holding its idempotency key (created=False).
    The unique index decides between concurrent submits with one key: one insert wins."""
    values = {column.key: getattr(job, column.key) for column in Job.__table__.columns}
    try:
        # A Core insert on the session's connection: the unit of work is not needed for one row.
        async with sessions() as session, session.begin():
            await (await session.connection()).execute(_INSERT_JOB, values)
        return job, True
    except IntegrityError:
        if job.idempotency_key is None:
            raise
    async with sessions() as session:
        existing = await session.scalar(
            select(Job).where(Job.idempotency_key == job.idempotency_key)
        )
    if existing is None:
        raise JobConflict("the idempotency key is held by a job being deleted; retry")
    return existing, False


def _insert_unless_key_held(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, in the dialect's
    words: a row whose key is already held is skipped, not an error for the whole batch."""
    from sqlalchemy.dialects import postgresql, sqlite

    statement = postgresql.insert(Job) if dialect == "postgresql" else sqlite.insert(Job)
    return statement.on_conflict_do_nothing(index_elements=[Job.idempotency_key]).returning(Job.id)


_BATCH_INSERTS = {name: _insert_unless_key_held(name) for name in ("postgresql", "sqlite")}


async def insert_jobs(
    sessions: async_sessionmaker[AsyncSession], jobs: list[Job]
) -> list[tuple[Job, bool]]:
    """A batch in one transaction and one multi-row INSERT; returns, in order, each item's
    job and whether it is new. An item whose idempotency key is already held (by an earlier
    job, or by an earlier item of the batch) gets that job, as `insert_job` answers one."""
    first: dict[str, Job] = {}  # the first item of the batch with each key
    fresh: list[Job] = []
    for job in jobs:
        key = job.idempotency_key
        if key is None or key not in first:
            fresh.append(job)
            if key is not None:
                first[key] = job
    columns = [column.key for column in Job.__table__.columns]
    rows = [{name: getattr(job, name) for name in columns} for job in fresh]
    async with sessions() as session, session.begin():
        conn = await session.connection()
        # An executemany with RETURNING: SQLAlchemy sends it as one INSERT ... VALUES (...),
        # (...), ... ("insertmanyvalues"), split only past the driver's parameter limit.
        result = await conn.execute(_BATCH_INSERTS[conn.dialect.name], rows)
        inserted = set(result.scalars())
        held = [key for key, job in first.items() if job.id not in inserted]
        existing: dict[str, Job] = {}
        if held:
            found = await session.scalars(select(Job).where(Job.idempotency_key.in_(held)))
            existing = {job.idempotency_key: job for job in found if job.idempotency_key}
            if len(existing) < len(held):
                raise JobConflict("an idempotency key is held by a job being deleted; retry")
    out: list[tuple[Job, bool]] = []
    for job in jobs:
        key = job.idempotency_key
        if key is None:
            out.append((job, True))
        elif key in existing:
            out.append((existing[key], False))
        else:
            out.append((first[key], first[key] is job))
    return out


async def get_job(session: AsyncSession, job_id: str) -> Job:
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


async def list_jobs(
    session: AsyncSession,
    *,
    status: str | None,
    type: str | None,
    queue: str | None,
    cursor: str | None,
    limit: int,
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    if type:
        query = query.where(Job.type == type)
    if queue:
        query = query.where(Job.queue == queue)
    if cursor:
        query = query.where(Job.id < cursor)
    return list(await session.scalars(query))


async def mark_queued(session: AsyncSession, job: Job) -> int:
    """Move a job to `queued` with its next dispatch number (returns that number)."""
    job.dispatch += 1
    job.status = JobStatus.QUEUED
    job.queued_at = job.updated_at = time.time()
    job.run_at = None
    await session.flush()
    return job.dispatch


async def cancel_job(session: AsyncSession, job: Job) -> bool:
    """Cancel unless finished; returns whether it was running (its worker must be stopped)."""
    was_running = job.status == JobStatus.RUNNING
    now = time.time()
    job.status = JobStatus.CANCELLED
    job.finished_at = job.updated_at = now
    for attempt in job.attempts:
        if attempt.finished_at is None:
            attempt.finished_at = now
            attempt.outcome = "cancelled"
    await session.flush()
    return was_running


async def queue_stats(session: AsyncSession) -> dict[str, tuple[int, float | None]]:
    """Per queue: jobs waiting in the broker (by SQL) and the oldest one's queued time."""
    rows = await session.execute(
        select(Job.queue, func.count(), func.min(Job.queued_at))
        .where(Job.status == JobStatus.QUEUED)
        .group_by(Job.queue)
    )
    return {queue: (count, oldest) for queue, count, oldest in rows}


async def running_jobs(session: AsyncSession) -> dict[str, list[str]]:
    """Running job ids by worker node (a job's worker is `<node>/<pid>`)."""
    rows = await session.execute(select(Job.worker, Job.id).where(Job.status == JobStatus.RUNNING))
    out: dict[str, list[str]] = {}
    for worker, job_id in rows:
        if worker:
            out.setdefault(worker.split("/")[0], []).append(job_id)
    return out


async def get_schedule(session: AsyncSession, schedule_id: str) -> Schedule:
    found = await session.get(Schedule, schedule_id)
    if found is None:
        raise ScheduleNotFound(f"no schedule {schedule_id}")
    return found


async def list_schedules(session: AsyncSession) -> list[Schedule]:
    return list(await session.scalars(select(Schedule).order_by(Schedule.id)))


async def get_workflow(session: AsyncSession, workflow_id: str) -> tuple[Workflow, list[Job]]:
    found = await session.get(Workflow, workflow_id, populate_existing=True)
    if found is None:
        raise WorkflowNotFound(f"no workflow {workflow_id}")
    jobs = await session.scalars(
        select(Job).where(Job.workflow_id == workflow_id).order_by(Job.step)
    )
    return found, list(jobs)


async def delete_job(session: AsyncSession, job: Job) -> None:
    await session.delete(job)
    await session.flush()


async def reset_for_replay(session: AsyncSession, job: Job) -> None:
    """A dead letter gets a fresh set of retries (its attempts stay in the history)."""
    job.attempt_base = job.attempts_count
    job.error = None
    job.finished_at = None
    await session.flush()
