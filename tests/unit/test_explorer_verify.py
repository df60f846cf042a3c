"""The explorer indexer's checks: a certified block passes; each kind of forgery is refused."""

from __future__ import annotations

import dataclasses

import pytest
from chainkit import Chain, account, call_data, make_genesis, sign_call, validator

from chainshare.errors import ConsensusError
from chainshare.execution.contracts import NOTARY
from chainshare.execution.contracts.membership import ValidatorSet
from chainshare.execution.genesis import validator_records
from chainshare.explorer.indexer.decode import decode_call, decode_event
from chainshare.explorer.indexer.rows import compute_block_rows
from chainshare.explorer.indexer.source import SourceError, parse_raw_block, parse_validator_sets
from chainshare.explorer.indexer.verify import FetchedBlock, find_validator_set, verify_block
from chainshare.ledger.merkle import compute_inclusion_proof_of_hashes, verify_inclusion_proof

ALICE = account("alice")
VALS = [validator(f"v{i}", "Agency A") for i in range(4)]
GENESIS = make_genesis([("Agency A", [ALICE.address])], VALS)
GSET = ValidatorSet(0, 0, tuple(validator_records(GENESIS.validators)))


@pytest.fixture(scope="module")
def chain() -> Chain:
    c = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    c.produce([])
    c.produce([sign_call(ALICE, NOTARY, call_data("anchor(bytes32)", b"\x01" * 32), 0),
               sign_call(ALICE, NOTARY, call_data("anchor(bytes32)", b"\x02" * 32), 1)])
    return c


def _fetched(chain: Chain, h: int) -> FetchedBlock:
    return FetchedBlock(chain.chain.get_block(h), chain.chain.get_qc(h), tuple(chain.chain.get_receipts(h)))


def test_a_certified_block_verifies(chain: Chain) -> None:
    parent = chain.chain.get_block(1).header
    assert find_validator_set([GSET], parent) == GSET
    verify_block(parent, _fetched(chain, 2), GSET, GENESIS.chain_id)


@pytest.mark.parametrize("forgery, message", [
    ("qc_signature", "invalid aggregate signature"),
    ("qc_few_signers", "quorum"),
    ("qc_other_block", "certifies another block"),
    ("no_qc", "without the QC"),
    ("tx_dropped", "tx root"),
    ("receipt_changed", "receipts root"),
    ("wrong_parent", "does not extend"),
])
def test_each_forgery_is_refused(chain: Chain, forgery: str, message: str) -> None:
    f = _fetched(chain, 2)
    parent = chain.chain.get_block(1).header
    qc = f.qc
    assert qc is not None
    if forgery == "qc_signature":
        f = dataclasses.replace(f, qc=dataclasses.replace(qc, signature=chain.chain.get_qc(1).signature))  # type: ignore[union-attr]
    elif forgery == "qc_few_signers":
        f = dataclasses.replace(f, qc=dataclasses.replace(qc, signers=bytes([0b0011])))
    elif forgery == "qc_other_block":
        f = dataclasses.replace(f, qc=chain.chain.get_qc(1))
    elif forgery == "no_qc":
        f = dataclasses.replace(f, qc=None)
    elif forgery == "tx_dropped":
        f = dataclasses.replace(f, block=dataclasses.replace(f.block, transactions=f.block.transactions[:1]),
                                receipts=f.receipts[:1])
    elif forgery == "receipt_changed":
        f = dataclasses.replace(f, receipts=(dataclasses.replace(f.receipts[0], gas_used=1), f.receipts[1]))
    elif forgery == "wrong_parent":
        parent = chain.chain.get_block(0).header
    with pytest.raises(ConsensusError, match=message):
        verify_block(parent, f, GSET, GENESIS.chain_id)


def test_a_validator_set_the_parent_does_not_commit_to_is_refused(chain: Chain) -> None:
    forged = ValidatorSet(0, 0, tuple(validator_records(GENESIS.validators))[:3])
    parent = chain.chain.get_block(1).header
    assert find_validator_set([forged], parent) is None
    with pytest.raises(ConsensusError, match="commits to"):
        verify_block(parent, _fetched(chain, 2), forged, GENESIS.chain_id)


def test_rows_decode_calls_and_events(chain: Chain) -> None:
    rows = compute_block_rows(_fetched(chain, 2), GSET, GENESIS.chain_id)
    assert [t["method"] for t in rows.txs] == ["anchor", "anchor"]
    assert rows.txs[0]["sender"] == ALICE.address and len(rows.logs) == 2
    assert [e.event for e in rows.events] == ["Anchored", "Anchored"]
    assert rows.events[0].args == {"digest": "0x" + "01" * 32, "by": "0x" + ALICE.address.hex()}


def test_rows_leaf_hashes_prove_each_transaction_and_receipt_under_the_header_roots(chain: Chain) -> None:
    fetched = _fetched(chain, 2)
    rows = compute_block_rows(fetched, GSET, GENESIS.chain_id)
    header = fetched.block.header
    for column, leaves, root in (("tx_leaf_hashes", list(fetched.block.transactions), header.tx_root),
                                 ("receipt_leaf_hashes", [r.encode() for r in fetched.receipts], header.receipts_root)):
        stored = rows.block[column]
        hashes = [stored[i:i + 32] for i in range(0, len(stored), 32)]
        assert len(stored) == 32 * len(leaves) == 64
        for i, leaf in enumerate(leaves):
            assert verify_inclusion_proof(leaf, compute_inclusion_proof_of_hashes(hashes, i), root)


def test_decoders_never_raise_on_garbage() -> None:
    assert decode_call(NOTARY, b"\x00\x01") == ("Notary", None, None)
    assert decode_call(NOTARY, call_data("anchor(bytes32)", b"\x01" * 32)[:10])[2] is None
    assert decode_event(NOTARY, (), b"") == (None, None)
    with pytest.raises(SourceError):
        parse_raw_block({"block": "0xzz"})
    with pytest.raises(SourceError):
        parse_raw_block({"block": "0x00", "qc": None, "receipts": "0x90"})
    with pytest.raises(SourceError):
        parse_validator_sets({"epochs": [{"epoch": 0, "activation_height": 0, "items": [{"name": 1}]}]})
