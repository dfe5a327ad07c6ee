"""sync change capture: state, cursor, progress, generation and poll times on syncs

Revision ID: 0005_sync_capture
Revises: 0004_journal_written
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_sync_capture"
down_revision = "0004_journal_written"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="backfilling"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("cursor", _JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("progress", _JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_poll_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("caught_up_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        for name in (
            "caught_up_at",
            "last_poll_at",
            "generation",
            "progress",
            "cursor",
            "paused",
            "last_error",
            "state",
        ):
            batch.drop_column(name)
