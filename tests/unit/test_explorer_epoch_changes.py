"""The explorer stores a chain's epoch-change proofs only once they verify from its indexed genesis set by
the node's rules (``store_epoch_changes``), and serves them in every transaction's proof bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_replica_sync import epoch_change, genesis_set

from chainshare.consensus import epochs
from chainshare.errors import ConsensusError
from chainshare.execution.contracts.membership import ValidatorSet
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.engine import apply_migrations, create_db_engine
from chainshare.explorer.indexer.writer import store_epoch_changes, store_validator_set
from chainshare.ledger.finality import FinalityProof, encode_finality_proof


def encode(change: epochs.EpochChangeProof) -> bytes:
    p = change.proof
    return epochs.encode_epoch_change_proof(change.last, encode_finality_proof(p.blocks[:-1], p.blocks[-1], p.qc),
                                           change.next_set)


def test_epoch_change_proofs_are_stored_once_verified_from_the_indexed_genesis_set(tmp_path: Path) -> None:
    chain, change, child, qc_of_new = epoch_change()
    cid = chain.genesis.chain_id
    engine = create_db_engine(f"sqlite:///{tmp_path / 'e.db'}")
    apply_migrations(engine)
    with engine.begin() as conn:
        store_validator_set(conn, genesis_set(chain))
        store_validator_set(conn, change.next_set)

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(s.epoch_changes)).scalar_one())

    nxt = change.next_set
    forged = [
        (dataclasses.replace(change, proof=FinalityProof((child,), qc_of_new)), "not signed by a quorum of epoch 0"),
        (dataclasses.replace(change, next_set=ValidatorSet(1, nxt.activation_height, nxt.validators[:3])),
         "do not hash"),
    ]
    for bad, why in forged:
        with engine.begin() as conn, pytest.raises(ConsensusError, match=why):
            store_epoch_changes(conn, [encode(bad)], cid)
    with engine.begin() as conn, pytest.raises(ConsensusError, match="undecodable"):
        store_epoch_changes(conn, [b"\x93\x01\x02\x03"], cid)
    assert stored() == 0
    with engine.begin() as conn:
        assert store_epoch_changes(conn, [encode(change)], cid) == 1
    with engine.begin() as conn:
        assert store_epoch_changes(conn, [encode(change)], cid) == 0  # already there: nothing asked, nothing added
    with engine.connect() as conn:
        assert bytes(conn.execute(select(s.epoch_changes.c.proof)).scalar_one()) == encode(change)


def test_a_valid_change_to_another_set_than_the_one_indexed_is_refused(tmp_path: Path) -> None:
    chain, change, _, _ = epoch_change()
    engine = create_db_engine(f"sqlite:///{tmp_path / 'e.db'}")
    apply_migrations(engine)
    with engine.begin() as conn:
        store_validator_set(conn, genesis_set(chain))
        # the explorer indexed epoch 1 with the members in another order (what its blocks were checked with)
        nxt = change.next_set
        store_validator_set(conn, ValidatorSet(1, nxt.activation_height, nxt.validators[::-1]))
    with engine.begin() as conn, pytest.raises(ConsensusError, match="another set 1 than the one indexed"):
        store_epoch_changes(conn, [encode(change)], chain.genesis.chain_id)
