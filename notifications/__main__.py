"""python -m notifications: serve the API on NOTIFICATIONS_PORT (8005).

`python -m notifications all` (what `make run-notifications` runs) starts the API, the local
SMTP/SMS sinks, one worker pool per channel and the sweeper together; Ctrl-C stops all.
`python -m notifications migrate` applies the schema's migrations and exits.
"""

from __future__ import annotations

import sys

from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from common.server import serve
from notifications.app import MIGRATIONS, create_app
from notifications.settings import NotificationsSettings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = NotificationsSettings().checked()
    command = args[0] if args else "serve"
    if command == "migrate":
        upgrade_url(settings.database(), MIGRATIONS)
        print("migrated")
        return
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    if command == "all":
        from notifications.supervisor import run_all

        sys.exit(run_all(settings))
    if command != "serve":
        sys.exit("usage: python -m notifications [serve|all|migrate]")
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
