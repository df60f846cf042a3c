"""The explorer stores a chain's epoch-change proofs only once they verify from its indexed genesis set by
the node's rules (``store_epoch_changes``), and serves them in every transaction's proof bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_replica_sync import epoch_change, genesis_set

from chainshare import codec
from chainshare.consensus import epochs
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConsensusError
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_sets
from chainshare.explorer.api.app import create_explorer_app
from chainshare.explorer.bench import MemorySource
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.engine import apply_migrations, create_db_engine
from chainshare.explorer.indexer.service import Indexer, IndexerConfig
from chainshare.explorer.indexer.source import SourceError
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


class _Source(MemorySource):
    """A node over a chainkit chain that serves ``changes`` at /epoch-changes (or cannot: None)."""

    def __init__(self, chain: Any, changes: list[bytes] | None) -> None:
        store = chain.chain
        blocks = []
        for h in range(store.head_height + 1):
            qc = store.get_qc(h) if h else None
            blocks.append((store.get_block(h).encode(), qc.encode() if qc else None,
                           codec.encode_trusted([r.to_list() for r in store.get_receipts(h)])))
        super().__init__(chain.genesis, blocks, get_validator_sets(store.state))
        self.changes = changes

    def get_epoch_changes(self) -> list[bytes]:
        if self.changes is None:
            raise SourceError("memory://bench/api/v1/epoch-changes: HTTP 404")
        return self.changes


def test_the_indexer_stores_a_nodes_epoch_change_proofs_and_the_api_serves_them_with_each_tx(tmp_path: Path) -> None:
    from test_validator_sets import ALICE, Gov

    chain, change, _, _ = epoch_change()
    activation = change.next_set.activation_height
    while chain.chain.head_height < activation + 1:
        chain.produce([])
    Gov(chain).send(ALICE, bytes(20), b"")
    tx = "0x" + keccak256(chain.chain.get_head().transactions[0]).hex()
    for served, kept in ((None, 0), ([encode(change)], 1)):
        db = tmp_path / f"ix{kept}.db"
        engine = create_db_engine(f"sqlite:///{db}")
        ix = Indexer(engine, IndexerConfig(urls=(), follow="poll", poll_interval=0.05),
                     sources=[_Source(chain, served)])
        ix.run(until_caught_up=True)
        # a node that cannot serve the proofs does not stop the blocks from being indexed
        assert ix.head is not None and ix.head.height == chain.chain.head_height
        client = TestClient(create_explorer_app(engine))
        proof = client.get(f"/api/v1/txs/{tx}").json()["proof"]
        assert proof["epoch_changes"] == ["0x" + encode(change).hex()] * kept
        bundle = client.get(f"/tx/{tx}/proof.json").json()  # what the page embeds and verify.js checks
        assert bundle["epoch"] == 1 and bundle["epoch_changes"] == proof["epoch_changes"]
        assert bundle["genesis_set"]["validators"] and bundle["genesis_header"]
        page = " ".join(client.get(f"/tx/{tx}").text.split())
        assert "1 validator-set changes walked from the genesis set" in page and bundle["genesis_hash"] in page
