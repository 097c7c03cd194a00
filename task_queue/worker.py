"""python -m task_queue.worker [celery worker options]: a prefork pool consuming the queues.

python -m task_queue.worker -c 4 -Q default,io
"""

from __future__ import annotations

import sys

from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from task_queue.dispatch import MIGRATIONS
from task_queue.metrics import serve_worker_metrics
from task_queue.settings import TaskQueueSettings
from task_queue.tasks import create_worker_app


def main(argv: list[str] | None = None) -> None:
    settings = TaskQueueSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    upgrade_url(settings.database(), MIGRATIONS)  # workers may start before the API
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.worker_metrics_port, settings.host)
    app = create_worker_app(settings)
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-c", "--concurrency") or a.startswith("--concurrency=") for a in args):
        args += ["-c", str(settings.workers)]
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in args):
        args += ["-Q", ",".join(settings.queues)]
    if "--pool" not in args and not any(a.startswith("--pool=") for a in args):
        args += ["--pool", "prefork"]
    app.worker_main(["worker", "--loglevel", settings.log_level, *args])


if __name__ == "__main__":
    main()
