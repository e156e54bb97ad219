"""distributed jobs: where each replica of an attempt runs

Revision ID: 0008
Revises: 0007

``attempts.replicas`` (and the same column of ``attempts_archive``) holds one
``{node, gpus, cpu_millis, memory_bytes}`` per replica of a gang, replica 0
first, so that the planner takes each replica's share off its own node.  NULL
for every attempt of one replica, which is all attempts before this revision:
nothing is rewritten.
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("attempts", "attempts_archive"):
        op.add_column(table, sa.Column("replicas", sa.JSON, nullable=True))


def downgrade() -> None:
    for table in ("attempts_archive", "attempts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("replicas")
