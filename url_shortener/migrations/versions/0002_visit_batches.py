"""visit batches

Revision ID: 0002
Revises: 0001
Created: 2026-12-04T19:10:43+00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "visit_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_visit_batches_written_at"), "visit_batches", ["written_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_visit_batches_written_at"), table_name="visit_batches")
    op.drop_table("visit_batches")
