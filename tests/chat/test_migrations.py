"""Chat's Alembic revisions create exactly what the models describe, on SQLite and (when
TEST_DATABASE_URL is set) PostgreSQL; `python -m chat migrate` applies them."""

from __future__ import annotations

import os
import subprocess
import sys

from chat.app import MIGRATIONS
from chat.store import Base
from tests.support import ROOT, migrations_match_models


def test_migrations_match_the_models(database_url: str) -> None:
    assert migrations_match_models(database_url, MIGRATIONS, Base.metadata) == []


def test_python_m_chat_migrate(database_url: str) -> None:
    env = {**os.environ, "CHAT_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "chat", "migrate"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "migrated" in done.stdout, done.stderr
