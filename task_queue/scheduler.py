"""python -m task_queue.scheduler: the loop that holds time for the queue.

Every `scheduler_interval_seconds` it
1. sends delayed jobs and retries whose `run_at` has come (the broker never holds a long
   ETA, so nothing outlives Redis's visibility timeout and runs twice);
2. fires due schedules (cron or every N seconds): each firing is one job whose idempotency
   key names the slot, so two schedulers firing the same slot create one job;
3. sends again a job still `queued` a visibility timeout after its message was sent: the
   broker lost it (kombu's Redis transport does, for a worker killed between taking a
   message and noting it unacknowledged). Same dispatch number: whichever copy a worker
   claims first runs, the other finds it claimed; a job merely far back in a long queue
   keeps its place;
4. reaps jobs whose worker stopped heartbeating: the attempt is closed as `lost` and the
   job retried (or dead when its retries are spent). A job claimed in Redis whose worker
   died before SQL heard of it (`tq:unrecorded`) is reaped the same way.
Several schedulers may run at once: each step is a conditional UPDATE that only one wins.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime

import redis as sync_redis
import structlog
from croniter import croniter

from common.logging import configure_logging
from common.migrations import upgrade_url
from common.redis import REDIS_DOWN
from common.redis_server import ensure_shared_redis
from task_queue.dispatch import MIGRATIONS, Dispatcher, celery_app
from task_queue.jobtypes import Registry
from task_queue.jobtypes import registry as job_registry
from task_queue.ledger import Due, Ledger, create_sync_engine
from task_queue.live import Live, Unrecorded
from task_queue.recorder import Finish, record
from task_queue.runner import retry_delay
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus, Outcome
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
        live: Live | None = None,
    ):
        self.settings = settings
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.registry = registry
        self.live = live
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
        for job in self.ledger.unclaimed(now - self.settings.visibility_timeout_seconds):
            if self.ledger.resent(job, now):
                log.warning("job_sent_again", job_id=job.id, dispatch=job.dispatch)
                self.dispatcher.send_job(job)
        for lost in self.ledger.lost(now, self.settings.heartbeat_timeout_seconds):
            self._reap(lost, now)
        if self.live is not None:
            try:
                unrecorded = self.live.unrecorded(now - self.settings.heartbeat_timeout_seconds)
            except REDIS_DOWN as exc:
                log.warning("unrecorded_claims_unknown", error=str(exc))
                unrecorded = []
            for claim in unrecorded:
                self._reap_unrecorded(claim, now)
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

    def _reap_unrecorded(self, lost: Unrecorded, now: float) -> None:
        """A claim SQL never recorded and whose worker is gone (it would have recorded it
        within 0.1 s of the claim, or its end within a batch): the attempt it lost is
        recorded, and the job retried like any other lost one."""
        assert self.live is not None
        job = self.ledger.job(lost.job_id)
        if job is not None and job.status == JobStatus.QUEUED and job.dispatch == lost.dispatch:
            attempt = job.attempts_count - job.attempt_base + 1
            retry_at = None
            if attempt <= job.max_retries:
                delay = retry_delay(self.settings, self.registry, job.type, attempt, self.rng)
                retry_at = now + delay
            finish = Finish(
                job_id=lost.job_id,
                dispatch=lost.dispatch,
                worker=lost.worker,
                started=lost.started,
                finished=now,
                status=JobStatus.RETRYING if retry_at is not None else JobStatus.DEAD,
                outcome=Outcome.LOST,
                error="worker lost (no heartbeat)",
                run_at=retry_at,
            )
            if record(self.ledger.engine, [finish]):
                log.warning("job_lost", job_id=lost.job_id, retried=retry_at is not None)
        self.live.recorded((lost.job_id, lost.dispatch))

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
    app = celery_app(settings)
    redis = sync_redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    live = Live(redis)
    scheduler = Scheduler(settings, Ledger(engine), Dispatcher(app, settings), live=live)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("scheduler_started", interval=settings.scheduler_interval_seconds)
    scheduler.run_forever(stop)
    engine.dispose()


if __name__ == "__main__":
    main()
