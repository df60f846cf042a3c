"""The shared vectors in tests/vectors/: the committed files are what the generator produces today, and
the code still reproduces every vector when it reads them as an auditor would."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chainshare import codec, errors
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConsensusError
from chainshare.execution.genesis import compute_genesis_block, parse_genesis
from chainshare.ledger.merkle import (
    InclusionProof,
    compute_inclusion_proof,
    compute_root,
    verify_inclusion_proof,
)
from chainshare.ledger.quorum import verify_qc, vote_message
from chainshare.ledger.txs import decode_transaction
from chainshare.ledger.types import Block, Header, QuorumCertificate, Receipt
from chainshare.verify import verify_chain

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chainshare_vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def generated() -> dict[str, dict[str, Any]]:
    return generator().build_all()  # type: ignore[no-any-return]


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]


def b(h: str) -> bytes:
    return bytes.fromhex(h[2:])


@pytest.mark.parametrize("name", ["merkle.json", "transactions.json", "blocks.json", "qc.json"])
def test_committed_vectors_equal_the_generator_output(name: str) -> None:
    committed = (VECTORS / name).read_text()
    fresh = generator().render(generated()[name])
    assert committed == fresh, f"tests/vectors/{name} is stale: run `.venv/bin/python tests/vectors/generate.py` " \
                               "and review the diff (a changed vector is a consensus change)"


# -- Merkle -----------------------------------------------------------------------------------------

def test_merkle_vectors_are_reproduced() -> None:
    vectors = load("merkle.json")
    assert [t["size"] for t in vectors["trees"]] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17]
    for tree in vectors["trees"]:
        leaves = [b(x) for x in tree["leaves"]]
        root = b(tree["root"])
        assert compute_root(leaves) == root
        assert len(tree["proofs"]) == len(leaves)
        for i, p in enumerate(tree["proofs"]):
            proof = InclusionProof(p["index"], p["size"], tuple(b(x) for x in p["path"]))
            assert compute_inclusion_proof(leaves, i) == proof
            assert verify_inclusion_proof(leaves[i], proof, root)
    assert len(vectors["invalid_proofs"]) >= 5
    for case in vectors["invalid_proofs"]:
        p = case["proof"]
        proof = InclusionProof(p["index"], p["size"], tuple(b(x) for x in p["path"]))
        assert not verify_inclusion_proof(b(case["leaf"]), proof, b(case["root"])), case["reason"]


# -- transactions -------------------------------------------------------------------------------------

def test_valid_transaction_vectors_are_reproduced() -> None:
    vectors = load("transactions.json")
    assert {v["type"] for v in vectors["valid"]} == {0, 2}
    for v in vectors["valid"]:
        raw = b(v["raw"])
        tx = decode_transaction(raw, vectors["chain_id"])
        assert "0x" + keccak256(raw).hex() == v["hash"] == "0x" + tx.hash.hex()
        assert "0x" + tx.sender.hex() == v["sender"]
        assert (tx.type, tx.chain_id, tx.nonce, tx.gas_limit, tx.value) == \
            (v["type"], v["chain_id"], v["nonce"], v["gas"], v["value"])
        assert tx.to == (b(v["to"]) if v["to"] else None) and tx.data == b(v["data"])


def test_invalid_transaction_vectors_raise_the_named_error() -> None:
    vectors = load("transactions.json")
    names = {v["error"] for v in vectors["invalid"]}
    assert {"DecodeError", "UnsupportedTransactionType", "WrongChainId", "InvalidSignature"} <= names
    for v in vectors["invalid"]:
        expected = getattr(errors, v["error"])
        with pytest.raises(expected) as info:
            decode_transaction(b(v["raw"]), vectors["chain_id"])
        assert type(info.value) is expected, v["name"]


# -- blocks -------------------------------------------------------------------------------------------

class VectorSource:
    """A BlockSource over blocks.json: what an auditor's tooling would feed verify_chain."""

    def __init__(self, vectors: dict[str, Any]) -> None:
        self.vectors = vectors

    def genesis_document(self) -> bytes:
        return json.dumps(self.vectors["genesis"]).encode()

    def head_height(self) -> int:
        return len(self.vectors["blocks"]) - 1

    def block(self, height: int) -> tuple[Block, QuorumCertificate | None, list[Receipt]]:
        v = self.vectors["blocks"][height]
        qc = QuorumCertificate.from_list(codec.decode(b(v["qc"]))) if v["qc"] else None
        return Block.decode(b(v["encoded_block"])), qc, [Receipt.from_list(codec.decode(b(r))) for r in v["receipts"]]


