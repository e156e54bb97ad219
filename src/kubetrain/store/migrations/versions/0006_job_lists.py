"""job lists that scale: a job_labels index table, and (state, id) for filtered pages

Revision ID: 0006
Revises: 0005

Label selectors used to be evaluated in Python over every stored job; the
``job_labels`` table lets SQL do it on both dialects with an index on
(key, value).  Existing jobs' labels are copied in, a slice of ids at a time,
so a large database is never read into memory at once.  A key longer than
Kubernetes allows (317 characters), which new submits refuse, is not copied:
such a job is listed, but no selector on that key finds it.  ``ix_jobs_state`` is
replaced by ``ix_jobs_state_id``, which serves everything it served plus
"jobs in these states, newest first, after id N".
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Jobs read per slice while copying labels (a slice's labels are at most 64 per job).
BATCH = 2000


def upgrade() -> None:
    op.create_table(
        "job_labels",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(317), primary_key=True),
        sa.Column("value", sa.String(63), nullable=False),
    )
    _copy_labels()
    op.create_index("ix_job_labels_key_value", "job_labels", ["key", "value", "job_id"])
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.drop_index("ix_jobs_state", table_name="jobs")


def _copy_labels() -> None:
    connection = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("labels", sa.JSON))
    labels = sa.table("job_labels", sa.column("job_id", sa.Integer), sa.column("key", sa.String),
                      sa.column("value", sa.String))
    after = 0
    while True:
        rows = connection.execute(
            sa.select(jobs.c.id, jobs.c.labels).where(jobs.c.id > after).order_by(jobs.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        values = [{"job_id": job_id, "key": key, "value": str(value)}
                  for job_id, stored in rows for key, value in (stored or {}).items() if len(key) <= 317]
        if values:
            connection.execute(sa.insert(labels), values)
        after = rows[-1][0]


def downgrade() -> None:
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.drop_index("ix_jobs_state_id", table_name="jobs")
    op.drop_index("ix_job_labels_key_value", table_name="job_labels")
    op.drop_table("job_labels")
