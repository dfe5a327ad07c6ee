"""changes: one change counter per cached object kind (credentials, syncs)

Revision ID: 0008_change_counters
Revises: 0007_replicas
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_change_counters"
down_revision = "0007_replicas"


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )


def downgrade() -> None:
    op.drop_table("changes")
