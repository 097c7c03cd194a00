"""The worker's Celery app: one task, `task_queue.run`, a thin wrapper over `Runner.run`.

`create_worker_app(settings)` is called by `python -m task_queue.worker`; each prefork pool
process builds its own SQL engine and Redis client on its first job (connections must not
cross a fork).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import redis as sync_redis
import structlog
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded
from prometheus_client import CollectorRegistry

from rate_limiter import Limit, SyncRateLimiter, SyncRedisBackend
from task_queue import events
from task_queue.dispatch import TASK_NAME, Dispatcher, celery_app
from task_queue.jobtypes import registry
from task_queue.ledger import Ledger, create_sync_engine
from task_queue.live import Live
from task_queue.metrics import WorkerMetrics
from task_queue.runner import Runner
from task_queue.settings import TaskQueueSettings

log = structlog.get_logger("task_queue.worker")


def _rate_limit(settings: TaskQueueSettings, redis: sync_redis.Redis) -> Any:
    """Per-type limits shared by every worker (GCRA in Redis, through rate_limiter):
    returns the seconds to wait, 0 when the job may run now."""
    backend = SyncRedisBackend(redis)
    limiters = {
        name: SyncRateLimiter(Limit(1, period=1 / rate, burst=1), backend)
        for name, rate in settings.rate_limits.items()
        if rate > 0
    }

    def check(type_name: str) -> float:
        limiter = limiters.get(type_name)
        if limiter is None:
            return 0.0
        try:
            decision = limiter.acquire(f"tq:type:{type_name}")
        except events.REDIS_DOWN as exc:
            log.warning("rate_limit_failed_open", type=type_name, error=str(exc))
            return 0.0  # fail open: a limit is a courtesy, the job is the point
        return 0.0 if decision.allowed else max(decision.retry_after, 0.01)

    return check


def create_worker_app(settings: TaskQueueSettings) -> Celery:
    app = celery_app(settings)
    state: dict[str, Any] = {}
    metrics = WorkerMetrics(CollectorRegistry())  # exported by serve_worker_metrics

    def runner() -> Runner:
        if state.get("pid") != os.getpid():
            assert settings.redis_url
            redis = sync_redis.Redis.from_url(settings.redis_url, socket_timeout=2)
            engine = create_sync_engine(settings.database())
            state.update(
                pid=os.getpid(),
                runner=Runner(
                    settings=settings,
                    ledger=Ledger(engine),
                    registry=registry,
                    redis=redis,
                    dispatcher=Dispatcher(app, settings),
                    rate_limit=_rate_limit(settings, redis),
                    live=Live(redis),
                    timeout_errors=(SoftTimeLimitExceeded,),
                    metrics=metrics,
                ),
            )
        return state["runner"]  # type: ignore[no-any-return]

    # No result backend write: the SQL history holds results (one Redis round trip saved).
    @app.task(name=TASK_NAME, bind=True, ignore_result=True)
    def run(
        self: Any, job_id: str, dispatch: int, type_name: str, spec: dict[str, Any] | None = None
    ) -> None:
        worker = f"{self.request.hostname}/{os.getpid()}"
        runner().run(job_id, dispatch, type_name, worker, spec)

    @signals.worker_process_shutdown.connect(weak=False)
    def _record_pending(**_: Any) -> None:
        """A pool process leaving (warm shutdown, max tasks) writes its last finishes first."""
        if state.get("pid") == os.getpid():
            log.info("recorder_flushed", jobs=state["runner"].recorder.flush())

    @signals.worker_ready.connect(weak=False)
    def _start_heartbeat(sender: Any = None, **_: Any) -> None:
        thread = threading.Thread(
            target=_heartbeat_loop, args=(settings, sender), daemon=True, name="tq-heartbeat"
        )
        thread.start()

    return app


def _concurrency(consumer: Any) -> int:
    try:
        return int(consumer.pool.num_processes)
    except (AttributeError, TypeError):  # the pool is gone: shutting down
        return 0


def _heartbeat_loop(settings: TaskQueueSettings, consumer: Any) -> None:
    """The worker's own heartbeat in Redis: alive, consuming (its broker connection is up),
    which queues. `GET /api/workers` and `/readyz` judge workers by it."""
    assert settings.redis_url
    redis = sync_redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    hostname = consumer.hostname
    started = time.time()
    while True:
        connection = getattr(consumer, "connection", None)
        consuming = bool(connection is not None and connection.connected)
        queues = [q.name for q in consumer.task_consumer.queues] if consumer.task_consumer else []
        beat = {
            "hostname": hostname,
            "pid": os.getpid(),
            "queues": queues,
            "concurrency": _concurrency(consumer),
            "started_at": started,
            "last_heartbeat": time.time(),
            "consuming": consuming,
        }
        with contextlib.suppress(*events.REDIS_DOWN):
            redis.hset(events.WORKERS_KEY, hostname, json.dumps(beat))
        time.sleep(settings.heartbeat_seconds)
