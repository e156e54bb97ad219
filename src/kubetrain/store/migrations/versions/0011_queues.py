"""queues and quotas, preemption, teams (issue 14)

Revision ID: 0011
Revises: 0010

``queues`` holds one row per queue: its quota, cohort, preemption policy and
per-user limits as validated JSON (core/queues.py).  Attempts (hot and
archived) gain ``preempted_by`` / ``preempt_requested_at``: set when the
planner chose the attempt as a preemption victim.  Users gain ``team``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    for table in ("attempts", "attempts_archive"):  # plain ADD COLUMN: keeps the partial index ix_attempts_live
        op.add_column(table, sa.Column("preempted_by", sa.String(253), nullable=True))
        op.add_column(table, sa.Column("preempt_requested_at", sa.Float, nullable=True))
    op.add_column("users", sa.Column("team", sa.String(63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("team")
    for table in ("attempts", "attempts_archive"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("preempt_requested_at")
            batch.drop_column("preempted_by")
    op.drop_table("queues")
