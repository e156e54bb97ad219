"""usage accounting of running attempts, idle-GPU mark, controller gauges (issue 13)

Revision ID: 0013
Revises: 0012

``attempts`` and ``attempts_archive`` gain ``usage`` (the sampler's running
aggregate, JSON: core/usage_accounting.py) and ``idle_gpu_warned_at`` (when
the attempt's one IdleGPU event was made).  Plain ``add_column`` on both: a
batch rewrite of ``attempts`` would lose its partial index ``ix_attempts_live``.
``gauges`` holds figures the controller publishes for ``/metrics`` (the last
scheduling pass's duration), so every API process reports the same.
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TABLES = ("attempts", "attempts_archive")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("usage", sa.JSON, nullable=True))
        op.add_column(table, sa.Column("idle_gpu_warned_at", sa.Float, nullable=True))
    op.create_table(
        "gauges",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gauges")
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("idle_gpu_warned_at")
            batch.drop_column("usage")
