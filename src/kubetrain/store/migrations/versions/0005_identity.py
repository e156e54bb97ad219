"""users, tokens, secrets; volume owners

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("uid", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user", sa.String(32), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("description", sa.String(200)),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("owner", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("owner")
    op.drop_table("secrets")
    op.drop_table("tokens")
    op.drop_table("users")
