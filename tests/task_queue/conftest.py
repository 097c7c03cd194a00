"""The task queue on real processes: one API, one worker pool and one scheduler per test
module (started once, shared by its tests), on the session's Redis and a database of its own.

Tests talk HTTP to the real API; jobs run in real prefork Celery workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from common.celery_workers import CeleryWorker
from common.redis_server import RedisProcess
from tests.support import ChildProcess, Databases, ServiceProcess, wait_for

ADMIN = {"x-api-key": "test-admin-key"}
TEST_AMQP_URL = os.environ.get("TEST_AMQP_URL")
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}


@dataclass
class Stack:
    """A running task queue: API, workers, scheduler, and what they were started with."""

    env: dict[str, str]
    api: ServiceProcess
    tmp: Path
    broker_url: str
    workers: list[CeleryWorker] = field(default_factory=list)
    schedulers: list[ChildProcess] = field(default_factory=list)

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=10)

    def start_worker(
        self, *, concurrency: int = 2, queues: list[str] | None = None, **env: str
    ) -> CeleryWorker:
        worker = CeleryWorker(
            [],
            {**self.env, **env},
            # Numbered by every worker started so far: a replacement gets a file of its own.
            log_path=self.tmp / f"worker{len(list(self.tmp.glob('worker*.log')))}.log",
            broker_url={**self.env, **env}["TASK_QUEUE_BROKER_URL"],
            concurrency=concurrency,
            queues=queues or ["default", "cpu", "io"],
            module="task_queue.worker",
        )
        self.workers.append(worker)
        return worker.start(timeout=90)

    def start_scheduler(self) -> ChildProcess:
        """Returns once the scheduler has migrated and entered its loop."""
        scheduler = ChildProcess(
            ["-m", "task_queue.scheduler"],
            self.env,
            self.tmp / f"scheduler{len(self.schedulers)}.log",
        )
        self.schedulers.append(scheduler)

        def started() -> bool:
            if scheduler.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited:\n{scheduler.log_path.read_text()}")
            return "scheduler_started" in scheduler.log_path.read_text(errors="replace")

        wait_for(started, 90, interval=0.1)
        return scheduler

    def submit(
        self, type: str, args: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        with self.http as c:
            resp = c.post(
                "/api/jobs", json={"type": type, "args": args or {}, **fields}, headers=ADMIN
            )
        assert resp.status_code == 202, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        with self.http as c:
            resp = c.get(f"/api/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def wait(
        self, job_id: str, statuses: set[str] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll until the job reaches one of `statuses` (default: any terminal one)."""
        want = statuses or TERMINAL

        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in want else None

        return wait_for(reached, timeout, interval=0.1)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for scheduler in self.schedulers:
            scheduler.stop()
        for worker in self.workers:
            worker.stop()
        self.api.stop()


def _broker_params() -> list[str]:
    return ["redis", "amqp"] if TEST_AMQP_URL else ["redis"]


def stack_env(redis_url: str, database_url: str, broker_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "TASK_QUEUE_REDIS_URL": redis_url,
        "TASK_QUEUE_BROKER_URL": broker_url,
        "TASK_QUEUE_DATABASE_URL": database_url,
        "TASK_QUEUE_DATA_DIR": str(data_dir),
        "TASK_QUEUE_ADMIN_KEY": "test-admin-key",
        "TASK_QUEUE_ACCESS_LOG": "false",
        "TASK_QUEUE_LOG_FORMAT": "json",
        "TASK_QUEUE_BACKOFF_BASE_SECONDS": "0.2",
        "TASK_QUEUE_BACKOFF_CAP_SECONDS": "1",
        "TASK_QUEUE_HEARTBEAT_SECONDS": "0.3",
        "TASK_QUEUE_HEARTBEAT_TIMEOUT_SECONDS": "2",
        "TASK_QUEUE_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "TASK_QUEUE_HARD_TIMEOUT_GRACE_SECONDS": "1",
        "TASK_QUEUE_RATE_LIMITS": json.dumps({"fetch": 2}),
        "TASK_QUEUE_QUEUES": json.dumps(["default", "cpu", "io", "solo"]),
    }


@pytest.fixture(scope="module")
def stack_factory(
    request: pytest.FixtureRequest,
    redis_server: RedisProcess,
    module_databases: Databases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Stack]]:
    """Start a task queue (API only; add workers and schedulers on the stack). All stopped
    at the end of the module. Each stack gets its own Redis database number and its own SQL
    database."""
    stacks: list[Stack] = []

    def make(
        broker: str = "redis", redis_url: str | None = None, broker_url: str | None = None
    ) -> Stack:
        """`broker`: "redis" or "amqp" (`amqp_url`: TEST_AMQP_URL, on the session's own
        vhost when one can be made); `redis_url`: a Redis of the test's own (failure tests
        stop it), else a fresh database of the session's server; `broker_url`: a broker of
        the test's own (else the Redis, or RabbitMQ)."""
        tmp = tmp_path_factory.mktemp("tq")
        if redis_url is None:
            redis_url = f"redis://127.0.0.1:{redis_server.port}/{1 + len(stacks)}"
            with sync_redis.Redis.from_url(redis_url) as r:
                r.flushdb()  # what an earlier module left behind
        if broker_url is None:
            broker_url = (
                str(request.getfixturevalue("amqp_url"))
                if broker == "amqp" and TEST_AMQP_URL
                else redis_url
            )
        env = stack_env(redis_url, module_databases.new("tq"), broker_url, tmp)
        # Generous start-up: the machine running the suite may be busy.
        api = ServiceProcess("task_queue", env, log_path=tmp / "api.log").start(timeout=90)
        stack = Stack(env=env, api=api, tmp=tmp, broker_url=broker_url)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """The module's task queue: API, a pool of 2 worker processes and one scheduler."""
    s = stack_factory()
    s.start_worker(concurrency=2)
    s.start_scheduler()
    return s


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body  # type: ignore[no-any-return]
