"""Expand: blocks.size_bytes (encoded block size), nullable so replicas of the previous release,
which never select it, keep serving during a rolling upgrade; rows indexed before stay NULL.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch_op:
        batch_op.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blocks") as batch_op:
        batch_op.drop_column("size_bytes")
