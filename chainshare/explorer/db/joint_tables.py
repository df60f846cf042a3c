"""The explorer's tables of joint secure-aggregation jobs (contract ``JointCompute``), on the
shared ``schema.metadata``; created by migration ``0006_joint_jobs``.

``joint_jobs`` holds one row per job as its events left it (participants, commitments and
confirmations in participant order, status, deadline, result hash); ``joint_job_events`` every
JointCompute event of the job with its transaction, so a job's page links each step to its tx."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table, Text

from chainshare.explorer.db.schema import metadata

joint_jobs = Table(
    "joint_jobs", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("requester", String(128), nullable=False, index=True),
    Column("dataset_ids", Text, nullable=False),  # JSON list, in participant order
    Column("grant_ids", Text, nullable=False),  # JSON list
    Column("participants", Text, nullable=False),  # JSON list of agencies
    Column("query_hash", LargeBinary(32), nullable=False),
    Column("epsilon_micro", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),  # abort / expiry reason
    Column("commitments", Text, nullable=False),  # JSON list: 0x-hex or null, per participant
    Column("confirmations", Text, nullable=False),  # JSON list: {"outcome", "result_hash"} or null
    Column("outcome", String(16), nullable=True),
    Column("result_hash", LargeBinary(32), nullable=True),
    Column("expires_at", BigInteger, nullable=True),  # block time (s) of its deadline
    Column("created_height", BigInteger, nullable=False),
    Column("created_tx", LargeBinary(32), nullable=False),
    Column("closed_height", BigInteger, nullable=True),  # completed, aborted or expired
)

joint_job_events = Table(
    "joint_job_events", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the event's log seq
    Column("job_id", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("agency", String(128), nullable=True),
    Column("details", Text, nullable=False),  # the decoded event (JSON)
    Column("height", BigInteger, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("tx_hash", LargeBinary(32), nullable=False),
)
Index("ix_joint_job_events_job_id_seq", joint_job_events.c.job_id, joint_job_events.c.seq)
