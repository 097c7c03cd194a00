"""jobs attempts schedules workflows

Revision ID: 0001
Revises: None
Created: 2026-12-04T19:13:50+00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "tq_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("run_at", sa.Float(), nullable=True),
        sa.Column("dispatch", sa.Integer(), nullable=False),
        sa.Column("attempts_count", sa.Integer(), nullable=False),
        sa.Column("attempt_base", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("progress_message", sa.String(length=500), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("queued_at", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("workflow_id", sa.String(length=40), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("schedule_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_tq_jobs_due", "tq_jobs", ["status", "run_at"], unique=False)
    op.create_index("ix_tq_jobs_queue_status", "tq_jobs", ["queue", "status"], unique=False)
    op.create_index(op.f("ix_tq_jobs_status"), "tq_jobs", ["status"], unique=False)
    op.create_index(op.f("ix_tq_jobs_type"), "tq_jobs", ["type"], unique=False)
    op.create_index(op.f("ix_tq_jobs_workflow_id"), "tq_jobs", ["workflow_id"], unique=False)
    op.create_table(
        "tq_schedules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("every_seconds", sa.Float(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.Float(), nullable=False),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_tq_schedules_next_run_at"), "tq_schedules", ["next_run_at"], unique=False
    )
    op.create_table(
        "tq_workflows",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("final", sa.JSON(), nullable=True),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tq_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["tq_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_tq_attempts_job_id"), "tq_attempts", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tq_attempts_job_id"), table_name="tq_attempts")
    op.drop_table("tq_attempts")
    op.drop_table("tq_workflows")
    op.drop_index(op.f("ix_tq_schedules_next_run_at"), table_name="tq_schedules")
    op.drop_table("tq_schedules")
    op.drop_index(op.f("ix_tq_jobs_workflow_id"), table_name="tq_jobs")
    op.drop_index(op.f("ix_tq_jobs_type"), table_name="tq_jobs")
    op.drop_index(op.f("ix_tq_jobs_status"), table_name="tq_jobs")
    op.drop_index("ix_tq_jobs_queue_status", table_name="tq_jobs")
    op.drop_index("ix_tq_jobs_due", table_name="tq_jobs")
    op.drop_table("tq_jobs")
