"""fair share with memory: each submitter's decayed usage

Revision ID: 0010
Revises: 0009

``usage`` holds one row per submitter: CPU-seconds and GPU-seconds their
ended attempts held, decayed to ``at`` (core/fairshare.py).  Empty at first:
history from before this revision is not charged, so everyone starts equal.
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("cpu_seconds", sa.Float, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage")
