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
from typing import Any

import structlog
from redis import Redis as SyncRedis

from task_queue import events
from task_queue.dispatch import Dispatcher
from task_queue.jobtypes import PermanentError, Registry
from task_queue.ledger import Claim, Ledger
from task_queue.settings import TaskQueueSettings
from task_queue.states import JobStatus, Outcome
from task_queue.workflows import advance

log = structlog.get_logger("task_queue.runner")


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter (AWS's "Exponential Backoff and Jitter"): uniform over
    [0, min(cap, base * 2**(attempt-1))], so retries of many failed jobs spread out
    instead of stampeding together."""
    return rng.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


class _Context:
    def __init__(self, runner: Runner, claim: Claim) -> None:
        self.job_id = claim.job_id
        self.attempt = claim.attempt
        self._runner = runner
        self._claim = claim

    def progress(self, percent: float, message: str = "") -> None:
        percent = max(0.0, min(100.0, float(percent)))
        self._runner.ledger.progress(self.job_id, self._claim.dispatch, percent, message)
        events.publish_sync(
            self._runner.redis, self.job_id, "progress", percent=percent, message=message
        )


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
        timeout_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.registry = registry
        self.redis = redis
        self.dispatcher = dispatcher
        self.rate_limit = rate_limit
        self.timeout_errors = timeout_errors
        self.rng = random.Random()

    def run(self, job_id: str, dispatch: int, type_name: str, worker: str) -> None:
        wait = self.rate_limit(type_name)
        if wait > 0:
            # Over the type's shared limit: hand the job back to the scheduler for later
            # instead of holding a worker process while it waits.
            if self.ledger.defer(job_id, dispatch, time.time() + wait):
                events.publish_sync(self.redis, job_id, "status", status="scheduled")
            return
        claim = self.ledger.claim(job_id, dispatch, worker)
        if claim is None:
            log.info("stale_message_dropped", job_id=job_id, dispatch=dispatch)
            return
        events.publish_sync(
            self.redis, job_id, "status", status="running", attempt=claim.attempt, worker=worker
        )
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(claim, stop), daemon=True)
        beat.start()
        try:
            self._execute(claim)
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(*events.REDIS_DOWN):
                self.redis.hincrby(events.PROCESSED_KEY, worker.split("/")[0], 1)

    def _beat(self, claim: Claim, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_seconds):
            try:
                self.ledger.heartbeat(claim.job_id, claim.dispatch)
            except Exception as exc:  # the database blinked: the next beat tries again
                log.warning("heartbeat_failed", job_id=claim.job_id, error=str(exc))

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
            delay = backoff_delay(
                claim.attempt,
                base=self.settings.backoff_base_seconds,
                cap=self.settings.backoff_cap_seconds,
                rng=self.rng,
            )
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
        recorded = self.ledger.finish(
            claim, status=status, outcome=outcome, result=result, error=error, run_at=run_at
        )
        if not recorded:  # cancelled (or reaped) while it ran: the record already says so
            return
        log.info("job_finished", job_id=claim.job_id, status=status, attempt=claim.attempt)
        events.publish_sync(
            self.redis,
            claim.job_id,
            "status",
            status=status,
            attempt=claim.attempt,
            error=error,
            run_at=run_at,
        )
        if claim.workflow_id and status != JobStatus.RETRYING:
            advance(self.ledger, self.dispatcher, claim.workflow_id, claim.job_id, status, result)
