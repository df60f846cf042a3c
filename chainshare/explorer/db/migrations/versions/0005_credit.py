"""Expand: credit_events (CreditRegistry logs as emitted) and credit_records (each record's latest version and
state), with the indexes the credit API reads by (record, subject, event kind, red/black list).
Self-contained: new tables only, so it re-chains after any other expand step.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("topic0", sa.LargeBinary(length=32), nullable=False),
        sa.Column("topic1", sa.LargeBinary(length=32), nullable=True),
        sa.Column("topic2", sa.LargeBinary(length=32), nullable=True),
        sa.Column("topic3", sa.LargeBinary(length=32), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_credit_events")),
    )
    op.create_index("ix_credit_events_topic0_seq", "credit_events", ["topic0", "seq"])
    op.create_index("ix_credit_events_topic1_seq", "credit_events", ["topic1", "seq"])
    op.create_index("ix_credit_events_topic2_seq", "credit_events", ["topic2", "seq"])
    op.create_table(
        "credit_records",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=128), nullable=False),
        sa.Column("polarity", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("objection", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document_number", sa.Text(), nullable=False),
        sa.Column("authority", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("published_height", sa.BigInteger(), nullable=False),
        sa.Column("updated_height", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_records")),
    )
    op.create_index("ix_credit_records_subject_id", "credit_records", ["subject", "id"])
    op.create_index("ix_credit_records_polarity_status_id", "credit_records", ["polarity", "status", "id"])


def downgrade() -> None:
    op.drop_table("credit_records")
    op.drop_table("credit_events")
