"""Offline chain verification (`chainshare chain verify`): an honest chain verifies; any tampering with
what is stored (receipts, transactions, QCs, signatures, headers, genesis) is detected."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare import codec
from chainshare.config import NodeConfig
from chainshare.consensus.messages import BlsCrypto
from chainshare.errors import ConsensusError
from chainshare.ledger.chain import K_GENESIS_DOC, P_BLOCK, P_QC, P_RECEIPTS, ChainStore, unpack_stored
from chainshare.ledger.finality import encode_finality_proof
from chainshare.ledger.quorum import aggregate_qc, sign_proposal, sign_vote
from chainshare.ledger.store import MemoryStore
from chainshare.ledger.txs import decode_transaction
from chainshare.ledger.types import Block, QuorumCertificate, Receipt
from chainshare.node import Node, ValidatorKey
from chainshare.verify import StoreSource, verify_chain

ALICE, BOB = account("alice"), account("bob")
VAL = validator("v1", "Agency A")
OTHER_VAL = validator("v2", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [VAL])


def anchor(acct: Any, nonce: int, byte: int) -> bytes:
    return sign_call(acct, NOTARY, call_data("anchor(bytes32)", bytes([byte]) * 32), nonce)


def honest_chain() -> Chain:
    chain = Chain(GENESIS, VAL)
    chain.produce([anchor(ALICE, 0, 1), anchor(BOB, 0, 2)])
    chain.produce([])
    chain.produce([anchor(ALICE, 1, 3), anchor(BOB, 1, 1)])  # the second reverts: already anchored
    chain.produce([anchor(ALICE, 2, 4)])
    return chain


def audit(chain: Chain) -> Any:
    """Verify from the store alone, through a fresh ChainStore (as `chainshare chain verify` does)."""
    return verify_chain(StoreSource(ChainStore(chain.store)))


def h8(height: int) -> bytes:
    return height.to_bytes(8, "big")


def stored_block(chain: Chain, height: int) -> Block:
    raw = chain.store.get(P_BLOCK + h8(height))
    assert raw is not None
    return Block.decode(unpack_stored(raw))


def put_block(chain: Chain, height: int, block: Block) -> None:
    chain.store.write_batch({P_BLOCK + h8(height): block.encode()})


def test_honest_chain_verifies() -> None:
    chain = honest_chain()
    report = audit(chain)
    assert report.blocks == 5 and report.transactions == 5
    assert report.head_hash == "0x" + chain.chain.get_head().hash.hex()
    assert report.genesis_hash == "0x" + chain.chain.get_block(0).hash.hex()
    assert report.to_json()["ok"] is True and report.chain_id == GENESIS.chain_id


def test_chain_built_by_the_node_producer_verifies() -> None:
    """Guards chainkit.Chain against drifting from Node._propose_and_commit: the real producer's chain
    must verify too."""
    key = ValidatorKey(VAL.secret_key, VAL.public_key)
    node = Node(NodeConfig(), GENESIS, MemoryStore(), key)
    try:
        txs = [decode_transaction(anchor(ALICE, n, 10 + n), GENESIS.chain_id) for n in range(3)]
        executed, invalid = node._propose_and_commit(txs[:2])
        assert len(executed.block.transactions) == 2 and invalid == []
        node._propose_and_commit(txs[2:])
        node._propose_and_commit([])
        assert verify_chain(StoreSource(ChainStore(node.chain.store))).blocks == 4
        chain = Chain(GENESIS, VAL, node.chain.store)
        assert chain.produce([]).block.header.round == node.chain.get_head().header.round + 1
    finally:
        node.close()


def test_progress_is_reported_per_block() -> None:
    seen: list[tuple[int, int]] = []
    verify_chain(StoreSource(ChainStore(honest_chain().store)), progress=lambda h, n: seen.append((h, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_tampered_receipt_is_detected() -> None:
    chain = honest_chain()
    receipts = [Receipt.from_list(r) for r in codec.decode(unpack_stored(chain.store.get(P_RECEIPTS + h8(3)) or b""))]
    assert [r.status for r in receipts] == [1, 0]
    receipts[1] = dataclasses.replace(receipts[1], status=1)  # claim the failed anchor succeeded
    chain.store.write_batch({P_RECEIPTS + h8(3): codec.encode_trusted([r.to_list() for r in receipts])})
    with pytest.raises(ConsensusError, match="block 3: stored receipts differ"):
        audit(chain)


def test_dropped_receipt_is_detected() -> None:
    chain = honest_chain()
    chain.store.write_batch({P_RECEIPTS + h8(1): codec.encode_trusted([])})
    with pytest.raises(ConsensusError, match="block 1: stored receipts differ"):
        audit(chain)


@pytest.mark.parametrize("edit", ["replaced", "dropped", "added"])
def test_tampered_block_transactions_are_detected(edit: str) -> None:
    chain = honest_chain()
    block = stored_block(chain, 1)
    txs = list(block.transactions)
    if edit == "replaced":
        txs[0] = anchor(ALICE, 0, 0x77)  # validly signed by the same sender, other content
    elif edit == "dropped":
        txs.pop()
    else:
        txs.append(anchor(ALICE, 1, 0x78))
    put_block(chain, 1, dataclasses.replace(block, transactions=tuple(txs)))
    with pytest.raises(ConsensusError, match="block 1"):
        audit(chain)


def test_garbage_transaction_in_a_stored_block_is_a_consensus_error() -> None:
    chain = honest_chain()
    block = stored_block(chain, 1)
    put_block(chain, 1, dataclasses.replace(block, transactions=block.transactions + (b"\x02\xc0",)))
    with pytest.raises(ConsensusError):
        audit(chain)


def test_tampered_stored_qc_is_detected() -> None:
    chain = honest_chain()
    qc = QuorumCertificate.from_list(codec.decode(chain.store.get(P_QC + h8(2)) or b""))
    other = chain.chain.get_block(1).hash
    forged_sig = aggregate_qc(qc.block_hash, 2, qc.round,
                              {0: sign_vote(VAL.secret_key, GENESIS.chain_id, other, 2, qc.round)}, 1).signature
    chain.store.write_batch({P_QC + h8(2): dataclasses.replace(qc, signature=forged_sig).encode()})
    with pytest.raises(ConsensusError, match="invalid aggregate signature"):
        audit(chain)


def test_stored_qc_with_no_signers_is_detected() -> None:
    chain = honest_chain()
    qc = QuorumCertificate.from_list(codec.decode(chain.store.get(P_QC + h8(4)) or b""))
    chain.store.write_batch({P_QC + h8(4): dataclasses.replace(qc, signers=b"\x00").encode()})
    with pytest.raises(ConsensusError, match="QC has 0 signers"):
        audit(chain)


def test_stored_qc_of_another_block_is_detected() -> None:
    chain = honest_chain()
    chain.store.write_batch({P_QC + h8(3): chain.store.get(P_QC + h8(2)) or b""})
    with pytest.raises(ConsensusError, match="block 3: stored QC certifies another block"):
        audit(chain)


def test_missing_stored_qc_is_detected() -> None:
    chain = honest_chain()
    chain.store.write_batch({}, (P_QC + h8(4),))
    with pytest.raises(ConsensusError, match="block 4: no quorum certificate"):
        audit(chain)


def test_tampered_proposer_signature_is_detected() -> None:
    chain = honest_chain()
    block = stored_block(chain, 2)
    wrong = sign_proposal(VAL.secret_key, GENESIS.chain_id, stored_block(chain, 1).hash)
    put_block(chain, 2, dataclasses.replace(block, signature=wrong))
    with pytest.raises(ConsensusError, match="block 2: invalid proposer signature"):
        audit(chain)


def test_block_signed_by_a_non_validator_is_detected() -> None:
    chain = honest_chain()
    block = stored_block(chain, 2)
    put_block(chain, 2, dataclasses.replace(block, signature=sign_proposal(
        OTHER_VAL.secret_key, GENESIS.chain_id, block.hash)))
    with pytest.raises(ConsensusError, match="invalid proposer signature"):
        audit(chain)


def test_tampered_header_is_detected_even_when_re_signed() -> None:
    """A validator key alone cannot rewrite history: re-signing a changed header still fails re-execution
    or the QC check."""
    chain = honest_chain()
    block = stored_block(chain, 3)
    header = dataclasses.replace(block.header, state_root=b"\x01" * 32)
    forged = Block(header, block.transactions, block.justify, block.timeout_cert)
    forged = dataclasses.replace(forged, signature=sign_proposal(VAL.secret_key, GENESIS.chain_id, forged.hash))
    put_block(chain, 3, forged)
    with pytest.raises(ConsensusError, match="block 3"):
        audit(chain)


def test_block_carrying_a_wrong_parent_qc_is_detected() -> None:
    chain = honest_chain()
    block = stored_block(chain, 3)
    assert block.justify is not None
    wrong = chain.chain.get_qc(1)
    forged = Block(block.header, block.transactions, wrong, block.timeout_cert)
    forged = dataclasses.replace(forged, signature=sign_proposal(VAL.secret_key, GENESIS.chain_id, forged.hash))
    put_block(chain, 3, forged)
    with pytest.raises(ConsensusError, match="block 3: does not carry the QC of its parent"):
        audit(chain)


def test_genesis_document_of_another_network_is_detected() -> None:
    chain = honest_chain()
    doc = json.loads(chain.store.get(K_GENESIS_DOC) or b"")
    doc["timestamp_ms"] += 1
    chain.store.write_batch({K_GENESIS_DOC: json.dumps(doc).encode()})
    with pytest.raises(ConsensusError, match="block 0 does not match the genesis document"):
        audit(chain)


def test_block_whose_view_does_not_grow_is_refused() -> None:
    chain = Chain(GENESIS, VAL)
    chain.produce([], round=5)
    chain.produce([], round=5)
    with pytest.raises(ConsensusError):
        audit(chain)


def _tc(chain: Chain, view: int) -> bytes:
    """A TC of ``view`` by the chain's single validator, reporting the head's QC view."""
    crypto = BlsCrypto(GENESIS.chain_id, [VAL.public_key], 0, VAL.secret_key)
    high = chain.chain.get_head().header.round
    return crypto.aggregate_tc(view, {0: (high, crypto.sign_timeout(view, high))}, None).encode()


def test_a_view_reached_by_timeout_verifies_only_with_its_timeout_certificate() -> None:
    chain = honest_chain()
    view = chain.chain.get_head().header.round + 2
    chain.produce([], round=view, timeout_cert=_tc(chain, view - 1))
    assert audit(chain).blocks == 6
    skipped = honest_chain()
    skipped.produce([], round=view)  # a view skipped with no TC: honest validators would not have voted
    with pytest.raises(ConsensusError, match=f"block 5: view {view} does not follow its QC's view {view - 2}"):
        audit(skipped)
    wrong = honest_chain()
    wrong.produce([], round=view, timeout_cert=_tc(wrong, view - 2))  # a TC of another view
    with pytest.raises(ConsensusError, match=f"block 5: its timeout certificate is not a valid TC of view {view - 1}"):
        audit(wrong)


def test_block_1_carrying_a_qc_is_refused() -> None:
    chain = honest_chain()
    block = stored_block(chain, 1)
    qc = chain.chain.get_qc(1)
    forged = dataclasses.replace(block, justify=qc)
    forged = dataclasses.replace(forged, signature=sign_proposal(VAL.secret_key, GENESIS.chain_id, forged.hash))
    put_block(chain, 1, forged)
    with pytest.raises(ConsensusError, match="block 1: block 1 extends genesis, whose QC is implicit, but carries one"):
        audit(chain)


# -- finality: certified is not final (docs/consensus.md rule 4) -------------------------------

VALS4 = [validator(f"q{i}", "Agency A") for i in range(4)]
GENESIS4 = make_genesis([("Agency A", [ALICE.address])], VALS4)


def four_validator_chain(store: Any = None, blocks: int = 4) -> Chain:
    """Blocks of consecutive views, each certified by all four validators (3 would be a quorum)."""
    chain = Chain(GENESIS4, VALS4[0], store, other_keys=VALS4[1:])
    for _ in range(blocks):
        chain.produce([])
    return chain


def keep_proof(chain: Chain, *, round: int | None = None, signers: list[int] | None = None) -> None:
    """Store, as the replica does, a certified child of the head (not committed) as the head's proof."""
    child, qc = chain.certify_next(round=round, signers=signers)
    chain.chain.put_finality_proof(encode_finality_proof([], child.block, qc))


