"""experiments, trials and metrics

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("message", sa.Text),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("provenance", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("best_trial", sa.Integer),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("experiment_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer, nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("stop_requested_at", sa.Float, nullable=True))
        batch.create_foreign_key("fk_jobs_experiment", "experiments", ["experiment_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_experiment_id", ["experiment_id"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    op.create_index("ix_metrics_job_name_step", "metrics", ["job_id", "name", "step"])


def downgrade() -> None:
    op.drop_table("metrics")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_experiment_id")
        batch.drop_constraint("fk_jobs_experiment", type_="foreignkey")
        batch.drop_column("stop_requested_at")
        batch.drop_column("stop_reason")
        batch.drop_column("trial")
        batch.drop_column("experiment_id")
    op.drop_table("experiments")
