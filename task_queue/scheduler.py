"""python -m task_queue.scheduler: the loop that holds time for the queue.

Every `scheduler_interval_seconds` it
1. sends delayed jobs and retries whose `run_at` has come (the broker never holds a long
   ETA, so nothing outlives Redis's visibility timeout and runs twice);
2. fires due schedules (cron or every N seconds): each firing is one job whose idempotency
   key names the slot, so two schedulers firing the same slot create one job;
3. reaps jobs whose worker stopped heartbeating: the attempt is closed as `lost` and the
   job retried (or dead when its retries are spent).
Several schedulers may run at once: each step is a conditional UPDATE that only one wins.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime

import structlog
from croniter import croniter

from common.celery import create_celery
from common.logging import configure_logging
from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from task_queue.dispatch import MIGRATIONS, Dispatcher
from task_queue.jobtypes import Registry
from task_queue.jobtypes import registry as job_registry
from task_queue.ledger import Due, Ledger, create_sync_engine
from task_queue.runner import retry_delay
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus
from task_queue.store import Schedule

log = structlog.get_logger("task_queue.scheduler")


def next_fire(schedule: Schedule, after: float) -> float:
    """The first firing strictly after `after` (missed slots are skipped, not replayed)."""
    if schedule.every_seconds:
        step = schedule.every_seconds
        slots = int((after - schedule.next_run_at) // step) + 1
        return schedule.next_run_at + max(slots, 1) * step
    assert schedule.cron
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(schedule.cron, start).get_next(float))


class Scheduler:
    def __init__(
        self,
        settings: TaskQueueSettings,
        ledger: Ledger,
        dispatcher: Dispatcher,
        registry: Registry = job_registry,
    ):
        self.settings = settings
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.registry = registry
        self.rng = random.Random()

    def tick(self, now: float | None = None) -> int:
        """One pass; returns how many jobs it sent."""
        now = time.time() if now is None else now
        sent = 0
        for due in self.ledger.due(now):
            sent += self._send(due)
        for schedule in self.ledger.due_schedules(now):
            job = self.ledger.fire(
                schedule,
                next_fire(schedule, now),
                type=schedule.type,
                args=dict(schedule.args),
                queue=schedule.queue,
                priority=schedule.priority,
                status=JobStatus.SCHEDULED,
                run_at=now,
                max_retries=self.settings.default_max_retries,
                timeout_seconds=self.settings.default_timeout_seconds,
            )
            if job is not None:
                log.info("schedule_fired", schedule_id=schedule.id, job_id=job.id)
                sent += self._send(Due(job.id, JobStatus.SCHEDULED, 0))
        for lost in self.ledger.lost(now, self.settings.heartbeat_timeout_seconds):
            self._reap(lost, now)
        return sent

    def _send(self, due: Due) -> int:
        job = self.ledger.requeue(due)
        if job is None:
            return 0  # another scheduler took it
        self.dispatcher.send_job(job)
        return 1

    def _reap(self, lost: Due, now: float) -> None:
        """A lost attempt is a failed one: retried on the type's backoff for that attempt
        (a job that kills its worker every time backs off like any other failure)."""
        retry_at = None
        type_name, attempt, may_retry = self.ledger.lost_attempt(lost.job_id)
        if may_retry:
            retry_at = now + retry_delay(self.settings, self.registry, type_name, attempt, self.rng)
        if self.ledger.reap(lost, retry_at=retry_at):
            log.warning("job_lost", job_id=lost.job_id, retried=retry_at is not None)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler_tick_failed")  # SQL or broker down: next tick retries
            stop.wait(self.settings.scheduler_interval_seconds)


def main() -> None:
    settings = TaskQueueSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    configure_logging("task_queue-scheduler", settings.log_level, settings.log_format)
    upgrade_url(settings.database(), MIGRATIONS)  # the scheduler may start before the API
    engine = create_sync_engine(settings.database())
    app = create_celery(settings, name="task_queue")
    scheduler = Scheduler(settings, Ledger(engine), Dispatcher(app, settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("scheduler_started", interval=settings.scheduler_interval_seconds)
    scheduler.run_forever(stop)
    engine.dispose()


if __name__ == "__main__":
    main()
