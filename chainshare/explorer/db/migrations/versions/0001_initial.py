"""Initial schema: blocks, transactions, logs, validator sets, agencies, governance, notary anchors,
datasets and their access history, grants, evidence, stats (the tables of ``schema.py`` at version 1).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('address_txs',
    sa.Column('address', sa.LargeBinary(length=20), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('address', 'seq', name=op.f('pk_address_txs'))
    )
    op.create_table('agencies',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('added_height', sa.BigInteger(), nullable=False),
    sa.Column('revoked_height', sa.BigInteger(), nullable=True),
    sa.Column('tx_count', sa.BigInteger(), nullable=False),
    sa.Column('last_height', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_agencies'))
    )
    op.create_table('agency_accounts',
    sa.Column('address', sa.LargeBinary(length=20), nullable=False),
    sa.Column('agency', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_agency_accounts'))
    )
    with op.batch_alter_table('agency_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agency_accounts_agency'), ['agency'], unique=False)

    op.create_table('agency_daily',
    sa.Column('agency', sa.String(length=128), nullable=False),
    sa.Column('day', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('txs', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('agency', 'day', name=op.f('pk_agency_daily'))
    )
    op.create_table('anchors',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('by', sa.LargeBinary(length=20), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_anchors'))
    )
    with op.batch_alter_table('anchors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anchors_digest'), ['digest'], unique=False)

    op.create_table('blocks',
    sa.Column('height', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('parent_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=False),
    sa.Column('proposer', sa.LargeBinary(length=20), nullable=False),
    sa.Column('tx_count', sa.Integer(), nullable=False),
    sa.Column('gas_used', sa.BigInteger(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('tx_root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('receipts_root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('state_root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('header', sa.LargeBinary(), nullable=False),
    sa.Column('qc', sa.LargeBinary(), nullable=True),
    sa.Column('qc_signers', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('height', name=op.f('pk_blocks')),
    sa.UniqueConstraint('hash', name=op.f('uq_blocks_hash'))
    )
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blocks_timestamp_ms'), ['timestamp_ms'], unique=False)

    op.create_table('dataset_history',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('dataset_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('agency', sa.String(length=128), nullable=True),
    sa.Column('ref_id', sa.BigInteger(), nullable=True),
    sa.Column('allowed', sa.Boolean(), nullable=True),
    sa.Column('policy_ids', sa.Text(), nullable=True),
    sa.Column('reasons', sa.Text(), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_dataset_history'))
    )
    with op.batch_alter_table('dataset_history', schema=None) as batch_op:
        batch_op.create_index('ix_dataset_history_agency_seq', ['agency', 'seq'], unique=False)
        batch_op.create_index('ix_dataset_history_dataset_id_seq', ['dataset_id', 'seq'], unique=False)

    op.create_table('datasets',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.String(length=256), nullable=True),
    sa.Column('retired', sa.Boolean(), nullable=False),
    sa.Column('registered_height', sa.BigInteger(), nullable=False),
    sa.Column('last_height', sa.BigInteger(), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.Column('grants', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets'))
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datasets_owner'), ['owner'], unique=False)

    op.create_table('evidence',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.Column('view', sa.BigInteger(), nullable=False),
    sa.Column('validator', sa.String(length=128), nullable=False),
    sa.Column('agency', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('evidence_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('reporter', sa.LargeBinary(length=20), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_evidence'))
    )
    op.create_table('grants',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('dataset_id', sa.BigInteger(), nullable=False),
    sa.Column('grantee', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('issued_height', sa.BigInteger(), nullable=False),
    sa.Column('revoked_height', sa.BigInteger(), nullable=True),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('computations', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grants'))
    )
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grants_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('logs',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('tx_seq', sa.BigInteger(), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.Column('address', sa.LargeBinary(length=20), nullable=False),
    sa.Column('topic0', sa.LargeBinary(length=32), nullable=True),
    sa.Column('topic1', sa.LargeBinary(length=32), nullable=True),
    sa.Column('topic2', sa.LargeBinary(length=32), nullable=True),
    sa.Column('topic3', sa.LargeBinary(length=32), nullable=True),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=True),
    sa.Column('args', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_logs'))
    )
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.create_index('ix_logs_address_seq', ['address', 'seq'], unique=False)
        batch_op.create_index('ix_logs_height', ['height'], unique=False)
        batch_op.create_index('ix_logs_topic0_seq', ['topic0', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_logs_tx_seq'), ['tx_seq'], unique=False)

    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_meta'))
    )
    op.create_table('progress',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_progress'))
    )
    op.create_table('proposals',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('proposer', sa.LargeBinary(length=20), nullable=False),
    sa.Column('target', sa.LargeBinary(length=20), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('call', sa.Text(), nullable=True),
    sa.Column('created_height', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('yes', sa.Integer(), nullable=False),
    sa.Column('no', sa.Integer(), nullable=False),
    sa.Column('executed_height', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proposals'))
    )
    op.create_table('sources',
    sa.Column('url', sa.String(length=512), nullable=False),
    sa.Column('head', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('url', name=op.f('pk_sources'))
    )
    op.create_table('stats_day',
    sa.Column('bucket', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('txs', sa.BigInteger(), nullable=False),
    sa.Column('blocks', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', name=op.f('pk_stats_day'))
    )
    op.create_table('stats_hour',
    sa.Column('bucket', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('txs', sa.BigInteger(), nullable=False),
    sa.Column('blocks', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', name=op.f('pk_stats_hour'))
    )
    op.create_table('stats_minute',
    sa.Column('bucket', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('txs', sa.BigInteger(), nullable=False),
    sa.Column('blocks', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', name=op.f('pk_stats_minute'))
    )
    op.create_table('txs',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('sender', sa.LargeBinary(length=20), nullable=False),
    sa.Column('to', sa.LargeBinary(length=20), nullable=True),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('gas_used', sa.BigInteger(), nullable=False),
    sa.Column('contract', sa.String(length=32), nullable=True),
    sa.Column('method', sa.String(length=64), nullable=True),
    sa.Column('args', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('agency', sa.String(length=128), nullable=True),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('receipt', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_txs')),
    sa.UniqueConstraint('hash', name=op.f('uq_txs_hash'))
    )
    with op.batch_alter_table('txs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_txs_agency'), ['agency'], unique=False)
        batch_op.create_index('ix_txs_method_seq', ['method', 'seq'], unique=False)

    op.create_table('validator_sets',
    sa.Column('epoch', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('activation_height', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('agency', sa.String(length=128), nullable=False),
    sa.Column('address', sa.LargeBinary(length=20), nullable=False),
    sa.Column('bls_public_key', sa.LargeBinary(length=48), nullable=False),
    sa.PrimaryKeyConstraint('epoch', 'position', name=op.f('pk_validator_sets'))
    )
    op.create_table('votes',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('proposal_id', sa.BigInteger(), nullable=False),
    sa.Column('voter', sa.LargeBinary(length=20), nullable=False),
    sa.Column('agency', sa.String(length=128), nullable=False),
    sa.Column('support', sa.Boolean(), nullable=False),
    sa.Column('height', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_votes'))
    )
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.create_index('ix_votes_proposal_id_seq', ['proposal_id', 'seq'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.drop_index('ix_votes_proposal_id_seq')

    op.drop_table('votes')
    op.drop_table('validator_sets')
    with op.batch_alter_table('txs', schema=None) as batch_op:
        batch_op.drop_index('ix_txs_method_seq')
        batch_op.drop_index(batch_op.f('ix_txs_agency'))

    op.drop_table('txs')
    op.drop_table('stats_minute')
    op.drop_table('stats_hour')
    op.drop_table('stats_day')
    op.drop_table('sources')
    op.drop_table('proposals')
    op.drop_table('progress')
    op.drop_table('meta')
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_logs_tx_seq'))
        batch_op.drop_index('ix_logs_topic0_seq')
        batch_op.drop_index('ix_logs_height')
        batch_op.drop_index('ix_logs_address_seq')

    op.drop_table('logs')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grants_dataset_id'))

    op.drop_table('grants')
    op.drop_table('evidence')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datasets_owner'))

    op.drop_table('datasets')
    with op.batch_alter_table('dataset_history', schema=None) as batch_op:
        batch_op.drop_index('ix_dataset_history_dataset_id_seq')
        batch_op.drop_index('ix_dataset_history_agency_seq')

    op.drop_table('dataset_history')
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blocks_timestamp_ms'))

    op.drop_table('blocks')
    with op.batch_alter_table('anchors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anchors_digest'))

    op.drop_table('anchors')
    op.drop_table('agency_daily')
    with op.batch_alter_table('agency_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agency_accounts_agency'))

    op.drop_table('agency_accounts')
    op.drop_table('agencies')
    op.drop_table('address_txs')
