"""Alembic's entry point for the shortener's revisions (see common/migrations.py)."""

from common.migrations import run_env
from url_shortener.store import Base

run_env(Base.metadata)
