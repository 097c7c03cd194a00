"""python -m task_queue: serve the API on TASK_QUEUE_PORT (8002).

`python -m task_queue all` (what `make run-task_queue` runs) starts the API, a worker pool
and the scheduler together, one log stream; Ctrl-C stops all of them.
`python -m task_queue migrate` applies the schema's migrations and exits; `serve` (the
default) runs the API alone.
"""

from __future__ import annotations

import sys

from common.redis_server import ensure_shared_redis
from common.server import serve
from task_queue.app import create_app
from task_queue.settings import TaskQueueSettings


def main() -> None:
    settings = TaskQueueSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "all":
        from task_queue.supervisor import run_all

        sys.exit(run_all(settings))
    if command == "migrate":
        from common.migrations import upgrade_url
        from task_queue.app import MIGRATIONS

        upgrade_url(settings.database(), MIGRATIONS)
        print("migrated")
        return
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
