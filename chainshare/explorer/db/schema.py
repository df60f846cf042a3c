"""The explorer's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Hashes and addresses are binary columns. Every list the API serves is read by keyset over an
index: transactions, logs and history rows carry ``seq`` = height * 2**16 + position, a totally
ordered cursor. Derived tables (per-agency activity, per-dataset history, per-block tx count,
stats per minute/hour/day) are written in the same transaction as the blocks they come from, so
they are never rebuilt by scanning. The schema only ever changes by Alembic migrations in
``migrations/versions`` (expand first, contract a release later: see README).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
})

SEQ_SHIFT = 16  # seq = height << 16 | tx index (a block holds at most 2,000 transactions)
LOG_SHIFT = 12  # log seq = tx seq << 12 | log index


def compute_tx_seq(height: int, index: int) -> int:
    return height << SEQ_SHIFT | index


def compute_log_seq(tx_seq: int, log_index: int) -> int:
    return tx_seq << LOG_SHIFT | log_index


meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The checkpoint: one row, written in the same transaction as the blocks up to ``height``.
progress = Table(
    "progress", metadata,
    Column("id", Integer, primary_key=True),
    Column("height", BigInteger, nullable=False),
    Column("block_hash", LargeBinary(32), nullable=False),
)

# Operational state of each node the indexer reads (head, failures): excluded from content hashes.
sources = Table(
    "sources", metadata,
    Column("url", String(512), primary_key=True),
    Column("head", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
)

blocks = Table(
    "blocks", metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False, unique=True),
    Column("parent_hash", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False, index=True),
    Column("round", BigInteger, nullable=False),
    Column("proposer", LargeBinary(20), nullable=False),
    Column("tx_count", Integer, nullable=False),
    Column("gas_used", BigInteger, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("tx_root", LargeBinary(32), nullable=False),
    Column("receipts_root", LargeBinary(32), nullable=False),
    Column("state_root", LargeBinary(32), nullable=False),
    Column("header", LargeBinary, nullable=False),  # canonical header encoding (to check proofs offline)
    Column("qc", LargeBinary, nullable=True),  # canonical QC encoding (None only for block 0)
    Column("qc_signers", Text, nullable=True),  # JSON list of signer indices
    Column("size_bytes", BigInteger, nullable=True),  # since migration 0002 (NULL for blocks indexed before)
    # since 0003: hash_leaf of each transaction / receipt, concatenated (NULL for blocks indexed before)
    Column("tx_leaf_hashes", LargeBinary, nullable=True),
    Column("receipt_leaf_hashes", LargeBinary, nullable=True),
)

validator_sets = Table(
    "validator_sets", metadata,
    Column("epoch", Integer, primary_key=True, autoincrement=False),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("activation_height", BigInteger, nullable=False),
    Column("name", String(128), nullable=False),
    Column("agency", String(128), nullable=False),
    Column("address", LargeBinary(20), nullable=False),
    Column("bls_public_key", LargeBinary(48), nullable=False),
    Column("bls_pop", LargeBinary(96), nullable=True),  # since 0004 (NULL until backfilled for sets indexed before)
)

# since 0007: the epoch-change proof that proves set ``epoch`` from set ``epoch - 1`` (consensus/epochs.py),
# verified from the genesis set before it is stored
epoch_changes = Table(
    "epoch_changes", metadata,
    Column("epoch", Integer, primary_key=True, autoincrement=False),
    Column("proof", LargeBinary, nullable=False),
)

# since 0004: the certificate each agency was admitted with (genesis document or addAgency call)
agency_certificates = Table(
    "agency_certificates", metadata,
    Column("agency", String(128), primary_key=True),
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("fingerprint_sha256", LargeBinary(32), nullable=False),
    Column("subject", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("serial", String(64), nullable=False),
    Column("not_before_ms", BigInteger, nullable=False),
    Column("not_after_ms", BigInteger, nullable=False),
    Column("pem", Text, nullable=False),
)

# since 0004: block ranges the indexer knows it skipped or failed, deleted as they are filled (operational)
index_gaps = Table(
    "index_gaps", metadata,
    Column("first_height", BigInteger, primary_key=True, autoincrement=False),
    Column("last_height", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(512), nullable=True),
    Column("recorded_ms", BigInteger, nullable=False),
)

txs = Table(
    "txs", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False, unique=True),
    Column("height", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("sender", LargeBinary(20), nullable=False),
    Column("to", LargeBinary(20), nullable=True),
    Column("nonce", BigInteger, nullable=False),
    Column("status", Integer, nullable=False),
    Column("gas_used", BigInteger, nullable=False),
    Column("contract", String(32), nullable=True),
    Column("method", String(64), nullable=True),
    Column("args", Text, nullable=True),  # decoded call arguments (JSON), None when undecodable
    Column("error", Text, nullable=True),  # revert reason
    Column("agency", String(128), nullable=True, index=True),
    Column("raw", LargeBinary, nullable=False),
    Column("receipt", LargeBinary, nullable=False),  # canonical receipt encoding (a Merkle leaf)
)
Index("ix_txs_method_seq", txs.c.method, txs.c.seq)

address_txs = Table(
    "address_txs", metadata,
    Column("address", LargeBinary(20), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
)

logs = Table(
    "logs", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("tx_seq", BigInteger, nullable=False, index=True),
    Column("height", BigInteger, nullable=False),
    Column("address", LargeBinary(20), nullable=False),
    Column("topic0", LargeBinary(32), nullable=True),
    Column("topic1", LargeBinary(32), nullable=True),
    Column("topic2", LargeBinary(32), nullable=True),
    Column("topic3", LargeBinary(32), nullable=True),
    Column("data", LargeBinary, nullable=False),
    Column("event", String(64), nullable=True),
    Column("args", Text, nullable=True),
)
Index("ix_logs_address_seq", logs.c.address, logs.c.seq)
Index("ix_logs_topic0_seq", logs.c.topic0, logs.c.seq)
Index("ix_logs_height", logs.c.height)

agencies = Table(
    "agencies", metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("added_height", BigInteger, nullable=False),
    Column("revoked_height", BigInteger, nullable=True),
    Column("tx_count", BigInteger, nullable=False),
    Column("last_height", BigInteger, nullable=True),
)

agency_accounts = Table(
    "agency_accounts", metadata,
    Column("address", LargeBinary(20), primary_key=True),
    Column("agency", String(128), nullable=False, index=True),
)

agency_daily = Table(
    "agency_daily", metadata,
    Column("agency", String(128), primary_key=True),
    Column("day", BigInteger, primary_key=True, autoincrement=False),  # UTC day number
    Column("txs", BigInteger, nullable=False),
)

proposals = Table(
    "proposals", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("proposer", LargeBinary(20), nullable=False),
    Column("target", LargeBinary(20), nullable=False),
    Column("description", Text, nullable=False),
    Column("call", Text, nullable=True),  # the proposed call, decoded (JSON)
    Column("created_height", BigInteger, nullable=False),
    Column("tx_hash", LargeBinary(32), nullable=False),
    Column("yes", Integer, nullable=False),
    Column("no", Integer, nullable=False),
    Column("executed_height", BigInteger, nullable=True),
)

votes = Table(
    "votes", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("proposal_id", BigInteger, nullable=False),
    Column("voter", LargeBinary(20), nullable=False),
    Column("agency", String(128), nullable=False),
    Column("support", Boolean, nullable=False),
    Column("height", BigInteger, nullable=False),
)
Index("ix_votes_proposal_id_seq", votes.c.proposal_id, votes.c.seq)

anchors = Table(
    "anchors", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", LargeBinary(32), nullable=False, index=True),
    Column("by", LargeBinary(20), nullable=False),
    Column("height", BigInteger, nullable=False),
)

datasets = Table(
    "datasets", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(128), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("content_hash", LargeBinary(32), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("policy_id", String(256), nullable=True),
    Column("retired", Boolean, nullable=False),
    Column("registered_height", BigInteger, nullable=False),
    Column("last_height", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("grants", BigInteger, nullable=False),
)

dataset_history = Table(
    "dataset_history", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the event's log seq
    Column("dataset_id", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("agency", String(128), nullable=True),
    Column("ref_id", BigInteger, nullable=True),  # request or grant id
    Column("allowed", Boolean, nullable=True),
    Column("policy_ids", Text, nullable=True),  # JSON list (access decisions)
    Column("reasons", Text, nullable=True),  # JSON list (access decisions)
    Column("details", Text, nullable=False),  # the decoded event (JSON)
    Column("height", BigInteger, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("tx_hash", LargeBinary(32), nullable=False),
)
Index("ix_dataset_history_dataset_id_seq", dataset_history.c.dataset_id, dataset_history.c.seq)
Index("ix_dataset_history_agency_seq", dataset_history.c.agency, dataset_history.c.seq)

grants = Table(
    "grants", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("dataset_id", BigInteger, nullable=False, index=True),
    Column("grantee", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("issued_height", BigInteger, nullable=False),
    Column("revoked_height", BigInteger, nullable=True),
    Column("deliveries", Integer, nullable=False),
    Column("computations", Integer, nullable=False),
)

evidence = Table(
    "evidence", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    Column("view", BigInteger, nullable=False),
    Column("validator", String(128), nullable=False),
    Column("agency", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("evidence_hash", LargeBinary(32), nullable=False),
    Column("reporter", LargeBinary(20), nullable=False),
    Column("height", BigInteger, nullable=False),
    Column("tx_hash", LargeBinary(32), nullable=False),
)

# CreditRegistry logs as emitted (topics and ABI data), so the credit pages decode them with the node's own
# decoder (``chainshare.credit.events``) and fold them with its lifecycle and scoring code: equal answers.
credit_events = Table(
    "credit_events", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the log's seq
    Column("height", BigInteger, nullable=False),
    Column("log_index", Integer, nullable=False),  # in the block (the node's cursor BLOCK-LOG)
    Column("tx_index", Integer, nullable=False),
    Column("tx_hash", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("topic0", LargeBinary(32), nullable=False),
    Column("topic1", LargeBinary(32), nullable=True),  # record id (or rule version)
    Column("topic2", LargeBinary(32), nullable=True),  # keccak(subject)
    Column("topic3", LargeBinary(32), nullable=True),  # keccak(category)
    Column("data", LargeBinary, nullable=False),
)
Index("ix_credit_events_topic0_seq", credit_events.c.topic0, credit_events.c.seq)
Index("ix_credit_events_topic1_seq", credit_events.c.topic1, credit_events.c.seq)
Index("ix_credit_events_topic2_seq", credit_events.c.topic2, credit_events.c.seq)

# Each credit record's latest version and state (folded from its events): the red/black lists and search.
credit_records = Table(
    "credit_records", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("subject", String(80), nullable=False),
    Column("category", String(64), nullable=False),
    Column("issuer", String(128), nullable=False),
    Column("polarity", Integer, nullable=False),
    Column("severity", Integer, nullable=False),
    Column("status", Integer, nullable=False),  # the contract's status (display status adds block time)
    Column("objection", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("document_number", Text, nullable=False),
    Column("authority", Text, nullable=False),
    Column("summary", Text, nullable=False),  # persons: empty (only the hash is on chain)
    Column("effective_from", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # effective_from + maximum display period
    Column("published_height", BigInteger, nullable=False),
    Column("updated_height", BigInteger, nullable=False),
)
Index("ix_credit_records_subject_id", credit_records.c.subject, credit_records.c.id)
Index("ix_credit_records_polarity_status_id", credit_records.c.polarity, credit_records.c.status, credit_records.c.id)

# Transactions and blocks per UTC minute / hour / day (bucket = start, in seconds since the epoch).
stats_minute = Table(
    "stats_minute", metadata,
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("txs", BigInteger, nullable=False),
    Column("blocks", BigInteger, nullable=False),
)
stats_hour = Table(
    "stats_hour", metadata,
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("txs", BigInteger, nullable=False),
    Column("blocks", BigInteger, nullable=False),
)
stats_day = Table(
    "stats_day", metadata,
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("txs", BigInteger, nullable=False),
    Column("blocks", BigInteger, nullable=False),
)
STATS_TABLES = {"minute": (stats_minute, 60), "hour": (stats_hour, 3600), "day": (stats_day, 86400)}

# Tables whose content is the index (compared by the resume test); ``sources`` and ``index_gaps``
# are operational.
CONTENT_TABLES = [t for t in metadata.sorted_tables if t.name not in ("sources", "index_gaps")]
