"""Alembic's entry point for the task queue's revisions (see common/migrations.py)."""

from common.migrations import run_env
from task_queue.store import Base

run_env(Base.metadata)
