"""The chain explorer: a separate service that reads nodes only through their public APIs.

``indexer/`` follows finalized blocks, verifies each (QC, Merkle roots, parent chain) before it
stores anything, and writes them with decoded system-contract calls and events into SQL;
``db/`` owns the schema (SQLAlchemy Core) and its Alembic migrations; ``api/`` is the stateless
JSON query API (any number of replicas over one database or its read replicas). Nothing here
imports the node, replica or p2p packages: it uses the ledger/crypto code only to verify.
"""
