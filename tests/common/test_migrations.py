"""Migrations through common.migrations, on SQLite and PostgreSQL: from empty, in agreement
with the models, adopting a database the pre-migration code made, and under a race."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from common.db import create_engine
from common.migrations import current_revision, differences, upgrade
from tests.support import ROOT
from url_shortener.store import Base

PACKAGE = "url_shortener.migrations"
FIRST = "0001"  # the schema the shortener's create_all made before migrations existed


def _head() -> str:
    from alembic.script import ScriptDirectory

    from common.migrations import _config

    head = ScriptDirectory.from_config(_config(PACKAGE)).get_current_head()
    assert head
    return head


async def _state(url: str) -> tuple[str | None, list[object], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(current_revision)
            diffs = await conn.run_sync(differences, Base.metadata)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return revision, diffs, tables


async def test_upgrade_from_empty_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, PACKAGE)
        await upgrade(engine, PACKAGE)  # a second start finds nothing to do
    finally:
        await engine.dispose()
    revision, diffs, tables = await _state(database_url)
    assert revision == _head()
    assert diffs == [], diffs  # autogenerate finds nothing: models and head agree
    assert set(Base.metadata.tables) <= tables


async def test_a_database_made_by_create_all_is_adopted_with_its_rows(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        # What the shortener's create_all made before migrations: revision 0001's tables,
        # without a version table.
        await upgrade(engine, PACKAGE, FIRST)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE alembic_version"))
            await conn.execute(
                text(
                    "INSERT INTO links (code, url, created_at, updated_at, redirect_status,"
                    " visits) VALUES ('keep1', 'https://example.com', CURRENT_TIMESTAMP,"
                    " CURRENT_TIMESTAMP, 302, 7)"
                )
            )
        await upgrade(engine, PACKAGE)
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT code, visits FROM links"))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("keep1", 7)]
    revision, diffs, _ = await _state(database_url)
    assert revision == _head() and diffs == []


async def test_instances_starting_together_migrate_once(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade(e, PACKAGE) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    revision, diffs, _ = await _state(database_url)
    assert revision == _head() and diffs == []


def test_python_m_service_migrate(database_url: str, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("URL_SHORTENER_")},
        "URL_SHORTENER_DATABASE_URL": database_url,
        "URL_SHORTENER_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "url_shortener", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    revision, diffs, _ = asyncio.run(_state(database_url))
    assert revision == _head() and diffs == []


def test_check_command_reports_a_model_the_migrations_lack(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    asyncio.run(_migrate(url))
    with sqlite3.connect(tmp_path / "drift.db") as conn:
        conn.execute("DROP INDEX ix_visits_link_ts")
    proc = subprocess.run(
        [sys.executable, "-m", "common.migrations", "check", PACKAGE, "--url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "ix_visits_link_ts" in proc.stdout, proc.stdout


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine, PACKAGE)
    finally:
        await engine.dispose()


def test_the_support_helper_sees_agreement(tmp_path: Path) -> None:
    from tests.support import migrations_match_models

    assert migrations_match_models(f"sqlite:///{tmp_path / 'x.db'}", PACKAGE, Base.metadata) == []
