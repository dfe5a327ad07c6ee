"""mutation journal (write-ahead intent of mutations) and the claiming replica's lease on idempotency keys

Revision ID: 0003_mutation_journal
Revises: 0002_token_fields
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_mutation_journal"
down_revision = "0002_token_fields"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "mutation_journal",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sync_id", sa.String(length=128), nullable=False),
        sa.Column("collection_id", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("items", _JSON, nullable=False),
        sa.Column("seed", sa.String(length=300), nullable=False),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.Column("lease", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("applied", _JSON, nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mutation_journal", schema=None) as batch_op:
        batch_op.create_index("ix_mutation_journal_state", ["state", "lease"], unique=False)
        batch_op.create_index(batch_op.f("ix_mutation_journal_idempotency_key"), ["idempotency_key"], unique=False)
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("lease")
    op.drop_table("mutation_journal")
