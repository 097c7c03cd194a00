"""Running one delivered job inside a worker process: claim, run, record, retry or bury.

Framework-free (no Celery here): `tasks.py` calls `Runner.run` for each message and passes
in which exceptions mean "soft time limit reached".
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis

from common.redis import REDIS_DOWN
from task_queue import events
from task_queue.dispatch import Dispatcher
from task_queue.jobtypes import PermanentError, Registry
from task_queue.ledger import Claim, Ledger
from task_queue.live import Live
from task_queue.metrics import WorkerMetrics
from task_queue.recorder import Finish, Recorder
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus, Outcome
from task_queue.workflows import advance

log = structlog.get_logger("task_queue.runner")


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter (AWS's "Exponential Backoff and Jitter"): uniform over
    [0, min(cap, base * 2**(attempt-1))], so retries of many failed jobs spread out
    instead of stampeding together."""
    return rng.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


def retry_delay(
    settings: TaskQueueSettings,
    registry: Registry,
    type_name: str,
    attempt: int,
    rng: random.Random,
) -> float:
    """How long before attempt `attempt` of a `type_name` job is retried, whether it failed
    (the runner) or its worker was lost (the reaper): the type's own base and cap win over
    the service's settings."""
    base, cap = settings.backoff_base_seconds, settings.backoff_cap_seconds
    job_type = registry.get(type_name)
    if job_type is not None:
        base = _first(job_type.backoff_base_seconds, base)
        cap = _first(job_type.backoff_cap_seconds, cap)
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)


# A job still running after this long is recorded as running in SQL (if it was claimed in
# Redis) and has its `running` event published by the beat thread; one that ends sooner goes
# to the recorder, which writes its whole attempt and sends both events after the commit.
ANNOUNCE_AFTER_SECONDS = 0.1


@dataclass
class _Running:
    """The job this pool process runs now, shared with its beat thread (under the lock)."""

    claim: Claim
    worker: str
    started: float  # time.monotonic()
    next_beat: float
    recorded: bool  # SQL says it runs (else only Redis knows, until it ends or is recorded)
    claimed_at: float  # time.time() of the claim
    announced: bool = False
    handed_off: bool = False  # ended and given to the recorder: it publishes and advances
    pending: list[events.Event] = field(default_factory=list)  # sent when the job returns
    ended: tuple[JobStatus, Any] | None = None  # as recorded: status and result


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


class _Context:
    def __init__(self, runner: Runner, claim: Claim) -> None:
        self.job_id = claim.job_id
        self.attempt = claim.attempt
        self._runner = runner
        self._claim = claim

    def progress(self, percent: float, message: str = "") -> None:
        percent = max(0.0, min(100.0, float(percent)))
        self._runner.record_running()  # SQL must know it runs before its progress
        self._runner.ledger.progress(self.job_id, self._claim.dispatch, percent, message)
        self._runner.announce([("progress", {"percent": percent, "message": message})])


