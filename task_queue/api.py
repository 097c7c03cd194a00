"""Routes: parse, call the service, shape the response."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from common.openapi import problem_responses
from task_queue import events, monitor
from task_queue.deps import JobsDep, MetricsDep, RedisDep, SettingsDep, WriterDep
from task_queue.errors import InvalidJob
from task_queue.schemas import (
    AttemptRead,
    JobBatchCreate,
    JobBatchRead,
    JobCreate,
    JobPage,
    JobRead,
    JobTypeRead,
    Progress,
    QueueRead,
    ScheduleCreate,
    ScheduleRead,
    ScheduleUpdate,
    StepRead,
    WorkerRead,
    WorkflowCreate,
    WorkflowRead,
    iso,
)
from task_queue.service import Submission
from task_queue.states import TERMINAL, JobStatus
from task_queue.store import Job, Schedule, Workflow

api = APIRouter(prefix="/api", tags=["jobs"], responses=problem_responses(503))
WRITE = problem_responses(401)


def job_read(job: Job) -> JobRead:
    return JobRead(
        id=job.id,
        type=job.type,
        args=job.args,
        queue=job.queue,
        priority=job.priority,
        status=job.status,
        progress=Progress(percent=job.progress, message=job.progress_message),
        attempts=[
            AttemptRead(
                number=a.number,
                worker=a.worker,
                started_at=iso(a.started_at),
                finished_at=iso(a.finished_at),
                outcome=a.outcome,
                error=a.error,
            )
            for a in job.attempts
        ],
        max_retries=job.max_retries,
        timeout_seconds=job.timeout_seconds,
        idempotency_key=job.idempotency_key,
        result=job.result,
        error=job.error,
        worker=job.worker,
        run_at=iso(job.run_at),
        created_at=iso(job.created_at),
        queued_at=iso(job.queued_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        updated_at=iso(job.updated_at),
        workflow_id=job.workflow_id,
        step=job.step,
        schedule_id=job.schedule_id,
    )


def submission(body: JobCreate, header_key: str | None = None) -> Submission:
    """A submit's body as the service takes it (InvalidJob for rules the schema cannot say)."""
    if body.idempotency_key and header_key and body.idempotency_key != header_key:
        raise InvalidJob("the Idempotency-Key header and body field differ")
    if body.delay_seconds is not None and body.run_at is not None:
        raise InvalidJob("give delay_seconds or run_at, not both")
    if body.run_at is not None and body.run_at.tzinfo is None:
        raise InvalidJob("run_at needs a timezone (e.g. 2030-01-01T00:00:00Z)")
    run_at = None
    if body.delay_seconds:
        run_at = time.time() + body.delay_seconds
    elif body.run_at is not None:
        run_at = body.run_at.timestamp()
    return Submission(
        type=body.type,
        args=body.args,
        queue=body.queue,
        priority=body.priority,
        run_at=run_at,
        max_retries=body.max_retries,
        timeout_seconds=body.timeout_seconds,
        idempotency_key=body.idempotency_key or header_key,
    )


