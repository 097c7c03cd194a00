"""Quick jobs recorded in batches, on a real database and a real Redis: one transaction for
many, nothing written over a cancel, events only after the commit."""

from __future__ import annotations

import json
import threading
import time

import redis as sync_redis
from sqlalchemy import update

from common.migrations import upgrade_url
from common.processes import wait_for
from task_queue import events
from task_queue.dispatch import MIGRATIONS
from task_queue.ledger import Ledger, create_sync_engine
from task_queue.live import Live
from task_queue.recorder import Finish, Recorder, record
from task_queue.states import JobStatus, Outcome
from task_queue.store import Job
from tests.task_queue.factories import queued_job


def _ledger(database_url: str) -> Ledger:
    upgrade_url(database_url, MIGRATIONS)
    return Ledger(create_sync_engine(database_url))


def _queued(ledger: Ledger, *, earlier_attempts: int = 0) -> str:
    return queued_job(ledger, earlier_attempts=earlier_attempts).id


def _finish(job_id: str, status: JobStatus = JobStatus.SUCCEEDED, **fields: object) -> Finish:
    now = time.time()
    values: dict[str, object] = {
        "job_id": job_id,
        "dispatch": 1,
        "worker": "node-a/11",
        "started": now - 0.01,
        "finished": now,
        "status": status,
        "outcome": Outcome.SUCCEEDED if status == JobStatus.SUCCEEDED else Outcome.ERROR,
        **fields,
    }
    return Finish(**values)  # type: ignore[arg-type]


def test_a_batch_records_each_job_and_its_one_attempt(database_url: str) -> None:
    ledger = _ledger(database_url)
    first, again, failed = _queued(ledger), _queued(ledger, earlier_attempts=2), _queued(ledger)
    retry_at = time.time() + 30
    batch = [
        _finish(first, result={"n": 1}),
        _finish(again, result=[1, 2]),
        _finish(failed, JobStatus.RETRYING, error="boom", run_at=retry_at),
    ]
    assert record(ledger.engine, batch) == batch
    with ledger.sessions() as s:
        jobs = {job_id: s.get_one(Job, job_id) for job_id in (first, again, failed)}
        attempts = {
            j: [(a.number, a.worker, a.outcome) for a in job.attempts] for j, job in jobs.items()
        }
    assert (jobs[first].status, jobs[first].result, jobs[first].progress) == (
        "succeeded",
        {"n": 1},
        100,
    )
    assert jobs[first].worker == "node-a/11" and jobs[first].finished_at is not None
    assert attempts[first] == [(1, "node-a/11", "succeeded")]
    assert attempts[again] == [(3, "node-a/11", "succeeded")]  # numbered after the earlier two
    assert jobs[again].attempts_count == 3
    assert jobs[failed].status == "retrying" and jobs[failed].run_at == retry_at
    assert jobs[failed].finished_at is None and jobs[failed].error == "boom"
    assert attempts[failed] == [(1, "node-a/11", "error")]
    ledger.engine.dispose()


def test_a_job_cancelled_meanwhile_keeps_its_cancel(database_url: str) -> None:
    ledger = _ledger(database_url)
    kept, cancelled, stale = _queued(ledger), _queued(ledger), _queued(ledger)
    with ledger.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == cancelled).values(status=JobStatus.CANCELLED))
    batch = [_finish(kept), _finish(cancelled), _finish(stale, dispatch=0)]
    assert record(ledger.engine, batch) == [batch[0]]
    with ledger.sessions() as s:
        assert s.get_one(Job, kept).status == "succeeded"
        assert (s.get_one(Job, cancelled).status, s.get_one(Job, cancelled).attempts) == (
            "cancelled",
            [],
        )
        assert (s.get_one(Job, stale).status, s.get_one(Job, stale).attempts) == ("queued", [])
    ledger.engine.dispose()


def test_the_recorder_publishes_events_after_its_commit(database_url: str, redis_url: str) -> None:
    """One batch for jobs ended together; each job's events are sent once SQL has it, and
    its claim no longer waits for the reaper."""
    ledger = _ledger(database_url)
    redis = sync_redis.Redis.from_url(redis_url)
    live = Live(redis)
    jobs = [_queued(ledger) for _ in range(20)]
    for job_id in jobs:
        assert live.claim(job_id, 1, "node-a/11") is not None
    seen: list[str] = []
    in_sql_when_published: list[bool] = []
    done = threading.Event()

    def on_recorded(finishes: list[Finish]) -> None:
        for finish in finishes:
            seen.append(finish.job_id)
            with ledger.sessions() as s:  # SQL says so before anyone is told
                in_sql_when_published.append(s.get_one(Job, finish.job_id).status == "succeeded")
        if len(seen) == len(jobs):
            done.set()

    recorder = Recorder(ledger.engine, redis, on_recorded=on_recorded, interval=0.2)
    final = {"status": "succeeded", "attempt": 1}
    for job_id in jobs:
        recorder.put(_finish(job_id, events=(("status", final),)))
    assert redis.xlen(events.stream_key(jobs[0])) == 0  # nothing said before the commit
    assert done.wait(10)
    assert seen == jobs and all(in_sql_when_published)
    wait_for(lambda: redis.xlen(events.stream_key(jobs[-1])) == 1, 5)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = redis.xrange(events.stream_key(jobs[0]))  # type: ignore[assignment]
    assert json.loads(entries[0][1][b"data"]) == final
    assert live.unrecorded(before=time.time() + 10) == []
    assert int(redis.hget(events.PROCESSED_KEY, "node-a") or 0) == len(jobs)
    ledger.engine.dispose()


def test_flush_writes_what_is_pending_at_once(database_url: str, redis_url: str) -> None:
    """What a pool process does as it leaves: no waiting for the next round."""
    ledger = _ledger(database_url)
    recorder = Recorder(
        ledger.engine, sync_redis.Redis.from_url(redis_url), on_recorded=lambda _: None, interval=60
    )
    jobs = [_queued(ledger) for _ in range(3)]
    for job_id in jobs:
        recorder.put(_finish(job_id))
    assert recorder.flush() == 3
    with ledger.sessions() as s:
        assert [s.get_one(Job, job_id).status for job_id in jobs] == ["succeeded"] * 3
    assert recorder.flush() == 0
    ledger.engine.dispose()


def test_a_finish_that_cannot_be_stored_does_not_hold_up_the_others(
    database_url: str, redis_url: str
) -> None:
    """A result SQL cannot hold (not JSON) fails its own record, not its batch's: the others
    are written; it stays unrecorded, for the reaper to retry as lost."""
    ledger = _ledger(database_url)
    redis = sync_redis.Redis.from_url(redis_url)
    recorder = Recorder(ledger.engine, redis, on_recorded=lambda _: None, interval=60)
    good, bad, also_good = _queued(ledger), _queued(ledger), _queued(ledger)
    recorder.put(_finish(good))
    recorder.put(_finish(bad, result={"a set": {1, 2}}))
    recorder.put(_finish(also_good))
    recorder.flush()
    with ledger.sessions() as s:
        statuses = [s.get_one(Job, job_id).status for job_id in (good, bad, also_good)]
    assert statuses == ["succeeded", "queued", "succeeded"]
    assert recorder.flush() == 0  # nothing kept to block the next batches
    ledger.engine.dispose()