class Runner:
    def __init__(
        self,
        *,
        settings: TaskQueueSettings,
        ledger: Ledger,
        registry: Registry,
        redis: SyncRedis,
        dispatcher: Dispatcher,
        rate_limit: Callable[[str], float],
        live: Live | None = None,
        timeout_errors: tuple[type[BaseException], ...] = (),
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.registry = registry
        self.redis = redis
        self.dispatcher = dispatcher
        self.rate_limit = rate_limit
        self.timeout_errors = timeout_errors
        self.metrics = metrics or WorkerMetrics(CollectorRegistry())
        self.live = live
        self.recorder = Recorder(ledger.engine, redis, on_recorded=self._recorded)
        self.rng = random.Random()
        self._lock = threading.Lock()
        self._current: _Running | None = None
        self._beat_thread: threading.Thread | None = None

    def run(
        self,
        job_id: str,
        dispatch: int,
        type_name: str,
        worker: str,
        spec: dict[str, Any] | None = None,
    ) -> None:
        """Run one message's job. `spec` (the job's args and counts, sent with the message)
        lets it be claimed in Redis; without it, or with Redis down, SQL claims it."""
        wait = self.rate_limit(type_name)
        if wait > 0:
            # Over the type's shared limit: hand the job back to the scheduler for later
            # instead of holding a worker process while it waits.
            if self.live is not None:
                with contextlib.suppress(*REDIS_DOWN):
                    self.live.defer(job_id, dispatch)
            if self.ledger.defer(job_id, dispatch, time.time() + wait):
                events.publish_sync(self.redis, job_id, "status", status="scheduled")
            return
        taken = self._claim(job_id, dispatch, type_name, worker, spec)
        if taken is None:
            log.info("stale_message_dropped", job_id=job_id, dispatch=dispatch)
            return
        claim, claimed_at, recorded = taken
        self._start_beat()
        self.metrics.started.labels(type=claim.type).inc()
        if claim.queued_at is not None:
            wait_seconds = max(time.time() - claim.queued_at, 0.0)
            self.metrics.queue_wait_seconds.labels(type=claim.type).observe(wait_seconds)
        now = time.monotonic()
        running = _Running(
            claim,
            worker,
            now,
            next_beat=now + self.settings.heartbeat_seconds,
            recorded=recorded,
            claimed_at=claimed_at,
        )
        with self._lock:
            self._current = running
        try:
            self._execute(claim)
        finally:
            with self._lock:
                self._current = None
                if not running.handed_off:
                    # A job cancelled before it was announced ends without a `running` event.
                    entries = self._unannounced(running) if running.ended else []
                    events.publish_all_sync(
                        self.redis,
                        job_id,
                        entries + running.pending,
                        processed_by=worker.split("/")[0],
                    )
            if running.ended:
                ran = time.monotonic() - running.started
                self.metrics.ended(claim.type, running.ended[0], ran)
            if not running.handed_off and running.ended:
                self._advance(claim.workflow_id, claim.job_id, *running.ended)

    def _claim(
        self, job_id: str, dispatch: int, type_name: str, worker: str, spec: dict[str, Any] | None
    ) -> tuple[Claim, float, bool] | None:
        """(the claim, when, whether SQL has it) or None when the message is stale."""
        if spec is not None and self.live is not None:
            try:
                claimed_at = self.live.claim(job_id, dispatch, worker)
            except REDIS_DOWN as exc:
                log.warning("claim_in_sql", job_id=job_id, error=str(exc))
            else:
                if claimed_at is None:
                    return None
                claim = Claim(
                    job_id=job_id,
                    dispatch=dispatch,
                    type=type_name,
                    args=dict(spec["args"]),
                    attempt=int(spec["attempt"]),
                    max_retries=int(spec["max_retries"]),
                    workflow_id=spec.get("workflow_id"),
                    queued_at=spec.get("queued_at"),
                )
                return claim, claimed_at, False
        claim_in_sql = self.ledger.claim(job_id, dispatch, worker)
        return None if claim_in_sql is None else (claim_in_sql, time.time(), True)

    def _advance(self, workflow_id: str | None, job_id: str, status: str, result: Any) -> None:
        if workflow_id and status != JobStatus.RETRYING:
            advance(self.ledger, self.dispatcher, workflow_id, job_id, JobStatus(status), result)

    def _recorded(self, finishes: list[Finish]) -> None:
        """The recorder's commit is done: workflows move on (their next step reads SQL)."""
        for finish in finishes:
            try:
                self._advance(finish.workflow_id, finish.job_id, finish.status, finish.result)
            except Exception:
                log.exception("workflow_not_advanced", job_id=finish.job_id)

    def record_running(self) -> None:
        """Tell SQL the current job runs (once; it was claimed in Redis)."""
        with self._lock:
            running = self._current
            if running is not None and not running.recorded and running.ended is None:
                self._record_running(running)

    def _record_running(self, running: _Running) -> None:
        """Call under the lock. A job cancelled or reaped meanwhile stays so: its finish will
        find SQL changed and record nothing."""
        claim = running.claim
        try:
            self.ledger.claim(
                claim.job_id, claim.dispatch, running.worker, started=running.claimed_at
            )
        except Exception as exc:  # the database blinked: the next beat tries again
            log.warning("record_running_failed", job_id=claim.job_id, error=str(exc))
            return
        running.recorded = True
        if self.live is not None:
            with contextlib.suppress(*REDIS_DOWN):
                self.live.recorded((claim.job_id, claim.dispatch))

    def _running_event(self, running: _Running) -> events.Event:
        claim = running.claim
        return "status", {"status": "running", "attempt": claim.attempt, "worker": running.worker}

    def _unannounced(self, running: _Running) -> list[events.Event]:
        """The `running` event, once (call under the lock)."""
        if running.announced:
            return []
        running.announced = True
        return [self._running_event(running)]

    def announce(self, entries: list[events.Event]) -> None:
        """Publish the current job's events now (its `running` event first if not yet)."""
        with self._lock:
            running = self._current
            if running is None:
                return
            events.publish_all_sync(
                self.redis, running.claim.job_id, self._unannounced(running) + entries
            )

    def _start_beat(self) -> None:
        if self._beat_thread is None or not self._beat_thread.is_alive():
            self._beat_thread = threading.Thread(target=self._beat, daemon=True, name="tq-beat")
            self._beat_thread.start()

    def _beat(self) -> None:
        """One thread per pool process: the running job's SQL heartbeats, its record as
        running and its `running` event once it has run for ANNOUNCE_AFTER_SECONDS."""
        tick = min(self.settings.heartbeat_seconds, ANNOUNCE_AFTER_SECONDS)
        while True:
            time.sleep(tick)
            claim = self.beat_once(time.monotonic())
            if claim is None:
                continue
            try:
                self.ledger.heartbeat(claim.job_id, claim.dispatch)
            except Exception as exc:  # the database blinked: the next beat tries again
                log.warning("heartbeat_failed", job_id=claim.job_id, error=str(exc))

    def beat_once(self, now: float) -> Claim | None:
        """One beat at `now` (time.monotonic()); returns the claim whose heartbeat is due."""
        with self._lock:
            running = self._current
            if running is None or now - running.started < ANNOUNCE_AFTER_SECONDS:
                return None
            if not (running.recorded or running.ended):  # ended: the recorder has it
                self._record_running(running)
            if not running.announced:
                events.publish_all_sync(
                    self.redis, running.claim.job_id, self._unannounced(running)
                )
            if now < running.next_beat:
                return None
            running.next_beat = now + self.settings.heartbeat_seconds
            return running.claim

    def _execute(self, claim: Claim) -> None:
        job_type = self.registry.get(claim.type)
        try:
            if job_type is None:
                raise PermanentError(f"unknown job type {claim.type!r} on this worker")
            result = job_type.fn(_Context(self, claim), **claim.args)
        except PermanentError as exc:
            self._end(claim, JobStatus.FAILED, Outcome.PERMANENT, error=str(exc))
        except self.timeout_errors:
            self._failed(claim, Outcome.TIMEOUT, "soft time limit reached")
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            self._failed(claim, Outcome.ERROR, error)
        else:
            self._end(claim, JobStatus.SUCCEEDED, Outcome.SUCCEEDED, result=result)

    def _failed(self, claim: Claim, outcome: Outcome, error: str) -> None:
        if claim.attempt <= claim.max_retries:
            delay = retry_delay(self.settings, self.registry, claim.type, claim.attempt, self.rng)
            self._end(claim, JobStatus.RETRYING, outcome, error=error, run_at=time.time() + delay)
        else:
            self._end(claim, JobStatus.DEAD, outcome, error=error)

    def _end(
        self,
        claim: Claim,
        status: JobStatus,
        outcome: Outcome,
        *,
        result: Any = None,
        error: str | None = None,
        run_at: float | None = None,
    ) -> None:
        final = {"status": status, "attempt": claim.attempt, "error": error, "run_at": run_at}
        with self._lock:
            running = self._current
            quick = running is not None and not running.recorded
            if quick:  # SQL has not seen it run: the recorder writes the whole attempt
                assert running is not None
                running.ended = (status, result)
                running.handed_off = True
                announce = self._unannounced(running)
        if quick:
            assert running is not None
            self.recorder.put(
                Finish(
                    job_id=claim.job_id,
                    dispatch=claim.dispatch,
                    worker=running.worker,
                    started=running.claimed_at,
                    finished=time.time(),
                    status=status,
                    outcome=outcome,
                    result=result,
                    error=error,
                    run_at=run_at,
                    workflow_id=claim.workflow_id,
                    events=(*announce, ("status", final)),
                )
            )
            return
        recorded = self.ledger.finish(
            claim, status=status, outcome=outcome, result=result, error=error, run_at=run_at
        )
        if not recorded:  # cancelled (or reaped) while it ran: the record already says so
            return
        log.info("job_finished", job_id=claim.job_id, status=status, attempt=claim.attempt)
        with self._lock:
            if self._current is not None:  # published by run(), with the running event
                self._current.pending.append(("status", final))
                self._current.ended = (status, result)
