"""Alembic's entry point for chat's revisions (see common/migrations.py)."""

from chat.store import Base
from common.migrations import run_env

run_env(Base.metadata)
