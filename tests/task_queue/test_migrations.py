"""The Alembic revisions build exactly the models' schema (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

from task_queue.store import Base
from tests.support import migrations_match_models


def test_migrations_match_the_models(database_url: str) -> None:
    assert migrations_match_models(database_url, "task_queue.migrations", Base.metadata) == []
