"""python -m url_shortener: serve on URL_SHORTENER_PORT (8001) with uvicorn."""

from __future__ import annotations

import uvicorn

from common.redis_server import ensure_shared_redis
from url_shortener.app import create_app
from url_shortener.settings import UrlShortenerSettings


def main() -> None:
    settings = UrlShortenerSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
