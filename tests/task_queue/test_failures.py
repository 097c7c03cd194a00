"""What goes wrong, on real processes: kill -9 mid-job, lost workers, cancellation,
timeouts. Each test states the guarantee it shows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from task_queue.ledger import create_sync_engine
from task_queue.store import Attempt, Job, job_row
from tests.support import wait_for
from tests.task_queue.conftest import ADMIN, Stack, assert_problem


@pytest.fixture(scope="module")
def two_workers(stack_factory: Callable[..., Stack]) -> Stack:
    s = stack_factory()
    s.start_worker(concurrency=1)
    s.start_worker(concurrency=1)
    s.start_scheduler()
    return s


def _pid_of(job: dict[str, object]) -> int:
    return int(str(job["worker"]).rsplit("/", 1)[1])


def test_kill_9_of_a_worker_mid_job_runs_it_again_elsewhere(two_workers: Stack) -> None:
    """One job, two attempts: the first `lost`, the second on another process, succeeded."""
    job = two_workers.submit("sleep", {"seconds": 2})
    running = two_workers.wait(job["id"], {"running"})
    victim = next(w for w in two_workers.workers if _pid_of(running) in w.children())
    victim.kill()  # the main process and its pool: no goodbye, no ack
    done = two_workers.wait(job["id"], timeout=40)
    assert done["status"] == "succeeded", done
    first, second = done["attempts"]
    assert first["outcome"] == "lost" and second["outcome"] == "succeeded"
    assert first["worker"] != second["worker"]
    two_workers.workers.remove(victim)
    two_workers.start_worker(concurrency=1)


def test_kill_9_of_a_pool_process_is_recorded_and_rerun(two_workers: Stack) -> None:
    job = two_workers.submit("sleep", {"seconds": 2})
    running = two_workers.wait(job["id"], {"running"})
    owner = next(w for w in two_workers.workers if _pid_of(running) in w.children())
    owner.kill_child(_pid_of(running))
    done = two_workers.wait(job["id"], timeout=40)
    assert done["status"] == "succeeded", done
    assert [a["outcome"] for a in done["attempts"]] == ["lost", "succeeded"]


def test_cancel_a_queued_job_and_it_never_runs(two_workers: Stack) -> None:
    job = two_workers.submit("sleep", {"seconds": 1}, delay_seconds=2)
    with two_workers.http as c:
        resp = c.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN)
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
        assert_problem(c.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN), 409)
    time.sleep(3)
    after = two_workers.job(job["id"])
    assert after["status"] == "cancelled" and after["attempts"] == []


def test_cancel_a_running_job_stops_it(two_workers: Stack) -> None:
    job = two_workers.submit("sleep", {"seconds": 30})
    two_workers.wait(job["id"], {"running"})
    with two_workers.http as c:
        assert c.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN).status_code == 200
    # The pool process was terminated: the job's progress stops moving.
    time.sleep(2.5)
    first = two_workers.job(job["id"])
    time.sleep(1.5)
    later = two_workers.job(job["id"])
    assert later["status"] == "cancelled"
    assert later["progress"] == first["progress"]
    assert [a["outcome"] for a in later["attempts"]] == ["cancelled"]


def test_soft_timeout_fails_the_attempt_and_retries_then_dead(two_workers: Stack) -> None:
    job = two_workers.submit("sleep", {"seconds": 10}, timeout_seconds=1, max_retries=1)
    done = two_workers.wait(job["id"], timeout=40)
    assert done["status"] == "dead"
    assert [a["outcome"] for a in done["attempts"]] == ["timeout", "timeout"]


def test_hard_timeout_kills_a_job_that_ignores_the_soft_one(two_workers: Stack) -> None:
    """`stubborn` swallows the soft limit; the hard one (timeout + grace) kills its
    process, the reaper records the attempt as a timeout (it ran past its deadline), and
    with no retries left the job is dead."""
    started = time.monotonic()
    job = two_workers.submit("stubborn", {"seconds": 60}, timeout_seconds=1, max_retries=0)
    done = two_workers.wait(job["id"], timeout=40)
    assert done["status"] == "dead", done
    assert [a["outcome"] for a in done["attempts"]] == ["timeout"]
    assert done["error"] == "hard time limit reached"
    assert time.monotonic() - started < 30


def test_a_job_never_stays_running_after_its_worker_died(two_workers: Stack) -> None:
    """The reaper: no heartbeat for TASK_QUEUE_HEARTBEAT_TIMEOUT_SECONDS -> lost."""
    job = two_workers.submit("sleep", {"seconds": 3}, max_retries=0)
    running = two_workers.wait(job["id"], {"running"})
    victim = next(w for w in two_workers.workers if _pid_of(running) in w.children())
    victim.kill()
    dead = wait_for(lambda: two_workers.job(job["id"])["status"] == "dead", timeout=20)
    assert dead
    assert two_workers.job(job["id"])["attempts"][0]["outcome"] == "lost"
    two_workers.workers.remove(victim)
    two_workers.start_worker(concurrency=1)


def _batch(stack: Stack, n: int) -> list[str]:
    ids = []
    with stack.http as c:
        for size in [500] * (n // 500) + ([n % 500] if n % 500 else []):
            body = {"jobs": [{"type": "noop"}] * size}
            resp = c.post("/api/jobs/batch", json=body, headers=ADMIN)
            assert resp.status_code == 202, resp.text
            ids += [job["id"] for job in resp.json()["jobs"]]
    return ids


def _history(stack: Stack, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each job's status and its attempts' outcomes, read from SQL (thousands of jobs)."""
    engine = create_sync_engine(stack.env["TASK_QUEUE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            statuses = dict(conn.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())
            outcomes: dict[str, list[str]] = {job_id: [] for job_id in ids}
            query = select(Attempt.job_id, Attempt.outcome).where(Attempt.job_id.in_(ids))
            for job_id, outcome in conn.execute(query.order_by(Attempt.number)):
                outcomes[job_id].append(outcome)
    finally:
        engine.dispose()
    return {job_id: (statuses[job_id], outcomes[job_id]) for job_id in ids}


def _succeeded(stack: Stack, ids: list[str]) -> int:
    return sum(status == "succeeded" for status, _ in _history(stack, ids).values())


@pytest.fixture(scope="module")
def quick_jobs(stack_factory: Callable[..., Stack]) -> Stack:
    """Two workers for thousands of no-op jobs. A message a killed worker had taken but not
    started stays with Redis until the visibility timeout (an hour by default), so it is
    5 s here: what a deployment on a Redis broker waits, at most, for such a message."""
    s = stack_factory()
    s.env["TASK_QUEUE_VISIBILITY_TIMEOUT_SECONDS"] = "5"
    s.start_worker(concurrency=1)
    s.start_worker(concurrency=1)
    s.start_scheduler()
    return s


def test_kill_9_among_quick_jobs_loses_none(quick_jobs: Stack) -> None:
    """Quick jobs reach SQL in batches after they ran: a worker killed with some claimed
    or ended but not yet recorded loses none of them. The reaper finds those claims in
    Redis, records each as a lost attempt, and the job runs again."""
    two_workers = quick_jobs
    ids = _batch(two_workers, 2000)
    wait_for(lambda: _succeeded(two_workers, ids) >= 100, timeout=30)
    victim = two_workers.workers[0]
    victim.kill()
    two_workers.workers.remove(victim)
    two_workers.start_worker(concurrency=1)
    try:
        wait_for(lambda: _succeeded(two_workers, ids) == len(ids), timeout=90, interval=0.5)
    except TimeoutError:
        left = {j: seen for j, seen in _history(two_workers, ids).items() if seen[0] != "succeeded"}
        raise AssertionError(f"{len(left)} jobs not done: {list(left.items())[:5]}") from None
    for job_id, (_, outcomes) in _history(two_workers, ids).items():
        assert outcomes in (["succeeded"], ["lost", "succeeded"]), (job_id, outcomes)


def test_a_job_whose_message_the_broker_lost_is_sent_again(quick_jobs: Stack) -> None:
    """A job `queued` in SQL with no message anywhere (as when a worker is killed between
    taking a message from Redis and noting it unacknowledged): a visibility timeout after
    its send, the scheduler sends it again, and it runs once."""
    engine = create_sync_engine(quick_jobs.env["TASK_QUEUE_DATABASE_URL"])
    job = job_row(
        type="add",
        args={"value": 5},
        queue="default",
        status="queued",
        max_retries=0,
        timeout_seconds=60,
        dispatch=1,
        queued_at=time.time() - 3,  # sent 3 s ago; the timeout is 5 s
    )
    job_id = job.id
    with Session(engine) as s, s.begin():
        s.add(job)
    engine.dispose()
    time.sleep(1)
    assert quick_jobs.job(job_id)["status"] == "queued"  # not before the timeout
    done = quick_jobs.wait(job_id, timeout=30)
    assert (done["status"], done["result"], len(done["attempts"])) == ("succeeded", 5, 1)


def test_a_warm_shutdown_records_what_its_workers_ran(quick_jobs: Stack) -> None:
    """Stopping workers (SIGTERM) mid-batch: each pool process writes its pending finishes
    as it leaves, so no job is left for the reaper to call lost."""
    two_workers = quick_jobs
    ids = _batch(two_workers, 3000)
    wait_for(lambda: _succeeded(two_workers, ids) >= 100, timeout=30)
    logs = [w.log_path for w in two_workers.workers]
    stopping = [threading.Thread(target=w.stop) for w in two_workers.workers]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
    two_workers.workers.clear()
    for path in logs:  # its one pool process wrote what it had pending as it left
        leaving = path.read_text().rsplit("Warm shutdown", 1)[1]
        assert leaving.count('"recorder_flushed"') == 1, leaving[-3000:]
    time.sleep(2 + 1.5)  # past the heartbeat timeout: the reaper would have acted by now
    history = _history(two_workers, ids)
    ran = [job_id for job_id, (_, outcomes) in history.items() if outcomes]
    assert 100 <= len(ran) < len(ids), len(ran)  # stopped mid-batch
    for job_id, seen in history.items():
        assert seen in (("succeeded", ["succeeded"]), ("queued", [])), (job_id, seen)
    two_workers.start_worker(concurrency=1)
    two_workers.start_worker(concurrency=1)
    wait_for(lambda: _succeeded(two_workers, ids) == len(ids), timeout=90, interval=0.5)
