"""Worker metrics scraped from a real worker (TASK_QUEUE_WORKER_METRICS_PORT), and a job
type's own retry policy applied by real workers whose global backoff is far longer."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.redis_server import free_port
from tests.task_queue.conftest import Stack

GLOBAL_BACKOFF = "30"  # seconds: a retry on the settings' policy would outlast these tests


@pytest.fixture(scope="module")
def measured(stack_factory: Callable[..., Stack]) -> Stack:
    s = stack_factory()
    port = free_port()
    s.start_worker(
        concurrency=2,
        TASK_QUEUE_WORKER_METRICS_PORT=str(port),
        TASK_QUEUE_BACKOFF_BASE_SECONDS=GLOBAL_BACKOFF,
        TASK_QUEUE_BACKOFF_CAP_SECONDS=GLOBAL_BACKOFF,
    )
    s.start_scheduler()
    s.env = {**s.env, "METRICS_URL": f"http://127.0.0.1:{port}/metrics"}
    return s


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(stack: Stack) -> Samples:
    text = httpx.get(stack.env["METRICS_URL"], timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_worker_serves_jobs_by_type_run_time_and_queue_wait(measured: Stack) -> None:
    before = _scrape(measured)
    jobs = [measured.submit("noop") for _ in range(3)]
    jobs.append(measured.submit("permanent_error"))
    jobs.append(measured.submit("flaky_fast", {"failures": 1}))
    done = [measured.wait(job["id"]) for job in jobs]
    assert [d["status"] for d in done] == ["succeeded"] * 3 + ["failed", "succeeded"]
    after = _scrape(measured)

    started = "task_queue_worker_jobs_started_total"
    assert _delta(before, after, started, type="noop") == 3
    assert _delta(before, after, started, type="flaky_fast") == 2  # two attempts
    assert _delta(before, after, "task_queue_worker_jobs_succeeded_total", type="noop") == 3
    assert _delta(before, after, "task_queue_worker_jobs_failed_total", type="permanent_error") == 1
    assert _delta(before, after, "task_queue_worker_jobs_retried_total", type="flaky_fast") == 1
    assert _delta(before, after, "task_queue_worker_jobs_succeeded_total", type="flaky_fast") == 1
    runs = "task_queue_worker_job_run_seconds_count"
    assert _delta(before, after, runs, type="noop", status="succeeded") == 3
    assert _delta(before, after, runs, type="flaky_fast", status="retrying") == 1
    waits = "task_queue_worker_queue_wait_seconds_count"
    assert _delta(before, after, waits, type="noop") == 3
    assert _delta(before, after, "task_queue_worker_queue_wait_seconds_sum", type="noop") > 0


def test_a_types_own_retry_policy_beats_the_settings(measured: Stack) -> None:
    """flaky_fast declares 4 retries and a 0.1 s backoff cap; the worker's settings say 30 s
    (and 3 retries, which `flaky` gets)."""
    assert measured.submit("flaky")["max_retries"] == 3
    job = measured.submit("flaky_fast", {"failures": 3})
    assert job["max_retries"] == 4
    done = measured.wait(job["id"], timeout=20)
    assert done["status"] == "succeeded", done
    attempts = done["attempts"]
    assert [a["outcome"] for a in attempts] == ["error"] * 3 + ["succeeded"]
    for failed, retry in itertools.pairwise(attempts):
        gap = datetime.fromisoformat(retry["started_at"]) - datetime.fromisoformat(
            failed["finished_at"]
        )
        # cap 0.1 s, plus the scheduler's 0.2 s tick and a busy machine's delays: far from 30 s
        assert gap.total_seconds() < 5, attempts
