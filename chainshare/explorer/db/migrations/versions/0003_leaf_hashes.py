"""Expand: blocks.tx_leaf_hashes / receipt_leaf_hashes (the Merkle leaf hashes of the block, 32
bytes each, concatenated), so a transaction's inclusion proofs come from one row instead of every
transaction of its block. Nullable: blocks indexed before keep NULL and are proven from their rows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch_op:
        batch_op.add_column(sa.Column("tx_leaf_hashes", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("receipt_leaf_hashes", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blocks") as batch_op:
        batch_op.drop_column("receipt_leaf_hashes")
        batch_op.drop_column("tx_leaf_hashes")
