"""Expand: what lets a browser tie the validator keys to the chain, agency certificates, and the
ranges the indexer knows it is missing.

- ``validator_sets.bls_pop``: each member's BLS proof of possession. With it the served set is the
  exact list the ledger hashes into a header's ``validator_set_hash``, so the page recomputes that
  hash. Nullable: sets indexed before stay NULL until the indexer backfills them from a node.
- ``agency_certificates``: the X.509 certificate each agency was admitted with (genesis document or
  ``Membership.addAgency`` call), with its fingerprint, subject, issuer and validity.
- ``index_gaps``: block ranges the indexer skipped or failed (a node down or a block refused),
  until they are filled. Operational, like ``sources``.

New tables and a nullable column only, so replicas of revision 0003 keep serving.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("validator_sets") as batch_op:
        batch_op.add_column(sa.Column("bls_pop", sa.LargeBinary(96), nullable=True))
    op.create_table(
        "agency_certificates",
        sa.Column("agency", sa.String(128), primary_key=True),
        sa.Column("height", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("fingerprint_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("not_before_ms", sa.BigInteger, nullable=False),
        sa.Column("not_after_ms", sa.BigInteger, nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("agency", "height", name="pk_agency_certificates"),
    )
    op.create_table(
        "index_gaps",
        sa.Column("first_height", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_height", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(512), nullable=True),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("first_height", name="pk_index_gaps"),
    )


def downgrade() -> None:
    op.drop_table("index_gaps")
    op.drop_table("agency_certificates")
    with op.batch_alter_table("validator_sets") as batch_op:
        batch_op.drop_column("bls_pop")