def tc4(chain: Chain, view: int) -> bytes:
    """A TC of ``view`` signed by three of the four validators, reporting the head's QC view."""
    keys = [v.public_key for v in VALS4]
    high = chain.chain.get_head().header.round
    sigs = {i: (high, BlsCrypto(GENESIS4.chain_id, keys, i, VALS4[i].secret_key).sign_timeout(view, high))
            for i in range(3)}
    return BlsCrypto(GENESIS4.chain_id, keys, 0, VALS4[0].secret_key).aggregate_tc(view, sigs, None).encode()


def test_one_validator_chain_is_final_block_by_block() -> None:
    report = audit(honest_chain())
    assert report.head_final and report.finalized_height == 4 and report.finality == "quorum-of-one"


def test_certified_head_without_a_finality_proof_is_not_reported_final() -> None:
    """A source that serves certified blocks and no 2-chain over the last one proves only the prefix."""
    report = audit(four_validator_chain())
    assert report.blocks == 5 and report.finalized_height == 3 and report.finality == "unproven"
    assert not report.head_final and report.to_json()["ok"] is False


def test_head_with_its_finality_proof_is_final() -> None:
    chain = four_validator_chain()
    keep_proof(chain, signers=[1, 2, 3])  # any quorum of the set
    report = audit(chain)
    assert report.head_final and report.finalized_height == 4 and report.finality == "finality-proof"
    assert report.to_json()["ok"] is True


