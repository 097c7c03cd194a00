"""The reaper on a real database: a job whose worker was lost is retried on the same backoff
as a job that failed (its type's own policy, for the attempt it lost), or is dead."""

from __future__ import annotations

import random
import time

import redis as sync_redis

from common.migrations import upgrade_url
from task_queue.dispatch import MIGRATIONS, Dispatcher, celery_app
from task_queue.ledger import Ledger, create_sync_engine
from task_queue.live import Live
from task_queue.scheduler import Scheduler
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus
from task_queue.store import Job
from tests.task_queue.factories import queued_job


class Longest(random.Random):
    """Full jitter's longest draw, every time: the delays become exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _scheduler(database_url: str, redis_url: str, live: Live | None = None) -> Scheduler:
    """A scheduler whose backoff draws are exact (base 0.2 s, cap 10 s; lost after 2 s)."""
    settings = TaskQueueSettings(
        database_url=database_url,
        redis_url=redis_url,
        backoff_base_seconds=0.2,
        backoff_cap_seconds=10,
        heartbeat_timeout_seconds=2,
    )
    upgrade_url(database_url, MIGRATIONS)
    ledger = Ledger(create_sync_engine(database_url))
    scheduler = Scheduler(settings, ledger, Dispatcher(celery_app(settings), settings), live=live)
    scheduler.rng = Longest()
    return scheduler


def test_a_lost_job_is_retried_on_its_types_backoff(database_url: str, redis_url: str) -> None:
    scheduler = _scheduler(database_url, redis_url)
    ledger = scheduler.ledger

    def running(type_name: str, *, earlier_attempts: int, max_retries: int = 4) -> str:
        """A job on its (earlier_attempts + 1)th attempt, claimed by a worker now gone."""
        job = queued_job(
            ledger, type_name, earlier_attempts=earlier_attempts, max_retries=max_retries
        )
        assert ledger.claim(job.id, 1, "gone@host/1") is not None
        return job.id

    # flaky_fast's own policy: base 0.05 s, cap 0.1 s; sleep has none (settings: 0.2 s, 10 s).
    own = running("flaky_fast", earlier_attempts=1)
    default = running("sleep", earlier_attempts=2)
    last = running("sleep", earlier_attempts=1, max_retries=1)
    now = time.time() + 3  # their heartbeats (set by the claims) are 3 s old: lost
    scheduler.tick(now)

    with ledger.sessions() as s:
        jobs = {job_id: s.get_one(Job, job_id) for job_id in (own, default, last)}
    delays = {job_id: (job.run_at or now) - now for job_id, job in jobs.items()}
    assert jobs[own].status == JobStatus.RETRYING
    assert abs(delays[own] - 0.1) < 1e-6  # attempt 2: min(0.1, 0.05 * 2)
    assert jobs[default].status == JobStatus.RETRYING
    assert abs(delays[default] - 0.8) < 1e-6  # attempt 3: min(10, 0.2 * 4)
    assert jobs[last].status == JobStatus.DEAD  # attempt 2 of max_retries 1: none left
    ledger.engine.dispose()


def test_a_claim_sql_never_heard_of_is_reaped_once_its_worker_is_gone(
    database_url: str, redis_url: str
) -> None:
    """A worker that claimed a job in Redis and died before telling SQL (within 0.1 s of
    the claim): the reaper records the attempt it lost and retries the job, or buries it."""
    live = Live(sync_redis.Redis.from_url(redis_url))
    scheduler = _scheduler(database_url, redis_url, live)
    ledger = scheduler.ledger

    def claimed(*, earlier_attempts: int, max_retries: int = 4) -> str:
        job = queued_job(
            ledger, "sleep", earlier_attempts=earlier_attempts, max_retries=max_retries
        )
        assert live.claim(job.id, 1, "gone@host/7") is not None
        return job.id

    retried = claimed(earlier_attempts=1)
    buried = claimed(earlier_attempts=1, max_retries=1)
    scheduler.tick(time.time() + 1)  # not yet: 1 s is within the timeout
    with ledger.sessions() as s:
        assert s.get_one(Job, retried).status == JobStatus.QUEUED
    now = time.time() + 3
    scheduler.tick(now)

    with ledger.sessions() as s:
        jobs = {job_id: s.get_one(Job, job_id) for job_id in (retried, buried)}
        attempts = {
            job_id: [(a.number, a.worker, a.outcome) for a in job.attempts]
            for job_id, job in jobs.items()
        }
    assert jobs[retried].status == JobStatus.RETRYING
    assert abs((jobs[retried].run_at or 0) - now - 0.4) < 1e-6  # attempt 2: 0.2 * 2
    assert attempts[retried] == [(2, "gone@host/7", "lost")]
    assert jobs[retried].attempts_count == 2
    assert jobs[buried].status == JobStatus.DEAD
    assert attempts[buried] == [(2, "gone@host/7", "lost")]
    assert live.unrecorded(before=now + 10) == []  # each reaped once
    ledger.engine.dispose()