def test_block_vectors_are_reproduced() -> None:
    vectors = load("blocks.json")
    genesis = parse_genesis(vectors["genesis"])
    block0, _, _ = compute_genesis_block(genesis)
    assert "0x" + block0.hash.hex() == vectors["blocks"][0]["hash"]
    assert len(vectors["blocks"]) == 5
    for v in vectors["blocks"]:
        encoded_header = b(v["encoded_header"])
        header = Header.from_list(codec.decode(encoded_header))
        assert header.encode() == encoded_header
        assert "0x" + keccak256(encoded_header).hex() == v["hash"]
        block = Block.decode(b(v["encoded_block"]))
        assert block.header == header and block.encode() == b(v["encoded_block"])
        assert "0x" + block.hash.hex() == v["hash"] and block.height == v["height"]
        txs = [b(t) for t in v["transactions"]]
        assert list(block.transactions) == txs
        assert [keccak256(t) for t in txs] == [b(x) for x in v["tx_hashes"]]
        assert header.tx_root == compute_root(txs) == b(v["tx_root"])
        assert header.receipts_root == compute_root([b(r) for r in v["receipts"]]) == b(v["receipts_root"])
        assert header.state_root == b(v["state_root"])
        assert [Receipt.from_list(codec.decode(b(r))).status for r in v["receipts"]] == v["receipt_status"]
    # Re-executing everything from the genesis document reaches the same state roots, receipts and QCs.
    report = verify_chain(VectorSource(vectors))
    assert report.head_hash == vectors["blocks"][-1]["hash"] and report.transactions == 7


def test_a_tampered_block_vector_fails_verification() -> None:
    vectors = load("blocks.json")
    receipt = Receipt.from_list(codec.decode(b(vectors["blocks"][1]["receipts"][1])))
    assert receipt.status == 0
    forged = Receipt(1, receipt.cumulative_gas_used, receipt.gas_used, receipt.logs, b"")
    vectors["blocks"][1]["receipts"][1] = "0x" + forged.encode().hex()
    with pytest.raises(ConsensusError, match="block 1: stored receipts differ"):
        verify_chain(VectorSource(vectors))


# -- quorum certificates -------------------------------------------------------------------------------

def test_qc_vectors_are_reproduced() -> None:
    vectors = load("qc.json")
    chain_id = vectors["chain_id"]
    validators = [{"bls_public_key": b(v["bls_public_key"])} for v in vectors["validators"]]
    assert codec.encode(["chainshare/vote/v2", chain_id, 0, b(vectors["cases"][0]["block_hash"]),
                         vectors["cases"][0]["height"], vectors["cases"][0]["round"]]) == \
        b(vectors["vote_message_preimage"])
    assert keccak256(b(vectors["vote_message_preimage"])) == b(vectors["vote_message"])
    results = {}
    for case in vectors["cases"]:
        qc = QuorumCertificate.from_list(codec.decode(b(case["encoded"])))
        assert (qc.block_hash, qc.height, qc.round, qc.signers, qc.signature) == \
            (b(case["block_hash"]), case["height"], case["round"], b(case["signers"]), b(case["signature"]))
        assert qc.signer_indices() == case["signer_indices"]
        assert vote_message(chain_id, qc.block_hash, qc.height, qc.round) == b(vectors["vote_message"])
        try:
            verify_qc(qc, validators, chain_id)
            results[case["name"]] = True
        except ConsensusError:
            results[case["name"]] = False
        assert results[case["name"]] == case["valid"], case["name"]
    assert sorted(set(results.values())) == [False, True]
