"""dashboard sessions and login links, webhook notifications (issue 13)

Revision ID: 0012
Revises: 0011

``web_sessions`` holds browser sessions and one-time login links of the
dashboard: only a SHA-256 of each secret is stored (as for API tokens), with
its user, kind (``session`` or ``link``), creation and expiry.  ``users``
gain ``webhook_url`` (a user's default notification target).
``notifications`` is the webhook outbox: one row per message to deliver,
retried with backoff by the controller, never by the reconcile loop itself.
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(32), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.add_column("users", sa.Column("webhook_url", sa.String(2048), nullable=True))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(253), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_notifications_due", "notifications", ["delivered_at", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("webhook_url")
    op.drop_table("web_sessions")
