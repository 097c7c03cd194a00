"""What `GET /api/queues`, `GET /api/workers` and `/readyz` report: queue depth and the
oldest waiting job from SQL, workers from the heartbeats their main process writes to Redis."""

from __future__ import annotations

import json
import time
from typing import Any

from common.redis import AnyRedis
from task_queue import events, store
from task_queue.schemas import QueueRead, WorkerRead, iso
from task_queue.service import JobService
from task_queue.settings import TaskQueueSettings


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alive(beat: dict[str, Any], settings: TaskQueueSettings, now: float) -> bool:
    return bool(now - float(beat.get("last_heartbeat", 0)) <= 3 * settings.heartbeat_seconds)


async def heartbeats(redis: AnyRedis) -> list[dict[str, Any]]:
    raw = await redis.hgetall(events.WORKERS_KEY)
    return [json.loads(v) for v in raw.values()]


async def queues(jobs: JobService, settings: TaskQueueSettings, redis: AnyRedis) -> list[QueueRead]:
    async with jobs.sessions() as session:
        stats = await store.queue_stats(session)
    now = time.time()
    live = [b for b in await heartbeats(redis) if _alive(b, settings, now) and b.get("consuming")]
    out = []
    for name in sorted({*settings.queues, *stats}):
        depth, oldest = stats.get(name, (0, None))
        out.append(
            QueueRead(
                name=name,
                depth=depth,
                oldest_age_seconds=round(now - oldest, 3) if oldest else None,
                consumers=sum(int(b.get("concurrency", 0)) for b in live if name in b["queues"]),
            )
        )
    return out


async def workers(
    jobs: JobService, settings: TaskQueueSettings, redis: AnyRedis
) -> list[WorkerRead]:
    async with jobs.sessions() as session:
        running = await store.running_jobs(session)
    raw = await redis.hgetall(events.PROCESSED_KEY)
    processed = {_text(k): int(v) for k, v in raw.items()}
    now = time.time()
    out = []
    for beat in sorted(await heartbeats(redis), key=lambda b: b["hostname"]):
        name = beat["hostname"]
        alive = _alive(beat, settings, now)
        out.append(
            WorkerRead(
                hostname=name,
                alive=alive,
                consuming=alive and bool(beat.get("consuming")),
                queues=beat.get("queues", []),
                concurrency=int(beat.get("concurrency", 0)),
                current_jobs=running.get(name, []),
                processed=processed.get(name, 0),
                last_heartbeat=iso(beat.get("last_heartbeat")),
            )
        )
    return out


async def consuming_workers(settings: TaskQueueSettings, redis: AnyRedis) -> int:
    now = time.time()
    return sum(
        1 for b in await heartbeats(redis) if _alive(b, settings, now) and b.get("consuming")
    )
