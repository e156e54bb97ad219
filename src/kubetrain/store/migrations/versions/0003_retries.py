"""retry budgets and backoff

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("code_failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("infra_failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("not_before", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
        batch.drop_column("infra_failures")
        batch.drop_column("code_failures")
