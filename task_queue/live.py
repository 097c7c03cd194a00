"""A job's dispatches in Redis: which one a worker claimed, which were deferred or cancelled.

Claiming in Redis is one round trip (`lua/claim.lua`); SQL learns of the claim later, when
the job ends (the recorder, in batches) or once it has run for a moment (the runner's beat
thread). Until then the claim waits in `tq:unrecorded`, where the reaper finds it if its
worker dies first. A job with no record here (Redis lost it) is claimed anew by its next
message: after a Redis wipe with RabbitMQ as the broker, a redelivered message may run its
job once more (at least once, never lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redis import Redis as SyncRedis

from common.redis import AnyRedis, load_script

LUA = Path(__file__).parent / "lua"
UNRECORDED_KEY = "tq:unrecorded"
# Well past the broker's visibility timeout (default 1 h): no redelivery outlives the record.
TTL_SECONDS = 86_400


def live_key(job_id: str) -> str:
    return f"tq:live:{{job:{job_id}}}"


def member(job_id: str, dispatch: int) -> str:
    return f"{job_id} {dispatch}"


@dataclass(frozen=True)
class Unrecorded:
    """A claim SQL never heard of, older than the reaper's patience: its worker is gone."""

    job_id: str
    dispatch: int
    worker: str
    started: float


class Live:
    """The workers' and the scheduler's side (blocking). Errors are Redis's own
    (`REDIS_DOWN`): callers fall back to claiming in SQL."""

    def __init__(self, redis: SyncRedis) -> None:
        self.redis = redis
        self._claim = redis.register_script((LUA / "claim.lua").read_text())
        self._mark = redis.register_script((LUA / "mark.lua").read_text())

    def claim(self, job_id: str, dispatch: int, worker: str) -> float | None:
        """The claim time, or None when this dispatch is stale, deferred or cancelled."""
        keys = [live_key(job_id), UNRECORDED_KEY]
        started = self._claim(keys, [dispatch, worker, job_id, TTL_SECONDS])
        return float(started) if started else None

    def defer(self, job_id: str, dispatch: int) -> None:
        """This dispatch will not run (rate limited): its message claims nothing if redelivered."""
        self._mark([live_key(job_id)], ["claimed", dispatch, TTL_SECONDS])

    def recorded(self, *claims: tuple[str, int]) -> None:
        """SQL has these claims now: the reaper need not watch them here."""
        if claims:
            self.redis.zrem(UNRECORDED_KEY, *(member(j, d) for j, d in claims))

    def unrecorded(self, before: float) -> list[Unrecorded]:
        """Claims made before `before` that SQL has not recorded."""
        found = []
        raws: list[bytes] = self.redis.zrangebyscore(UNRECORDED_KEY, 0, before)  # type: ignore[assignment]
        for raw in raws:
            job_id, dispatch = raw.decode().split(" ")
            fields: list[bytes | None] = self.redis.hmget(live_key(job_id), ["worker", "started"])  # type: ignore[assignment]
            worker, started = fields
            name = worker.decode() if worker else "unknown"
            found.append(Unrecorded(job_id, int(dispatch), name, float(started or before)))
        return found


async def mark_cancelled(redis: AnyRedis, job_id: str, dispatch: int) -> bool:
    """The API's side of a cancel, before SQL's: no worker claims this dispatch from now on.
    Returns whether one already had (the job runs or ran)."""
    script = load_script(redis, LUA / "mark.lua")
    return bool(await script([live_key(job_id)], ["cancelled", dispatch, TTL_SECONDS]))
