"""python -m url_shortener: serve on URL_SHORTENER_PORT (8001)."""

from __future__ import annotations

from common.redis_server import ensure_shared_redis
from common.server import serve
from url_shortener.app import create_app
from url_shortener.settings import UrlShortenerSettings


def main() -> None:
    settings = UrlShortenerSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
