"""python -m notifications.worker [celery worker options]: a prefork pool consuming the
channels' queues (all four by default; `-Q notifications.email` for one channel's pool).

python -m notifications.worker -c 4 -Q notifications.webhook
"""

from __future__ import annotations

import sys

from common.redis_server import ensure_shared_redis
from notifications.dispatch import queue_for
from notifications.settings import CHANNELS, NotificationsSettings
from notifications.tasks import create_worker_app


def main(argv: list[str] | None = None) -> None:
    settings = NotificationsSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    app = create_worker_app(settings)
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-c", "--concurrency") or a.startswith("--concurrency=") for a in args):
        args += ["-c", str(settings.workers)]
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in args):
        args += ["-Q", ",".join(queue_for(c) for c in CHANNELS)]
    if "--pool" not in args and not any(a.startswith("--pool=") for a in args):
        args += ["--pool", "prefork"]
    app.worker_main(["worker", "--loglevel", settings.log_level, *args])


if __name__ == "__main__":
    main()
