"""A job's live events: one Redis stream per job (`tq:events:{job:<id>}`).

Workers and the API append `status` and `progress` entries; the SSE endpoint reads the
stream from the client's `Last-Event-ID` (a stream entry id), so a client that reconnects
misses nothing. The stream expires a day after its last entry; SQL stays the record.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from redis import Redis as SyncRedis

from common.redis import REDIS_DOWN, AnyRedis

log = structlog.get_logger("task_queue.events")
TTL_SECONDS = 86_400
MAX_EVENTS = 1_000
WORKERS_KEY = "tq:workers"
PROCESSED_KEY = "tq:processed"


def stream_key(job_id: str) -> str:
    return f"tq:events:{{job:{job_id}}}"


def encode(kind: str, data: dict[str, Any]) -> dict[str, str]:
    return {"event": kind, "data": json.dumps(data, separators=(",", ":"), default=str)}


Event = tuple[str, dict[str, Any]]  # (kind, data)


def publish_sync(redis: SyncRedis, job_id: str, kind: str, **data: Any) -> None:
    """Append an event; a Redis outage costs live updates, never the job (SQL has it)."""
    publish_all_sync(redis, job_id, [(kind, data)])


def publish_all_sync(
    redis: SyncRedis, job_id: str, entries: list[Event], *, processed_by: str | None = None
) -> None:
    """Append several events of one job in one round trip (and count a processed job for
    worker node `processed_by`)."""
    key = stream_key(job_id)
    try:
        pipe = redis.pipeline(transaction=False)
        for kind, data in entries:
            pipe.xadd(key, encode(kind, data), maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
        if entries:
            pipe.expire(key, TTL_SECONDS)
        if processed_by is not None:
            pipe.hincrby(PROCESSED_KEY, processed_by, 1)
        pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("event_not_published", job_id=job_id, error=str(exc))


async def publish(redis: AnyRedis, job_id: str, kind: str, **data: Any) -> None:
    await publish_many(redis, [(job_id, kind, data)])


async def publish_many(redis: AnyRedis, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    """One event for each of many jobs, `(job_id, kind, data)`, in one round trip; a Redis
    outage costs live updates, never the jobs (SQL has them)."""
    if not entries:
        return
    try:
        pipe = redis.pipeline(transaction=False)
        for job_id, kind, data in entries:
            key = stream_key(job_id)
            pipe.xadd(key, encode(kind, data), maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
            pipe.expire(key, TTL_SECONDS)
        await pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("event_not_published", job_id=entries[0][0], jobs=len(entries), error=str(exc))
