"""API token priority, weight and expiry

Revision ID: 0002_token_fields
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_token_fields"
down_revision = "0001"


def upgrade() -> None:
    # Server defaults give tokens made before this migration the documented defaults.
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False))
        batch_op.add_column(sa.Column("weight", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
