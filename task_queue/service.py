"""The queue's domain logic for the API: submit, look up, cancel, retry, replay, schedule.

Plain Python over the store and the dispatcher; sending to the broker happens after the SQL
row is committed, so a worker never receives a job it cannot find.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import transaction
from common.redis import REDIS_DOWN, AnyRedis
from task_queue import events, live, store
from task_queue.dispatch import Dispatcher
from task_queue.errors import BadCursor, InvalidJob, JobConflict, JobNotFound
from task_queue.jobtypes import Registry
from task_queue.scheduler import next_fire
from task_queue.settings import TaskQueueSettings
from task_queue.states import TERMINAL, JobStatus
from task_queue.store import Job, Schedule, Workflow


@dataclass(frozen=True)
class Submission:
    type: str
    args: dict[str, Any]
    queue: str | None = None
    priority: int = 5
    run_at: float | None = None
    max_retries: int | None = None
    timeout_seconds: float | None = None
    idempotency_key: str | None = None


class JobService:
    def __init__(
        self,
        *,
        settings: TaskQueueSettings,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: Dispatcher,
        redis: AnyRedis,
        registry: Registry,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.redis = redis
        self.registry = registry
        # SQLite has one writer: the API's connections take turns here, so a burst of submits
        # never has a dozen of them sleeping in SQLite's busy handler (past the SQL timeout, a
        # 503), and only one waits while a worker writes.
        self._one_writer = asyncio.Lock() if settings.database().startswith("sqlite") else None

    def validate(
        self, type_name: str, args: dict[str, Any], queue: str | None
    ) -> tuple[dict[str, Any], str]:
        """The args as the type takes them and the queue; InvalidJob (422) otherwise."""
        job_type = self.registry.get(type_name)
        if job_type is None:
            known = ", ".join(sorted(self.registry.types))
            raise InvalidJob(f"unknown job type {type_name!r} (known: {known})")
        if len(json.dumps(args, default=str)) > self.settings.max_args_bytes:
            raise InvalidJob(f"args exceed {self.settings.max_args_bytes} bytes")
        try:
            clean = job_type.validate(args)
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        queue = queue or job_type.queue
        if queue not in self.settings.queues:
            raise InvalidJob(f"unknown queue {queue!r} (known: {', '.join(self.settings.queues)})")
        return clean, queue

    def _row(self, sub: Submission) -> Job:
        """A checked submission as a new job row (InvalidJob when it does not fit)."""
        args, queue = self.validate(sub.type, sub.args, sub.queue)
        job_type = self.registry.types[sub.type]
        now = time.time()
        delayed = sub.run_at is not None and sub.run_at > now
        return store.job_row(
            type=sub.type,
            args=args,
            queue=queue,
            priority=sub.priority,
            status=JobStatus.SCHEDULED if delayed else JobStatus.QUEUED,
            run_at=sub.run_at if delayed else None,
            max_retries=sub.max_retries
            if sub.max_retries is not None
            else self.registry.max_retries(sub.type, self.settings.default_max_retries),
            timeout_seconds=sub.timeout_seconds
            or job_type.timeout_seconds
            or self.settings.default_timeout_seconds,
            idempotency_key=sub.idempotency_key,
            dispatch=0 if delayed else 1,
            queued_at=None if delayed else now,
        )

    async def submit(self, sub: Submission) -> tuple[Job, bool]:
        """Create (or find, by idempotency key) a job; returns it and whether it is new."""
        row = self._row(sub)
        if self._one_writer is None:
            job, created = await store.insert_job(self.sessions, row)
        else:
            async with self._one_writer:
                job, created = await store.insert_job(self.sessions, row)
        if created:
            if job.status == JobStatus.QUEUED:
                await self._send(job)
            await events.publish(self.redis, job.id, "status", status=job.status)
        return job, created

    async def submit_many(self, subs: list[Submission]) -> list[tuple[Job, bool]]:
        """A batch, all or nothing: every item is checked first (InvalidJob naming the first
        bad item's index: nothing is recorded), then all are recorded in one transaction and
        the new queued ones published in one batch. Returns each item's job and whether it
        is new, in order."""
        rows = []
        for index, sub in enumerate(subs):
            try:
                rows.append(self._row(sub))
            except InvalidJob as exc:
                raise InvalidJob(f"jobs[{index}]: {exc.detail}", index=index) from None
        if self._one_writer is None:
            results = await store.insert_jobs(self.sessions, rows)
        else:
            async with self._one_writer:
                results = await store.insert_jobs(self.sessions, rows)
        new = [job for job, created in results if created]
        self.dispatcher.send_many([job for job in new if job.status == JobStatus.QUEUED])
        await events.publish_many(
            self.redis, [(job.id, "status", {"status": job.status}) for job in new]
        )
        return results

    async def _send(self, job: Job) -> None:
        # Called on the event loop, not in a thread: a publish to the broker is one short
        # write, cheaper than the hop to a worker thread and back on a busy machine.
        self.dispatcher.send_job(job)

    async def get(self, job_id: str) -> Job:
        async with self.sessions() as session:
            return await store.get_job(session, job_id)

    async def list_jobs(
        self,
        *,
        status: str | None,
        type: str | None,
        queue: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Job], str | None]:
        if cursor is not None and (len(cursor) > 40 or not cursor.isalnum()):
            raise BadCursor("cursor is not one this API returned")
        async with self.sessions() as session:
            jobs = await store.list_jobs(
                session, status=status, type=type, queue=queue, cursor=cursor, limit=limit + 1
            )
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, (jobs[-1].id if more and jobs else None)

    async def cancel(self, job_id: str) -> Job:
        async with transaction(self.sessions) as session:
            job = await store.get_job(session, job_id)
            if JobStatus(job.status) in TERMINAL:
                raise JobConflict(f"job {job_id} is already {job.status}")
            # Redis first: from here no worker claims this dispatch. One that already did may
            # not have told SQL yet (a job under 0.1 s old): it is stopped all the same.
            claimed = False
            with contextlib.suppress(*REDIS_DOWN):
                claimed = await live.mark_cancelled(self.redis, job.id, job.dispatch)
            unrecorded = claimed and job.status == JobStatus.QUEUED
            was_running = await store.cancel_job(session, job) or unrecorded
        if was_running:
            await asyncio.to_thread(self.dispatcher.cancel_running, job.id, job.dispatch)
        await events.publish(self.redis, job.id, "status", status=job.status)
        return await self.get(job_id)

    async def retry(self, job_id: str, *, only_dead: bool = False) -> Job:
        """Run a finished job again (a dead letter's replay): same job, more attempts."""
        async with transaction(self.sessions) as session:
            job = await store.get_job(session, job_id)
            if only_dead and job.status != JobStatus.DEAD:
                raise JobNotFound(f"job {job_id} is not a dead letter")
            if job.status not in (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED):
                raise JobConflict(f"job {job_id} is {job.status}; only finished jobs are retried")
            await store.reset_for_replay(session, job)
            await store.mark_queued(session, job)
        await self._send(job)
        await events.publish(self.redis, job.id, "status", status=job.status)
        return await self.get(job_id)

    async def delete_dead(self, job_id: str) -> None:
        async with transaction(self.sessions) as session:
            job = await store.get_job(session, job_id)
            if job.status != JobStatus.DEAD:
                raise JobNotFound(f"job {job_id} is not a dead letter")
            await store.delete_job(session, job)

    # -- schedules --------------------------------------------------------------------

    async def add_schedule(
        self,
        *,
        type: str,
        args: dict[str, Any],
        queue: str | None,
        priority: int,
        cron: str | None,
        every_seconds: float | None,
    ) -> Schedule:
        if (cron is None) == (every_seconds is None):
            raise InvalidJob("give exactly one of cron or every_seconds")
        args, queue = self.validate(type, args, queue)
        now = time.time()
        row = Schedule(
            id=store.new_id("s"),
            type=type,
            args=args,
            queue=queue,
            priority=priority,
            cron=cron,
            every_seconds=every_seconds,
            paused=False,
            runs=0,
            created_at=now,
            next_run_at=now,
        )
        if cron is not None:
            from croniter import croniter

            if not croniter.is_valid(cron):
                raise InvalidJob(f"cron: {cron!r} is not a cron expression")
        row.next_run_at = next_fire(row, now) if cron else now + (every_seconds or 0)
        async with transaction(self.sessions) as session:
            session.add(row)
        return row

    async def schedules(self) -> list[Schedule]:
        async with self.sessions() as session:
            return await store.list_schedules(session)

    async def pause_schedule(self, schedule_id: str, paused: bool) -> Schedule:
        async with transaction(self.sessions) as session:
            row = await store.get_schedule(session, schedule_id)
            row.paused = paused
            if not paused and row.next_run_at < time.time():
                row.next_run_at = next_fire(row, time.time())
        return row

    async def delete_schedule(self, schedule_id: str) -> None:
        async with transaction(self.sessions) as session:
            await session.delete(await store.get_schedule(session, schedule_id))

    # -- workflows ----------------------------------------------------------------------

    async def start_workflow(
        self,
        *,
        kind: str,
        steps: list[dict[str, Any]],
        final: dict[str, Any] | None,
        queue: str | None,
    ) -> Workflow:
        checked = []
        for spec in [*steps, *([final] if final else [])]:
            args, step_queue = self.validate(spec["type"], spec["args"], queue)
            checked.append({"type": spec["type"], "args": args, "queue": step_queue})
        now = time.time()
        flow = Workflow(
            id=store.new_id("w"),
            kind=kind,
            steps=checked[: len(steps)],
            final=checked[len(steps)] if final else None,
            queue=queue or "default",
            status="running",
            done=0,
            created_at=now,
        )
        first = checked if kind == "group" else checked[:1]
        first = first[: len(steps)]
        jobs = [
            store.job_row(
                type=spec["type"],
                args=spec["args"],
                queue=spec["queue"],
                priority=5,
                status=JobStatus.QUEUED,
                max_retries=self.registry.max_retries(
                    spec["type"], self.settings.default_max_retries
                ),
                timeout_seconds=self.settings.default_timeout_seconds,
                workflow_id=flow.id,
                step=i,
                dispatch=1,
                queued_at=now,
            )
            for i, spec in enumerate(first)
        ]
        async with transaction(self.sessions) as session:
            session.add(flow)
            await session.flush()
            session.add_all(jobs)
        for job in jobs:
            await self._send(job)
        return flow

    async def workflow(self, workflow_id: str) -> tuple[Workflow, list[Job]]:
        async with self.sessions() as session:
            return await store.get_workflow(session, workflow_id)
