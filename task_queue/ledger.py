"""What workers and the scheduler write to the SQL history (blocking; they have no event loop).

Every write is a conditional UPDATE on (job id, dispatch number, status): a message that was
delivered twice, a job cancelled meanwhile or a second scheduler racing this one finds no row
to update and does nothing. That is what makes at-least-once delivery run a job once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from task_queue.states import WAITING, JobStatus, Outcome
from task_queue.store import Attempt, Job, Schedule, Workflow, job_row


def sync_url(url: str) -> str:
    """The blocking driver for a URL the API uses asynchronously."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = "sqlite" if backend == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_sync_engine(url: str) -> Engine:
    url = sync_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_size=2, max_overflow=4, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, as the API's
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


# The statements run for every job, built once (SQLAlchemy then skips building and keying
# them on each call); parameters are named b_* (column names are reserved for SET values).
_RUNNING_JOB = (
    Job.id == bindparam("b_job"),
    Job.dispatch == bindparam("b_dispatch"),
    Job.status == JobStatus.RUNNING,
)
# A job still waiting at this dispatch: what a claim takes, and what the recorder writes to.
QUEUED_AT_DISPATCH = (
    Job.id == bindparam("b_job"),
    Job.dispatch == bindparam("b_dispatch"),
    Job.status == JobStatus.QUEUED,
)
_CLAIM = (
    update(Job)
    .where(*QUEUED_AT_DISPATCH)
    .values(
        status=JobStatus.RUNNING,
        worker=bindparam("b_worker"),
        heartbeat_at=bindparam("b_now"),
        started_at=bindparam("b_started"),
        updated_at=bindparam("b_now"),
        attempts_count=Job.attempts_count + 1,
    )
    .returning(
        Job.type,
        Job.args,
        Job.attempts_count,
        Job.attempt_base,
        Job.max_retries,
        Job.workflow_id,
        Job.queued_at,
    )
)
_OPEN_ATTEMPT = insert(Attempt).values(
    job_id=bindparam("b_job"),
    number=bindparam("b_number"),
    worker=bindparam("b_worker"),
    started_at=bindparam("b_started"),
    outcome=Outcome.RUNNING,
)
_CLOSE_ATTEMPT = (
    update(Attempt)
    .where(Attempt.job_id == bindparam("b_job"), Attempt.finished_at.is_(None))
    .values(
        finished_at=bindparam("b_now"), outcome=bindparam("b_outcome"), error=bindparam("b_error")
    )
)
_ENDED: dict[str, Any] = {
    "status": bindparam("b_status"),
    "updated_at": bindparam("b_now"),
    "error": bindparam("b_error"),
}
_FINISH = {
    JobStatus.SUCCEEDED: update(Job)
    .where(*_RUNNING_JOB)
    .values(
        **_ENDED,
        result=bindparam("b_result", type_=Job.result.type),
        progress=100.0,
        finished_at=bindparam("b_now"),
    ),
    JobStatus.RETRYING: update(Job)
    .where(*_RUNNING_JOB)
    .values(**_ENDED, run_at=bindparam("b_run_at")),
    JobStatus.FAILED: update(Job)
    .where(*_RUNNING_JOB)
    .values(**_ENDED, finished_at=bindparam("b_now")),
}


