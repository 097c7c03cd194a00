"""python -m chat: serve on CHAT_PORT (8003)."""

from __future__ import annotations

from chat.app import create_app
from chat.settings import ChatSettings
from common.redis_server import ensure_shared_redis
from common.server import serve


def main() -> None:
    settings = ChatSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
