"""`python -m task_queue all` (`make run-task_queue`): the API, a worker pool and the
scheduler as three child processes sharing one log stream. When one exits, or on Ctrl-C /
SIGTERM, all are stopped (warm: running jobs finish or are handed back)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from task_queue.settings import TaskQueueSettings

PARTS = {
    "api": ["-m", "task_queue", "serve"],
    "worker": ["-m", "task_queue.worker"],
    "scheduler": ["-m", "task_queue.scheduler"],
}


def run_all(settings: TaskQueueSettings) -> int:
    env = {**os.environ, "TASK_QUEUE_REDIS_URL": settings.redis_url or ""}
    env["TASK_QUEUE_WORKERS"] = str(settings.workers)
    procs = {
        name: subprocess.Popen([sys.executable, *argv], env=env) for name, argv in PARTS.items()
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(
        f"task queue: API on http://{settings.host}:{settings.port}, "
        f"{settings.workers} worker processes, scheduler; Ctrl-C stops all",
        file=sys.stderr,
    )
    code = 0
    while not stopping:
        exited = [(n, p.returncode) for n, p in procs.items() if p.poll() is not None]
        if exited:
            name, code = exited[0]
            print(f"task queue: {name} exited with {code}; stopping the rest", file=sys.stderr)
            break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs.values():
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code
