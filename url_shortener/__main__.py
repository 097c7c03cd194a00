"""python -m url_shortener: serve on URL_SHORTENER_PORT (8001).

python -m url_shortener migrate: apply the schema's migrations and exit (for deployments that
migrate before they start; the server applies pending ones itself at start-up anyway).
"""

from __future__ import annotations

import sys

from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from common.server import serve
from url_shortener.app import MIGRATIONS, create_app
from url_shortener.settings import UrlShortenerSettings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = UrlShortenerSettings().checked()
    if args == ["migrate"]:
        upgrade_url(settings.database_url or settings.sqlite_url("url_shortener"), MIGRATIONS)
        print("migrated")
        return
    if args:
        sys.exit("usage: python -m url_shortener [migrate]")
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
