"""What goes wrong, on real processes: kill -9 mid-job, lost workers, cancellation,
timeouts. Each test states the guarantee it shows."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

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