@api.post("/jobs", status_code=202, response_model=JobRead, responses=WRITE)
async def submit_job(
    body: JobCreate,
    jobs: JobsDep,
    metrics: MetricsDep,
    _: WriterDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobRead:
    job, created = await jobs.submit(submission(body, idempotency_key))
    response.headers["Location"] = f"/api/jobs/{job.id}"
    if created:
        metrics.submitted.labels(type=job.type).inc()
    else:
        metrics.deduplicated.inc()
        response.headers["Idempotent-Replayed"] = "true"
    return job_read(job)


@api.post(
    "/jobs/batch",
    status_code=202,
    response_model=JobBatchRead,
    responses=WRITE,
    summary="Submit many jobs in one request",
)
async def submit_jobs(
    body: JobBatchCreate, jobs: JobsDep, metrics: MetricsDep, _: WriterDep
) -> JobBatchRead:
    """Up to 500 jobs, each as `POST /api/jobs` takes it, recorded in one SQL transaction and
    published to the broker in one batch (Celery's `group`, RQ's `enqueue_many`). All or
    nothing: a bad item refuses the batch with a 422 naming its index. An item whose
    `idempotency_key` is already held (by an earlier job or an earlier item of the batch)
    gets that job, listed in `replayed`."""
    subs = []
    for index, item in enumerate(body.jobs):
        try:
            subs.append(submission(item))
        except InvalidJob as exc:
            raise InvalidJob(f"jobs[{index}]: {exc.detail}", index=index) from None
    results = await jobs.submit_many(subs)
    replayed = [i for i, (_job, created) in enumerate(results) if not created]
    for job, created in results:
        if created:
            metrics.submitted.labels(type=job.type).inc()
    if replayed:
        metrics.deduplicated.inc(len(replayed))
    return JobBatchRead(
        jobs=[job_read(job) for job, _created in results],
        created=len(results) - len(replayed),
        replayed=replayed,
    )


@api.get("/jobs", response_model=JobPage)
async def list_jobs(
    jobs: JobsDep,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    items, next_cursor = await jobs.list_jobs(
        status=status, type=type, queue=queue, cursor=cursor, limit=limit
    )
    return JobPage(items=[job_read(j) for j in items], next_cursor=next_cursor)


@api.get("/jobs/{job_id}", response_model=JobRead, responses=problem_responses(404))
async def get_job(job_id: str, jobs: JobsDep) -> JobRead:
    return job_read(await jobs.get(job_id))


@api.post(
    "/jobs/{job_id}/cancel",
    response_model=JobRead,
    responses={**WRITE, **problem_responses(404, 409)},
)
async def cancel_job(job_id: str, jobs: JobsDep, _: WriterDep) -> JobRead:
    return job_read(await jobs.cancel(job_id))


@api.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobRead,
    responses={**WRITE, **problem_responses(404, 409)},
)
async def retry_job(job_id: str, jobs: JobsDep, _: WriterDep) -> JobRead:
    return job_read(await jobs.retry(job_id))


@api.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `snapshot`, then `status` and `progress`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
)
async def job_events(
    job_id: str,
    jobs: JobsDep,
    redis: RedisDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """Server-Sent Events: `status` and `progress`, ending once the job has ended.
    Reconnect with `Last-Event-ID` to resume after the last event seen."""
    job = await jobs.get(job_id)
    start = last_event_id or "0"
    if not _valid_stream_id(start):
        raise InvalidJob("Last-Event-ID is not an event id this API sent")

    async def stream() -> AsyncIterator[bytes]:
        cursor = start
        snapshot = {"status": job.status, "percent": job.progress}
        yield f"retry: 1000\nevent: snapshot\ndata: {json.dumps(snapshot)}\n\n".encode()
        finished = JobStatus(job.status) in TERMINAL
        key = events.stream_key(job_id)
        while not await request.is_disconnected():
            block = 1 if finished else 1000
            replies: Any = await redis.xread({key: cursor}, count=100, block=block)
            for _, entries in replies or []:
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    kind = fields[b"event"].decode()
                    data = fields[b"data"].decode()
                    yield f"id: {cursor}\nevent: {kind}\ndata: {data}\n\n".encode()
                    if kind == "status" and json.loads(data).get("status") in TERMINAL:
                        return
            if finished:
                return  # finished before we looked and nothing left to replay
            if not replies:
                current = await jobs.get(job_id)  # a finish whose event Redis lost
                finished = JobStatus(current.status) in TERMINAL

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _valid_stream_id(value: str) -> bool:
    parts = value.split("-")
    return 1 <= len(parts) <= 2 and all(p.isdigit() and len(p) < 21 for p in parts)


@api.get("/job-types", response_model=list[JobTypeRead])
async def job_types(jobs: JobsDep) -> list[JobTypeRead]:
    return [
        JobTypeRead(
            name=t.name,
            queue=t.queue,
            description=t.description,
            args_schema=t.model.model_json_schema(),
        )
        for t in jobs.registry.types.values()
    ]


# -- dead letters --------------------------------------------------------------------------


@api.get("/dead-letters", response_model=JobPage)
async def dead_letters(
    jobs: JobsDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    items, next_cursor = await jobs.list_jobs(
        status=JobStatus.DEAD, type=None, queue=None, cursor=cursor, limit=limit
    )
    return JobPage(items=[job_read(j) for j in items], next_cursor=next_cursor)


@api.post(
    "/dead-letters/{job_id}/replay",
    status_code=202,
    response_model=JobRead,
    responses={**WRITE, **problem_responses(404)},
)
async def replay(job_id: str, jobs: JobsDep, _: WriterDep) -> JobRead:
    return job_read(await jobs.retry(job_id, only_dead=True))


@api.delete(
    "/dead-letters/{job_id}", status_code=204, responses={**WRITE, **problem_responses(404)}
)
async def delete_dead_letter(job_id: str, jobs: JobsDep, _: WriterDep) -> Response:
    await jobs.delete_dead(job_id)
    return Response(status_code=204)


# -- schedules -----------------------------------------------------------------------------


def schedule_read(s: Schedule) -> ScheduleRead:
    return ScheduleRead(
        id=s.id,
        type=s.type,
        args=s.args,
        queue=s.queue,
        priority=s.priority,
        cron=s.cron,
        every_seconds=s.every_seconds,
        paused=s.paused,
        next_run_at=iso(s.next_run_at),
        last_run_at=iso(s.last_run_at),
        runs=s.runs,
    )


@api.post("/schedules", status_code=201, response_model=ScheduleRead, responses=WRITE)
async def add_schedule(body: ScheduleCreate, jobs: JobsDep, _: WriterDep) -> ScheduleRead:
    return schedule_read(await jobs.add_schedule(**body.model_dump()))


@api.get("/schedules", response_model=list[ScheduleRead])
async def list_schedules(jobs: JobsDep) -> list[ScheduleRead]:
    return [schedule_read(s) for s in await jobs.schedules()]


@api.patch(
    "/schedules/{schedule_id}",
    response_model=ScheduleRead,
    responses={**WRITE, **problem_responses(404)},
)
async def pause_schedule(
    schedule_id: str, body: ScheduleUpdate, jobs: JobsDep, _: WriterDep
) -> ScheduleRead:
    return schedule_read(await jobs.pause_schedule(schedule_id, body.paused))


@api.delete(
    "/schedules/{schedule_id}", status_code=204, responses={**WRITE, **problem_responses(404)}
)
async def delete_schedule(schedule_id: str, jobs: JobsDep, _: WriterDep) -> Response:
    await jobs.delete_schedule(schedule_id)
    return Response(status_code=204)


# -- workflows -----------------------------------------------------------------------------


def workflow_read(flow: Workflow, jobs: list[Job]) -> WorkflowRead:
    by_step = {j.step: j for j in jobs}
    specs: list[dict[str, Any]] = [*flow.steps, *([flow.final] if flow.final else [])]
    steps = []
    for i, spec in enumerate(specs):
        job = by_step.get(i)
        status = job.status if job else ("skipped" if flow.status == "failed" else "pending")
        steps.append(
            StepRead(
                step=i,
                type=spec["type"],
                status=status,
                job_id=job.id if job else None,
                result=job.result if job else None,
                error=job.error if job else None,
            )
        )
    return WorkflowRead(
        id=flow.id,
        kind=flow.kind,  # type: ignore[arg-type]
        status=flow.status,
        steps=steps,
        created_at=iso(flow.created_at),
        finished_at=iso(flow.finished_at),
    )


@api.post("/workflows", status_code=202, response_model=WorkflowRead, responses=WRITE)
async def start_workflow(body: WorkflowCreate, jobs: JobsDep, _: WriterDep) -> WorkflowRead:
    if (body.chain is None) == (body.group is None):
        raise InvalidJob("give exactly one of chain or group")
    if body.final is not None and body.group is None:
        raise InvalidJob("final goes with a group")
    kind = "chain" if body.chain else "group"
    steps = [s.model_dump() for s in (body.chain or body.group or [])]
    flow = await jobs.start_workflow(
        kind=kind,
        steps=steps,
        final=body.final.model_dump() if body.final else None,
        queue=body.queue,
    )
    return workflow_read(*await jobs.workflow(flow.id))


@api.get("/workflows/{workflow_id}", response_model=WorkflowRead, responses=problem_responses(404))
async def get_workflow(workflow_id: str, jobs: JobsDep) -> WorkflowRead:
    return workflow_read(*await jobs.workflow(workflow_id))


# -- queues and workers --------------------------------------------------------------------


@api.get("/queues", response_model=list[QueueRead])
async def queues(jobs: JobsDep, settings: SettingsDep, redis: RedisDep) -> list[QueueRead]:
    return await monitor.queues(jobs, settings, redis)


@api.get("/workers", response_model=list[WorkerRead])
async def workers(jobs: JobsDep, settings: SettingsDep, redis: RedisDep) -> list[WorkerRead]:
    return await monitor.workers(jobs, settings, redis)
