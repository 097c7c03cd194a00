"""python -m chat: serve on CHAT_PORT (8003).

python -m chat migrate: apply the schema's migrations and exit (the server applies pending
ones itself at start-up anyway).
"""

from __future__ import annotations

import sys

from chat.app import MIGRATIONS, create_app
from chat.settings import ChatSettings
from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from common.server import serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = ChatSettings().checked()
    if args == ["migrate"]:
        upgrade_url(settings.database_url or settings.sqlite_url("chat"), MIGRATIONS)
        print("migrated")
        return
    if args:
        sys.exit("usage: python -m chat [migrate]")
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
