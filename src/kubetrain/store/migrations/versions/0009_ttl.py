"""ttlSecondsAfterFinished: when a finished job is deleted

Revision ID: 0009
Revises: 0008

``jobs.delete_after`` is set when a job whose spec has
``ttlSecondsAfterFinished`` finishes (its end + the TTL); the reconcile loop's
housekeeping deletes the jobs past it, found through ``ix_jobs_delete_after``
(a partial index: only jobs that will be deleted are in it).  Jobs that ended
before this revision have no TTL recorded and are kept.
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WHERE = "delete_after IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("delete_after", sa.Float, nullable=True))
    op.create_index("ix_jobs_delete_after", "jobs", ["delete_after"], sqlite_where=sa.text(WHERE),
                    postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index("ix_jobs_delete_after", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("delete_after")
