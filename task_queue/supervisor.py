"""`python -m task_queue all` (`make run-task_queue`): the API, a worker pool and the
scheduler as three child processes sharing one log stream (common.supervisor). When one
exits, or on Ctrl-C / SIGTERM, all are stopped (warm: running jobs finish or are handed back)."""

from __future__ import annotations

import os

from common.supervisor import supervise
from task_queue.settings import TaskQueueSettings

PARTS = {
    "api": ["-m", "task_queue", "serve"],
    "worker": ["-m", "task_queue.worker"],
    "scheduler": ["-m", "task_queue.scheduler"],
}


def run_all(settings: TaskQueueSettings) -> int:
    env = {**os.environ, "TASK_QUEUE_REDIS_URL": settings.redis_url or ""}
    env["TASK_QUEUE_WORKERS"] = str(settings.workers)
    banner = (
        f"API on http://{settings.host}:{settings.port}, "
        f"{settings.workers} worker processes, scheduler; Ctrl-C stops all"
    )
    return supervise("task queue", PARTS, env, banner=banner)
