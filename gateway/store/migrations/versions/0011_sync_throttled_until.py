"""syncs.throttled_until: until when a sync waits out a rate limit (it is not failing meanwhile)

Revision ID: 0011_sync_throttled_until
Revises: 0010_bounded_limits
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_sync_throttled_until"
down_revision = "0010_bounded_limits"


def upgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.drop_column("throttled_until")
