"""history is cheap: a partial index of live attempts, archive tables for old per-run rows

Revision ID: 0007
Revises: 0006

``ix_attempts_live`` holds only Starting and Running attempts, what the
reconcile loop reads every pass; it replaces ``ix_attempts_state``, which held
every attempt ever made.  (Queued jobs are already one range of
``ix_jobs_state_id``.)

``attempts_archive`` and ``events_archive`` receive the attempts and events of
jobs that ended longer than ``history.hotSeconds`` ago (``Store.archive_history``),
and ``jobs.archived_at`` says which jobs' rows moved; ``ix_jobs_unarchived``
finds the next ones to move.  Nothing is moved here: existing jobs start hot
and housekeeping moves them in batches, so the upgrade of a large database
only builds two indexes and two empty tables.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LIVE_ATTEMPT_WHERE = "state IN ('Starting', 'Running')"
UNARCHIVED_WHERE = "archived_at IS NULL"


def _partial(where: str) -> dict:
    return {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}


def upgrade() -> None:
    op.add_column("jobs", sa.Column("archived_at", sa.Float, nullable=True))
    op.create_index("ix_jobs_unarchived", "jobs", ["finished_at"], **_partial(UNARCHIVED_WHERE))
    op.create_index("ix_attempts_live", "attempts", ["state", "id"], **_partial(LIVE_ATTEMPT_WHERE))
    op.drop_index("ix_attempts_state", table_name="attempts")
    op.create_table(
        "attempts_archive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("message", sa.Text),
        sa.Column("node", sa.String(253)),
        sa.Column("gpus", sa.JSON, nullable=False),
        sa.Column("cpu_millis", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("signal", sa.Integer),
        sa.Column("peak_memory_bytes", sa.BigInteger),
        sa.Column("cpu_seconds", sa.Float),
        sa.Column("handle", sa.JSON, nullable=False),
        sa.UniqueConstraint("job_id", "number", name="uq_attempt_archive_job_number"),
    )
    op.create_table(
        "events_archive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_events_archive_job", "events_archive", ["job_id", "id"])


def downgrade() -> None:
    """Moves archived rows back into the hot tables first, so nothing is lost."""
    connection = op.get_bind()
    for cold, hot, columns in (
        ("attempts_archive", "attempts",
         "id, job_id, number, state, reason, message, node, gpus, cpu_millis, memory_bytes, token, created_at, "
         "started_at, finished_at, exit_code, signal, peak_memory_bytes, cpu_seconds, handle"),
        ("events_archive", "events", "id, job_id, attempt, time, type, reason, message"),
    ):
        connection.execute(sa.text(f"INSERT INTO {hot} ({columns}) SELECT {columns} FROM {cold}"))
    op.drop_index("ix_events_archive_job", table_name="events_archive")
    op.drop_table("events_archive")
    op.drop_table("attempts_archive")
    op.create_index("ix_attempts_state", "attempts", ["state"])
    op.drop_index("ix_attempts_live", table_name="attempts")
    op.drop_index("ix_jobs_unarchived", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("archived_at")
