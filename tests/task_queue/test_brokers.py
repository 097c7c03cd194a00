"""The guarantees on each broker: Redis always, RabbitMQ too when TEST_AMQP_URL is set; and
a Redis restart under the queue (workers and API recover, no acknowledged job lost)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from common.processes import wait_for
from common.redis_server import RedisProcess
from tests.task_queue.conftest import Stack, _broker_params


@pytest.fixture(scope="module", params=_broker_params())
def on_broker(request: pytest.FixtureRequest, stack_factory: Callable[..., Stack]) -> Stack:
    s = stack_factory(broker=request.param)
    s.start_worker(concurrency=2)
    s.start_scheduler()
    return s


def test_jobs_retries_and_priorities_on_each_broker(on_broker: Stack) -> None:
    ok = on_broker.submit("add", {"value": 2}, priority=9)
    flaky = on_broker.submit("flaky", {"failures": 1}, priority=0)
    assert on_broker.wait(ok["id"])["result"] == 2
    done = on_broker.wait(flaky["id"])
    assert [a["outcome"] for a in done["attempts"]] == ["error", "succeeded"]


def test_kill_9_of_a_pool_process_on_each_broker(on_broker: Stack) -> None:
    job = on_broker.submit("sleep", {"seconds": 2})
    running = on_broker.wait(job["id"], {"running"})
    pid = int(running["worker"].rsplit("/", 1)[1])
    on_broker.workers[0].kill_child(pid)
    done = on_broker.wait(job["id"], timeout=40)
    assert [a["outcome"] for a in done["attempts"]] == ["lost", "succeeded"]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(data_dir=tmp_path_factory.mktemp("own"), appendonly=True).start()
    yield server
    server.stop()


@pytest.mark.timeout(300)
def test_a_redis_restart_loses_no_acknowledged_job(
    stack_factory: Callable[..., Stack], own_redis: RedisProcess, tmp_path: Path
) -> None:
    s = stack_factory(redis_url=own_redis.url)
    s.start_worker(concurrency=2)
    s.start_scheduler()
    before = [s.submit("sleep", {"seconds": 0.3})["id"] for _ in range(5)]
    own_redis.stop()
    own_redis.start()  # same port, same append-only file
    after = [s.submit("add", {"value": i})["id"] for i in range(5)]
    for job_id in before + after:
        assert s.wait(job_id, timeout=60)["status"] == "succeeded"
    # History lives in SQL: the API and the workers restarted, Redis emptied, it is all there.
    s.api.stop()
    s.workers[0].stop()
    redis.Redis.from_url(own_redis.url).flushall()
    s.api.start(timeout=90)
    s.workers[0].start(timeout=90)
    for job_id in before + after:
        job = s.job(job_id)
        assert job["status"] == "succeeded" and len(job["attempts"]) == 1
    assert s.wait(s.submit("noop")["id"], timeout=60)["status"] == "succeeded"


@pytest.mark.timeout(300)
def test_a_worker_that_lost_its_broker_is_reported_not_consuming(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The broker (a Redis of its own) goes away while the history Redis stays: the worker
    is alive but not consuming, and /readyz says so; when the broker is back, it recovers."""
    broker = RedisProcess(data_dir=tmp_path_factory.mktemp("broker"), appendonly=True).start()
    try:
        s = stack_factory()
        s.env["TASK_QUEUE_BROKER_URL"] = broker.url
        worker = s.start_worker(concurrency=1)

        def state() -> tuple[bool, bool]:
            with s.http as c:
                rows = c.get("/api/workers").json()
            [mine] = [w for w in rows if w["hostname"] == worker.hostname]
            return mine["alive"], mine["consuming"]

        assert wait_for(lambda: state() == (True, True), 10)
        broker.stop()
        assert wait_for(lambda: state() == (True, False), 20)
        with s.http as c:
            assert c.get("/readyz").json()["dependencies"]["workers"]["status"] == "down"
        broker.start()
        assert wait_for(lambda: state() == (True, True), 60)
    finally:
        broker.stop()


@pytest.mark.timeout(300)
def test_with_its_redis_down_workers_claim_and_record_in_sql(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The Redis of claims and events goes away while the broker (a server of its own, as
    RabbitMQ would be) holds jobs: they still run once each, claimed and recorded in SQL.
    (Sending needs that Redis: Celery's result backend lives there.)"""
    own = RedisProcess(data_dir=tmp_path_factory.mktemp("own"), appendonly=True).start()
    broker = RedisProcess(data_dir=tmp_path_factory.mktemp("broker"), appendonly=True).start()
    try:
        s = stack_factory(redis_url=own.url, broker_url=broker.url)
        waiting = [s.submit("add", {"value": i})["id"] for i in range(3)]  # in the broker
        own.stop()
        worker = s.start_worker(concurrency=1)
        for i, job_id in enumerate(waiting):
            job = s.wait(job_id, timeout=60)
            assert (job["status"], job["result"], len(job["attempts"])) == ("succeeded", i, 1)
        assert worker.log_path.read_text().count('"claim_in_sql"') == len(waiting)
    finally:
        own.stop()
        broker.stop()