def _finish_kind(status: JobStatus) -> JobStatus:
    """Which of the _FINISH statements records `status` (failed, dead: the same one)."""
    return status if status in _FINISH else JobStatus.FAILED


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns: what to run and how many attempts it has had."""

    job_id: str
    dispatch: int
    type: str
    args: dict[str, Any]
    attempt: int  # 1 for the first run (counted from the last replay)
    max_retries: int
    workflow_id: str | None
    queued_at: float | None = None  # when it was last sent to the broker


@dataclass(frozen=True)
class Due:
    job_id: str
    status: str
    dispatch: int


class Ledger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def claim(
        self, job_id: str, dispatch: int, worker: str, *, started: float | None = None
    ) -> Claim | None:
        """Take a queued job for this worker; None when the message is stale or cancelled.
        `started`: when it was claimed in Redis (the job is running already; SQL learns it)."""
        now = time.time()
        key = {
            "b_job": job_id,
            "b_dispatch": dispatch,
            "b_worker": worker,
            "b_now": now,
            "b_started": now if started is None else started,
        }
        with self.engine.begin() as conn:
            row = conn.execute(_CLAIM, key).first()
            if row is None:
                return None
            type_name, args, attempts, base, max_retries, workflow_id, queued_at = row
            conn.execute(_OPEN_ATTEMPT, {**key, "b_number": attempts})
            return Claim(
                job_id=job_id,
                dispatch=dispatch,
                type=type_name,
                args=dict(args),
                attempt=attempts - base,
                max_retries=max_retries,
                workflow_id=workflow_id,
                queued_at=queued_at,
            )

    def job(self, job_id: str) -> Job | None:
        with self.sessions() as s:
            return s.get(Job, job_id)

    def _running(self, job_id: str, dispatch: int) -> Any:
        return update(Job).where(
            Job.id == job_id, Job.dispatch == dispatch, Job.status == JobStatus.RUNNING
        )

    def heartbeat(self, job_id: str, dispatch: int) -> bool:
        with self.engine.begin() as s:
            done = s.execute(self._running(job_id, dispatch).values(heartbeat_at=time.time()))
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def progress(self, job_id: str, dispatch: int, percent: float, message: str) -> None:
        with self.engine.begin() as s:
            s.execute(
                self._running(job_id, dispatch).values(
                    progress=percent, progress_message=message[:500], updated_at=time.time()
                )
            )

    def _close_attempt(
        self, s: Session | Connection, job_id: str, outcome: Outcome, error: str | None
    ) -> None:
        s.execute(
            update(Attempt)
            .where(Attempt.job_id == job_id, Attempt.finished_at.is_(None))
            .values(finished_at=time.time(), outcome=outcome, error=error)
        )

    def finish(
        self,
        claim: Claim,
        *,
        status: JobStatus,
        outcome: Outcome,
        result: Any = None,
        error: str | None = None,
        run_at: float | None = None,
    ) -> bool:
        """Record how an attempt ended; False when the job was cancelled or taken meanwhile."""
        params = {
            "b_job": claim.job_id,
            "b_dispatch": claim.dispatch,
            "b_status": status,
            "b_now": time.time(),
            "b_error": error,
            "b_result": result,
            "b_run_at": run_at,
            "b_outcome": outcome,
        }
        with self.engine.begin() as conn:
            if not conn.execute(_FINISH[_finish_kind(status)], params).rowcount:
                return False
            conn.execute(_CLOSE_ATTEMPT, params)
            return True

    def defer(self, job_id: str, dispatch: int, run_at: float) -> bool:
        """Hold a queued job back until `run_at` (rate limited): not an attempt."""
        with self.sessions.begin() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.dispatch == dispatch, Job.status == JobStatus.QUEUED)
                .values(status=JobStatus.SCHEDULED, run_at=run_at, updated_at=time.time())
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    # -- the scheduler's side ------------------------------------------------------------

    def due(self, now: float, limit: int = 500) -> list[Due]:
        with self.sessions() as s:
            rows = s.execute(
                select(Job.id, Job.status, Job.dispatch)
                .where(Job.status.in_(list(WAITING)), Job.run_at <= now)
                .order_by(Job.run_at)
                .limit(limit)
            )
            return [Due(*row) for row in rows]

    def unclaimed(self, sent_before: float, limit: int = 500) -> list[Job]:
        """Jobs still `queued` from a send before `sent_before`: no worker took them."""
        with self.sessions() as s:
            query = select(Job).where(Job.status == JobStatus.QUEUED, Job.queued_at < sent_before)
            return list(s.scalars(query.order_by(Job.queued_at).limit(limit)))

    def resent(self, job: Job, now: float) -> bool:
        """Note a second message for the same dispatch, unless the job moved meanwhile (or
        another scheduler sent it first)."""
        with self.sessions.begin() as s:
            done = s.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.status == JobStatus.QUEUED,
                    Job.dispatch == job.dispatch,
                    Job.queued_at == job.queued_at,
                )
                .values(queued_at=now)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def requeue(self, due: Due) -> Job | None:
        """Move a waiting job to `queued` with the next dispatch number, unless another
        scheduler did first; returns the job to send."""
        now = time.time()
        with self.sessions.begin() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == due.job_id, Job.status == due.status, Job.dispatch == due.dispatch)
                .values(
                    status=JobStatus.QUEUED,
                    dispatch=due.dispatch + 1,
                    queued_at=now,
                    updated_at=now,
                    run_at=None,
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
            return s.get_one(Job, due.job_id)

    def lost(self, now: float, timeout: float) -> list[Due]:
        """Running jobs whose heartbeats stopped: their worker is gone."""
        with self.sessions() as s:
            rows = s.execute(
                select(Job.id, Job.status, Job.dispatch).where(
                    Job.status == JobStatus.RUNNING, Job.heartbeat_at < now - timeout
                )
            )
            return [Due(*row) for row in rows]

    def reap(self, due: Due, *, retry_at: float | None) -> bool:
        """Close a lost job's attempt; it is retried at `retry_at` or dead. An attempt that
        ran past its job's timeout was killed by the hard limit: `timeout`, else `lost`."""
        now = time.time()
        status = JobStatus.RETRYING if retry_at is not None else JobStatus.DEAD
        with self.sessions() as s:
            started, timeout = s.execute(
                select(Job.started_at, Job.timeout_seconds).where(Job.id == due.job_id)
            ).one()
        timed_out = started is not None and now - started >= timeout
        outcome = Outcome.TIMEOUT if timed_out else Outcome.LOST
        error = "hard time limit reached" if timed_out else "worker lost (no heartbeat)"
        with self.sessions.begin() as s:
            done = s.execute(
                self._running(due.job_id, due.dispatch).values(
                    status=status,
                    run_at=retry_at,
                    updated_at=now,
                    error=error,
                    finished_at=None if retry_at is not None else now,
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return False
            self._close_attempt(s, due.job_id, outcome, error)
            return True

    def lost_attempt(self, job_id: str) -> tuple[str, int, bool]:
        """A lost job's type, the number of the attempt it lost (as the runner counts them)
        and whether it may be retried."""
        with self.sessions() as s:
            job = s.get_one(Job, job_id)
            attempt = job.attempts_count - job.attempt_base
            return job.type, attempt, attempt <= job.max_retries

    def due_schedules(self, now: float) -> list[Schedule]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(Schedule).where(Schedule.paused.is_(False), Schedule.next_run_at <= now)
                )
            )

    def fire(self, schedule: Schedule, next_run_at: float, **job: Any) -> Job | None:
        """Create the job of one firing; the slot's idempotency key makes a second
        scheduler's attempt at the same slot a no-op (returns None)."""
        slot = f"schedule:{schedule.id}:{schedule.next_run_at:.3f}"
        try:
            with self.sessions.begin() as s:
                row = job_row(idempotency_key=slot, schedule_id=schedule.id, **job)
                s.add(row)
                s.flush()
                s.execute(
                    update(Schedule)
                    .where(Schedule.id == schedule.id)
                    .values(
                        next_run_at=next_run_at,
                        last_run_at=time.time(),
                        runs=Schedule.runs + 1,
                    )
                )
                return row
        except IntegrityError:
            return None

    # -- workflows ---------------------------------------------------------------------

    def workflow_step_done(self, workflow_id: str) -> tuple[Workflow, list[Job]] | None:
        """Count a succeeded step; the workflow (with the count this step made, read in the
        same transaction, so one caller alone sees the last count) and its jobs."""
        with self.sessions.begin() as s:
            s.execute(
                update(Workflow).where(Workflow.id == workflow_id).values(done=Workflow.done + 1)
            )
            flow = s.get_one(Workflow, workflow_id, populate_existing=True)
            jobs = list(
                s.scalars(select(Job).where(Job.workflow_id == workflow_id).order_by(Job.step))
            )
            return flow, jobs

    def add_job(self, **fields: Any) -> Job:
        with self.sessions.begin() as s:
            row = job_row(**fields)
            s.add(row)
            return row

    def set_workflow_status(self, workflow_id: str, status: str) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(Workflow)
                .where(Workflow.id == workflow_id)
                .values(status=status, finished_at=time.time())
            )
