"""Alembic migrations, run the same way by every SQL-backed service.

A service keeps its revisions in `<service>/migrations/versions/` beside an `env.py` of three
lines (`from common.migrations import run_env; from <service>.store import Base;
run_env(Base.metadata)`). Then:

- at start-up its lifespan calls `await upgrade(engine, "<service>.migrations")`: every
  pending revision is applied under a lock (a PostgreSQL advisory lock held by the
  migrating transaction; for SQLite an exclusive lock on a file beside the database), so
  instances that start together apply each revision once and the others wait, then find
  nothing left to do;
- `python -m <service> migrate` does the same, for deployments that migrate first
  (`upgrade_url`);
- a database made by the code before migrations (`create_all`, no `alembic_version` table,
  the service's tables present) is adopted: stamped at the first revision, which is by
  construction the schema that code created, then upgraded; no row is touched;
- `python -m common.migrations revision <service>.migrations -m "what"` writes a new
  revision from what autogenerate finds between the models and the database;
  `python -m common.migrations check <service>.migrations` lists it (exit 1 if anything).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import importlib
import re
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, TypeDecorator, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import create_engine

VERSION_TABLE = "alembic_version"


def _folder(package: str) -> Path:
    module = importlib.import_module(package)
    assert module.__file__, f"{package} is not a package on disk"
    return Path(module.__file__).parent


def _config(package: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_folder(package)))
    cfg.attributes["connection"] = connection
    return cfg


def run_env(metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py`: migrate on the connection given."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations through common.migrations (python -m <service> migrate), "
            "not the alembic command line"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _metadata(package: str) -> MetaData:
    """The models' metadata, from the env.py's module (`<service>.store.Base`)."""
    service = package.rsplit(".", 1)[0]
    store = importlib.import_module(f"{service}.store")
    return store.Base.metadata  # type: ignore[no-any-return]


def _lock_key(package: str) -> int:
    """A stable 63-bit advisory-lock key per migrations package."""
    return int.from_bytes(hashlib.sha256(package.encode()).digest()[:8], "big") >> 1


@contextlib.asynccontextmanager
async def _file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """For SQLite: an exclusive lock on `<database>.migrate.lock` (processes on one machine),
    waited for in a thread so that the event loop keeps running meanwhile."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:  # noqa: ASYNC230 - a tiny local file
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _adopt_if_unversioned(connection: Connection, package: str, cfg: Config) -> bool:
    """Stamp the first revision on a database the pre-migration code made; True if it did."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables:
        return False
    ours = set(_metadata(package).tables)
    if not tables & ours:
        return False  # empty (or someone else's tables only): upgrade from nothing
    base = ScriptDirectory.from_config(cfg).get_base()
    command.stamp(cfg, base or "head")
    return True


def _upgrade_sync(connection: Connection, package: str, revision: str) -> None:
    cfg = _config(package, connection)
    if connection.dialect.name == "postgresql":
        # Held until this transaction commits: a second instance waits here, then finds the
        # version table at head and applies nothing.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(package)})
    _adopt_if_unversioned(connection, package, cfg)
    command.upgrade(cfg, revision)
    connection.commit()


async def upgrade(engine: AsyncEngine, package: str, revision: str = "head") -> None:
    """Apply every pending revision of `package` (e.g. "url_shortener.migrations")."""
    async with _file_lock(engine), engine.connect() as conn:
        await conn.run_sync(_upgrade_sync, package, revision)


def upgrade_url(url: str, package: str, revision: str = "head") -> None:
    """`upgrade` for a database URL, from synchronous code (`python -m <service> migrate`)."""

    async def run() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine, package, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """What autogenerate finds between the models and the database (empty when they agree)."""
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "render_as_batch": connection.dialect.name == "sqlite"},
    )
    return [d for d in compare_metadata(context, metadata) if not _is_version_table(d)]


def _is_version_table(diff: Any) -> bool:
    return bool(diff and diff[0] == "remove_table" and diff[1].name == VERSION_TABLE)


_TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down}
Created: {created}
"""

import sqlalchemy as sa  # noqa: F401 - not every revision uses both
from alembic import op  # noqa: F401

revision = "{revision}"
down_revision = {down_repr}


{code}
'''


def _write_revision(connection: Connection, package: str, message: str) -> Path:
    cfg = _config(package, connection)
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    if current_revision(connection) != head:
        raise SystemExit(f"the database is not at head ({head}); migrate it first")
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    ops = produce_migrations(context, _metadata(package))
    assert ops.upgrade_ops is not None and ops.downgrade_ops is not None
    upgrade_code = render_python_code(
        ops.upgrade_ops, migration_context=context, render_item=_render_item
    )
    downgrade_code = render_python_code(
        ops.downgrade_ops, migration_context=context, render_item=_render_item
    )
    number = int(head or "0") + 1 if (head or "0").isdigit() else None
    revision = (
        f"{number:04d}" if number is not None else hashlib.sha1(message.encode()).hexdigest()[:12]
    )
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    code = (
        "def upgrade() -> None:\n"
        + _indent(upgrade_code)
        + "\n\ndef downgrade() -> None:\n"
        + _indent(downgrade_code)
    )
    path = _folder(package) / "versions" / f"{revision}_{slug}.py"
    path.write_text(
        _TEMPLATE.format(
            message=message,
            revision=revision,
            down=head,
            down_repr=repr(head),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            code=code,
        )
    )
    return path


def _render_item(kind: str, obj: Any, context: Any) -> str | Literal[False]:
    """A model's own column types (TypeDecorators) go in as the type they store, so a
    revision never imports the models it was generated from."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _indent(code: str) -> str:
    lines = [ln for ln in code.strip("\n").splitlines() if not ln.strip().startswith("# ###")]
    body = textwrap.indent(textwrap.dedent("\n".join(lines)), "    ")
    return body if body.strip() else "    pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.migrations", description=__doc__)
    parser.add_argument("action", choices=["upgrade", "check", "revision", "current"])
    parser.add_argument("package", help="e.g. url_shortener.migrations")
    parser.add_argument("--url", required=True, help="the database URL")
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args(argv)
    if args.action == "upgrade":
        upgrade_url(args.url, args.package)
        return 0
    sync_url = make_url(args.url)
    if sync_url.drivername in ("postgresql", "postgres"):
        sync_url = sync_url.set(drivername="postgresql+psycopg")
    from sqlalchemy import create_engine as create_sync_engine

    engine = create_sync_engine(sync_url)
    with engine.begin() as conn:
        if args.action == "current":
            print(current_revision(conn) or "(none)")
            return 0
        if args.action == "check":
            diffs = differences(conn, _metadata(args.package))
            for diff in diffs:
                print(diff)
            return 1 if diffs else 0
        print(_write_revision(conn, args.package, args.message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
