"""Expand: epoch_changes, the chain's epoch-change proofs (chainshare/consensus/epochs.py) as a node
serves them, one per validator-set change, each verified by the indexer from the genesis set before it
is stored. With them a transaction page proves the validator set of any epoch from genesis (the last
block of each set with its 2-chain signed by that set, and the next member list hashing to that block's
``validator_set_hash``): the blocks table cannot, since the 2-chain of a set's last block is made of
suffix blocks no chain stores. A new table only: an explorer of revision 0006 ignores it; a database
indexed before fills it from a node on the indexer's next start.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "epoch_changes",
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("proof", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", name="pk_epoch_changes"),
    )


def downgrade() -> None:
    op.drop_table("epoch_changes")
