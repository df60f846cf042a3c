"""Expand: joint_jobs and joint_job_events (JointCompute jobs: participants, commitments,
confirmations, result hash, abort/expiry, with each step's transaction). New tables only: an
explorer of the previous revision ignores them; a database indexed before fills them only for
blocks indexed after (re-index from genesis to list older jobs).

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "joint_jobs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("dataset_ids", sa.Text(), nullable=False),
        sa.Column("grant_ids", sa.Text(), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("query_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("epsilon_micro", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("commitments", sa.Text(), nullable=False),
        sa.Column("confirmations", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("result_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_height", sa.BigInteger(), nullable=False),
        sa.Column("created_tx", sa.LargeBinary(32), nullable=False),
        sa.Column("closed_height", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_joint_jobs"),
    )
    op.create_index("ix_joint_jobs_requester", "joint_jobs", ["requester"])
    op.create_table(
        "joint_job_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("agency", sa.String(128), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_joint_job_events"),
    )
    op.create_index("ix_joint_job_events_job_id_seq", "joint_job_events", ["job_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_joint_job_events_job_id_seq", table_name="joint_job_events")
    op.drop_table("joint_job_events")
    op.drop_index("ix_joint_jobs_requester", table_name="joint_jobs")
    op.drop_table("joint_jobs")
