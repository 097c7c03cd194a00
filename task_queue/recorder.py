"""Recording quick jobs in batches: one SQL transaction for every job a pool process ended
in the last few milliseconds (group commit), off the path between one job and the next.

A job claimed in Redis that ends before the runner's beat thread records it as running
(most jobs: under 0.1 s) reaches SQL only here: its row goes from `queued` to how it ended,
with its one attempt, in one UPDATE and one INSERT per batch. Its events (`running` and the
final status) are published after the commit, so a client that saw `succeeded` reads
`succeeded`. If the process dies before the commit (kill -9, up to `interval` of finished
jobs), those claims stay in `tq:unrecorded` and the reaper retries them: run again, never lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis import Redis as SyncRedis
from sqlalchemy import Engine, Float, String, Text, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError

from common.redis import REDIS_DOWN
from task_queue import events
from task_queue.ledger import QUEUED_AT_DISPATCH
from task_queue.live import UNRECORDED_KEY, member
from task_queue.states import JobStatus, Outcome
from task_queue.store import Attempt, Job

log = structlog.get_logger("task_queue.recorder")


@dataclass(frozen=True)
class Finish:
    """How one attempt of a job SQL has not seen running ended."""

    job_id: str
    dispatch: int
    worker: str
    started: float
    finished: float
    status: JobStatus
    outcome: Outcome
    result: Any = None
    error: str | None = None
    run_at: float | None = None
    workflow_id: str | None = None
    events: tuple[events.Event, ...] = ()

    def params(self) -> dict[str, Any]:
        return {
            "b_job": self.job_id,
            "b_dispatch": self.dispatch,
            "b_worker": self.worker,
            "b_started": self.started,
            "b_finished": self.finished,
            "b_ended": None if self.status == JobStatus.RETRYING else self.finished,
            "b_status": self.status,
            "b_outcome": self.outcome,
            "b_result": self.result,
            "b_error": self.error,
            "b_run_at": self.run_at,
            "b_progress": 100.0 if self.status == JobStatus.SUCCEEDED else 0.0,
        }


# Only a job still `queued` at this dispatch is recorded: one cancelled or reaped meanwhile
# keeps what the API or the reaper wrote.
_FINISH = (
    update(Job)
    .where(*QUEUED_AT_DISPATCH)
    .values(
        status=bindparam("b_status"),
        worker=bindparam("b_worker"),
        started_at=bindparam("b_started"),
        heartbeat_at=bindparam("b_finished"),
        updated_at=bindparam("b_finished"),
        finished_at=bindparam("b_ended"),
        attempts_count=Job.attempts_count + 1,
        result=bindparam("b_result", type_=Job.result.type),
        error=bindparam("b_error"),
        run_at=bindparam("b_run_at"),
        progress=bindparam("b_progress"),
    )
)
# The attempt, numbered from the row the UPDATE above just counted it in.
_ATTEMPT = insert(Attempt).from_select(
    ["job_id", "number", "worker", "started_at", "finished_at", "outcome", "error"],
    select(
        Job.id,
        Job.attempts_count,
        bindparam("b_worker", type_=String),
        bindparam("b_started", type_=Float),
        bindparam("b_finished", type_=Float),
        bindparam("b_outcome", type_=String),
        bindparam("b_error", type_=Text),
    ).where(Job.id == bindparam("b_job")),
)


def record(engine: Engine, finishes: list[Finish]) -> list[Finish]:
    """Write a batch in one transaction; returns the finishes SQL took."""
    params = [f.params() for f in finishes]
    with engine.begin() as conn:
        if conn.dialect.supports_sane_multi_rowcount:
            if conn.execute(_FINISH, params).rowcount == len(params):
                conn.execute(_ATTEMPT, params)
                return finishes
            conn.rollback()  # some were cancelled or reaped meanwhile: one at a time
    taken = []
    with engine.begin() as conn:
        for finish, one in zip(finishes, params, strict=True):
            if conn.execute(_FINISH, one).rowcount:
                conn.execute(_ATTEMPT, one)
                taken.append(finish)
    return taken


class Recorder:
    """A pool process's batch writer: `put` returns at once; a thread writes every
    `interval` seconds, and `flush` writes what is pending now (at shutdown)."""

    def __init__(
        self,
        engine: Engine,
        redis: SyncRedis,
        *,
        on_recorded: Callable[[list[Finish]], None],
        interval: float = 0.025,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.on_recorded = on_recorded
        self.interval = interval
        self._pending: list[Finish] = []
        self._ready = threading.Condition()
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, finish: Finish) -> None:
        with self._ready:
            self._pending.append(finish)
            self._ready.notify()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True, name="tq-recorder")
            self._thread.start()

    def flush(self) -> int:
        """Write what is pending now, in the caller's thread; returns how many."""
        with self._writing:
            batch = self._take()
            self._write(batch)
            return len(batch)

    def _take(self) -> list[Finish]:
        with self._ready:
            batch, self._pending = self._pending, []
            return batch

    def _loop(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._pending))
            time.sleep(self.interval)  # let the batch fill: one commit for all of them
            with self._writing:
                self._write(self._take())

    def _write(self, batch: list[Finish]) -> None:
        if not batch:
            return
        try:
            taken = record(self.engine, batch)
        except DBAPIError as exc:  # the database blinked: keep them for the next round
            log.warning("record_failed", jobs=len(batch), error=str(exc))
            with self._ready:
                self._pending[:0] = batch
            time.sleep(1)
            return
        except Exception as exc:  # one of them cannot be stored (its result, say): alone, each
            if len(batch) == 1:
                # Left in tq:unrecorded: the reaper retries it as lost, then buries it.
                log.error("finish_not_recordable", job_id=batch[0].job_id, error=str(exc))
                return
            for finish in batch:
                self._write([finish])
            return
        self._published(batch, taken)
        self.on_recorded(taken)

    def _published(self, batch: list[Finish], taken: list[Finish]) -> None:
        """The recorded jobs' events, the claims no longer to watch, the nodes' counts: one
        round trip. Redis down costs live updates (the reaper then finds SQL has them)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for finish in taken:
                key = events.stream_key(finish.job_id)
                for kind, data in finish.events:
                    fields = events.encode(kind, data)
                    pipe.xadd(key, fields, maxlen=events.MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, events.TTL_SECONDS)
            pipe.zrem(UNRECORDED_KEY, *(member(f.job_id, f.dispatch) for f in batch))
            for node, count in Counter(f.worker.split("/")[0] for f in batch).items():
                pipe.hincrby(events.PROCESSED_KEY, node, count)
            pipe.execute()
        except REDIS_DOWN as exc:
            log.warning("events_not_published", jobs=len(batch), error=str(exc))
