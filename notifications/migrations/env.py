"""Alembic's entry point for the notification service's revisions (see common/migrations.py)."""

from common.migrations import run_env
from notifications.store import Base

run_env(Base.metadata)
