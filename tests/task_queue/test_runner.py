"""The runner inside one pool process, on a real database and a real Redis (no broker
needed: messages are handed to it directly)."""

from __future__ import annotations

import time

import redis as sync_redis

from common.migrations import upgrade_url
from task_queue.dispatch import MIGRATIONS, Dispatcher, celery_app, spec
from task_queue.jobtypes import registry
from task_queue.ledger import Ledger, create_sync_engine
from task_queue.live import Live
from task_queue.runner import Runner, _Running
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus, Outcome
from task_queue.store import Job
from tests.task_queue.factories import queued_job


def _runner(database_url: str, redis_url: str) -> Runner:
    settings = TaskQueueSettings(database_url=database_url, redis_url=redis_url)
    upgrade_url(database_url, MIGRATIONS)
    redis = sync_redis.Redis.from_url(redis_url)
    return Runner(
        settings=settings,
        ledger=Ledger(create_sync_engine(database_url)),
        registry=registry,
        redis=redis,
        dispatcher=Dispatcher(celery_app(settings), settings),
        rate_limit=lambda _: 0.0,
        live=Live(redis),
    )


def _queued(runner: Runner) -> Job:
    return queued_job(runner.ledger, max_retries=0)


def _in_sql(runner: Runner, job_id: str) -> tuple[str, list[str]]:
    with runner.ledger.sessions() as s:
        job = s.get_one(Job, job_id)
        return job.status, [a.outcome for a in job.attempts]


def test_a_quick_job_reaches_sql_through_the_recorder_only(
    database_url: str, redis_url: str
) -> None:
    runner = _runner(database_url, redis_url)
    job = _queued(runner)
    runner.run(job.id, 1, "noop", "node-a/11", spec(job))
    assert _in_sql(runner, job.id) == ("queued", [])  # ran; SQL hears of it with the batch
    runner.recorder.flush()
    assert _in_sql(runner, job.id) == ("succeeded", ["succeeded"])
    runner.run(job.id, 1, "noop", "node-b/12", spec(job))  # the same message again: dropped
    runner.recorder.flush()
    assert _in_sql(runner, job.id) == ("succeeded", ["succeeded"])
    runner.ledger.engine.dispose()


def test_a_beat_as_a_quick_job_ends_leaves_it_to_the_recorder(
    database_url: str, redis_url: str
) -> None:
    """The beat thread comes between the job's end (handed to the recorder) and the pool
    process letting go of it: it must not record the job as running, or the recorder's
    write (for a job still `queued`) would find it changed and record nothing."""
    runner = _runner(database_url, redis_url)
    job = _queued(runner)
    claimed = runner._claim(job.id, 1, "noop", "node-a/11", spec(job))
    assert claimed is not None
    claim, claimed_at, recorded = claimed
    assert not recorded
    started = time.monotonic() - 1  # it has run for a second: the beat would record it
    running = _Running(
        claim, "node-a/11", started, next_beat=started + 60, recorded=False, claimed_at=claimed_at
    )
    runner._current = running
    runner._end(claim, JobStatus.SUCCEEDED, Outcome.SUCCEEDED, result=7)
    runner.beat_once(time.monotonic())  # before run() clears the current job
    assert not running.recorded
    runner._current = None
    runner.recorder.flush()
    assert _in_sql(runner, job.id) == ("succeeded", ["succeeded"])
    runner.ledger.engine.dispose()