@pytest.mark.parametrize("forgery", ["view-gap", "too-few-signers", "forged-signature", "stale", "garbage"])
def test_a_forged_finality_proof_does_not_make_the_head_final(forgery: str) -> None:
    chain = four_validator_chain()
    head = chain.chain.get_head()
    if forgery == "view-gap":  # a certified child two views later does not finalize its parent
        keep_proof(chain, round=head.header.round + 2)
    elif forgery == "too-few-signers":
        keep_proof(chain, signers=[0, 1])
    elif forgery == "forged-signature":
        child, qc = chain.certify_next()
        other = chain.chain.get_qc(head.height)
        assert other is not None
        chain.chain.put_finality_proof(encode_finality_proof(
            [], child.block, dataclasses.replace(qc, signature=other.signature)))
    elif forgery == "stale":  # the proof of an earlier head
        keep_proof(chain)
        chain.produce([])
    else:
        chain.chain.put_finality_proof(b"\x93\x90\x01\x02")
    report = audit(chain)
    assert not report.head_final and report.finality == "unproven"
    assert report.finalized_height == report.blocks - 2


def test_a_tail_reached_by_timeout_is_final_only_up_to_its_last_two_chain() -> None:
    """Views 1, 2, 3, then 5 by a TC of view 4: the QC on block 4 (view 5) does not finalize block 3
    (view 3), so a source claiming head 4 proves only blocks up to 2; a 2-chain over block 4 then proves it."""
    chain = four_validator_chain(blocks=3)
    view = chain.chain.get_head().header.round + 2
    chain.produce([], round=view, timeout_cert=tc4(chain, view - 1))
    report = audit(chain)
    assert (report.blocks, report.finalized_height, report.head_final) == (5, 2, False)
    keep_proof(chain)
    assert audit(chain).head_final


def test_chain_verify_cli_exits_3_on_a_certified_but_unproven_head(tmp_path: Any) -> None:
    """The command an auditor runs: exit 3 and the finalized prefix, not a green 'verified'."""
    import subprocess
    import sys

    from chainshare.ledger.store import LevelDBStore

    def verify_cli() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chainshare", "chain", "verify", "--data-dir",
                               str(tmp_path / "data"), "--json"], capture_output=True, text=True, timeout=120)

    store = LevelDBStore(tmp_path / "data")
    four_validator_chain(store)
    store.close()
    proc = verify_cli()
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["head_final"] is False and report["finalized_height"] == 3
    store = LevelDBStore(tmp_path / "data")
    keep_proof(Chain(GENESIS4, VALS4[0], store, other_keys=VALS4[1:]))
    store.close()
    proc = verify_cli()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["finality"] == "finality-proof"
