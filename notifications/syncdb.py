"""The blocking SQL engine the workers and the sweeper use (they have no event loop)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def sync_url(url: str) -> str:
    """The blocking driver for a URL the API uses asynchronously."""
    parsed = make_url(url)
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_sync_engine(url: str) -> Engine:
    url = sync_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_size=2, max_overflow=4, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine
