"""SQLAlchemy 2 async engine and session factories: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

# Plain scheme -> the async driver this suite ships.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}


def async_url(url: str) -> str:
    """Normalise a user-given URL to its async driver (`postgresql://` -> `postgresql+psycopg://`)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


SQL_TIMEOUT = 5.0


def create_engine(url: str, *, echo: bool = False, timeout: float = SQL_TIMEOUT) -> AsyncEngine:
    """An async engine whose waits are bounded by `timeout` seconds (a database that stops
    answering makes requests fail with a 503, not hang):

    - PostgreSQL: connecting (`connect_timeout`), waiting for a pooled connection
      (`pool_timeout`) and every statement (the server's `statement_timeout`). A server that
      stops answering altogether (packets dropped) is bounded by the request deadline
      (`common.middleware`), since no client-side socket timeout applies then.
    - SQLite: WAL and a busy timeout, so several processes can share a file and a writer
      waits at most `timeout` for another's lock.
    """
    url = async_url(url)
    parsed = make_url(url)
    millis = int(timeout * 1000)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": timeout})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={millis}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        # libpq counts whole seconds, and at least 2.
        connect_args["connect_timeout"] = max(2, math.ceil(timeout))
        options = str(parsed.query.get("options", ""))
        connect_args["options"] = f"{options} -c statement_timeout={millis}".strip()
    return create_async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args=connect_args,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_schema(engine: AsyncEngine, base: type[DeclarativeBase]) -> None:
    """Create missing tables (idempotent, safe when several instances start together)."""
    for attempt in range(3):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(base.metadata.create_all, checkfirst=True)
            return
        except DBAPIError:
            # Two instances creating the same table at once: the loser retries and finds it.
            if attempt == 2:
                raise


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with factory() as session, session.begin():
        yield session
