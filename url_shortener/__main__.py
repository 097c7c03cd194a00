"""python -m url_shortener: serve on URL_SHORTENER_PORT (8001).

python -m url_shortener all: the server and one visit writer beside it (what
`make run-url_shortener` runs); more writers can be started with `python -m url_shortener.writer`.

python -m url_shortener migrate: apply the schema's migrations and exit (for deployments that
migrate before they start; the server applies pending ones itself at start-up anyway).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from common.migrations import upgrade_url
from common.redis_server import ensure_shared_redis
from common.server import serve
from url_shortener.app import MIGRATIONS, create_app
from url_shortener.settings import UrlShortenerSettings
from url_shortener.writer import PARENT_ENV


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = UrlShortenerSettings().checked()
    if args == ["migrate"]:
        upgrade_url(settings.database_url or settings.sqlite_url("url_shortener"), MIGRATIONS)
        print("migrated")
        return
    if args not in ([], ["all"]):
        sys.exit("usage: python -m url_shortener [all | migrate]")
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    if args == ["all"]:
        with writer_beside(settings):
            serve(create_app(settings), settings)
        return
    serve(create_app(settings), settings)


@contextlib.contextmanager
def writer_beside(settings: UrlShortenerSettings) -> Iterator[None]:
    """A `python -m url_shortener.writer` child on the same Redis, stopped gracefully after."""
    env = {
        **os.environ,
        "URL_SHORTENER_REDIS_URL": settings.redis_url or "",
        # uvicorn ends this process by re-raising the signal, past any `finally`: the writer
        # watches for its parent going away instead.
        PARENT_ENV: str(os.getpid()),
    }
    writer = subprocess.Popen([sys.executable, "-m", "url_shortener.writer"], env=env)
    try:
        yield
    finally:
        if writer.poll() is None:
            writer.terminate()  # SIGTERM: it finishes the entries in hand
        try:
            writer.wait(15)
        except subprocess.TimeoutExpired:
            writer.kill()


if __name__ == "__main__":
    main()
