"""mutation journal: the ids the upstream confirmed for the chunk in flight when a run failed

Revision ID: 0004_journal_written
Revises: 0003_mutation_journal
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_journal_written"
down_revision = "0003_mutation_journal"


def upgrade() -> None:
    with op.batch_alter_table("mutation_journal", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("written", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("mutation_journal", schema=None) as batch_op:
        batch_op.drop_column("written")
