"""Generate the shared test vectors (merkle.json, transactions.json, blocks.json, qc.json).

Run from the repository root:  .venv/bin/python tests/vectors/generate.py
Everything is deterministic (fixed keys, seeds and timestamps; RFC 6979 ECDSA; BLS is deterministic),
so the output is byte-identical on every run. tests/unit/test_vectors.py checks that the committed
files equal a fresh run and that the code still reproduces every vector; an auditor's independent
verifier can check itself against the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import rlp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "unit"))

from chainkit import (  # noqa: E402
    CHAIN_ID,
    GOVERNANCE,
    MEMBERSHIP,
    NOTARY,
    Chain,
    account,
    call_data,
    make_genesis,
    sign_call,
    validator,
)
from eth_account import Account  # noqa: E402

from chainshare import codec  # noqa: E402
from chainshare.crypto.hashing import keccak256  # noqa: E402
from chainshare.crypto.secp import SECP256K1_N  # noqa: E402
from chainshare.errors import ChainshareError  # noqa: E402
from chainshare.execution.genesis import ChainParams  # noqa: E402
from chainshare.ledger.merkle import (  # noqa: E402
    InclusionProof,
    compute_inclusion_proof,
    compute_root,
    verify_inclusion_proof,
)
from chainshare.ledger.quorum import aggregate_qc, sign_vote, vote_message  # noqa: E402
from chainshare.ledger.txs import decode_transaction, sign_eip1559  # noqa: E402
from chainshare.ledger.types import QuorumCertificate, make_bitmap  # noqa: E402

FILES = ("merkle.json", "transactions.json", "blocks.json", "qc.json")


def hx(b: bytes) -> str:
    return "0x" + b.hex()


# -- Merkle trees and inclusion proofs --------------------------------------------------------------

MERKLE_SIZES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17)


def merkle_vectors() -> dict[str, Any]:
    trees = []
    for n in MERKLE_SIZES:
        leaves = [b"leaf %d" % i for i in range(n)]
        root = compute_root(leaves)
        proofs = [compute_inclusion_proof(leaves, i).to_json() for i in range(n)]
        trees.append({"size": n, "leaves": [hx(x) for x in leaves], "root": hx(root), "proofs": proofs})

    leaves = [b"leaf %d" % i for i in range(7)]
    root = compute_root(leaves)
    good = compute_inclusion_proof(leaves, 5)
    bad_path = (good.path[0][:-1] + bytes([good.path[0][-1] ^ 1]),) + good.path[1:]
    invalid = [
        ("wrong leaf", b"leaf 6", good),
        ("wrong index", leaves[5], InclusionProof(4, 7, good.path)),
        ("index outside the tree", leaves[5], InclusionProof(7, 7, good.path)),
        ("tampered path element", leaves[5], InclusionProof(5, 7, bad_path)),
        ("path too short", leaves[5], InclusionProof(5, 7, good.path[:-1])),
        ("path too long", leaves[5], InclusionProof(5, 7, good.path + (root,))),
        ("size that changes the path shape", leaves[5], InclusionProof(5, 6, good.path)),
    ]
    out = []
    for reason, leaf, proof in invalid:
        assert not verify_inclusion_proof(leaf, proof, root), reason
        out.append({"reason": reason, "leaf": hx(leaf), "root": hx(root), "proof": proof.to_json(), "valid": False})
    return {
        "description": "RFC 6962 Merkle trees over keccak-256: leaf = keccak(0x00 || leaf), "
                       "node = keccak(0x01 || left || right), empty root = keccak(''). Leaves are raw bytes.",
        "trees": trees,
        "invalid_proofs": out,
    }


# -- transactions --------------------------------------------------------------------------------------

TX_KEY = keccak256(b"chainshare/vectors/tx-key")
NOTARY_CHECKSUM = "0x" + NOTARY.hex()
ANCHOR = call_data("anchor(bytes32)", b"\x5a" * 32)


def _eth_account(tx: dict[str, Any]) -> bytes:
    return bytes(Account.sign_transaction(tx, TX_KEY).raw_transaction)


def _edit(raw: bytes, edit: Any) -> bytes:
    typed = raw[0] < 0xC0
    fields = rlp.decode(raw[1:] if typed else raw)
    edit(fields)
    return (raw[:1] if typed else b"") + rlp.encode(fields)


def _int_bytes(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


def _high_s(fields: list[Any]) -> None:
    s = int.from_bytes(fields[11], "big")
    fields[11] = _int_bytes(SECP256K1_N - s)
    fields[9] = b"" if fields[9] == b"\x01" else b"\x01"


def transaction_vectors() -> dict[str, Any]:
    legacy = {"chainId": CHAIN_ID, "nonce": 1, "gasPrice": 1_000_000_000, "gas": 100_000, "to": NOTARY_CHECKSUM,
              "value": 0, "data": hx(ANCHOR)}
    type2 = {"type": 2, "chainId": CHAIN_ID, "nonce": 2, "maxFeePerGas": 3_000_000_000,
             "maxPriorityFeePerGas": 1_000_000_000, "gas": 100_000, "to": NOTARY_CHECKSUM, "value": 0,
             "data": hx(ANCHOR), "accessList": [{"address": NOTARY_CHECKSUM, "storageKeys": ["0x" + "01" * 32]}]}
    valid_raw = [
        ("eip1559 signed by chainshare", sign_eip1559(TX_KEY, chain_id=CHAIN_ID, nonce=0, to=NOTARY, data=ANCHOR,
                                                      gas=100_000, max_fee_per_gas=2, max_priority_fee_per_gas=1)),
        ("eip1559 with access list signed by eth_account", _eth_account(type2)),
        ("eip155 legacy signed by eth_account", _eth_account(legacy)),
    ]
    valid = []
    for name, raw in valid_raw:
        tx = decode_transaction(raw, CHAIN_ID)
        valid.append({"name": name, "raw": hx(raw), "hash": hx(tx.hash), "sender": hx(tx.sender),
                      "type": tx.type, "chain_id": tx.chain_id, "nonce": tx.nonce, "gas": tx.gas_limit,
                      "to": hx(tx.to) if tx.to else None, "value": tx.value, "data": hx(tx.data)})

    unprotected = {k: v for k, v in legacy.items() if k != "chainId"}
    good = valid_raw[0][1]
    invalid_raw = [
        ("empty", b""),
        ("not RLP", b"\x02\xf8"),
        ("RLP string instead of list", b"\x83abc"),
        ("eip1559 with 11 fields", b"\x02" + rlp.encode([b""] * 11)),
        ("type 1 (EIP-2930)", _eth_account({**legacy, "type": 1, "accessList": []})),
        ("type 3 envelope", b"\x03" + rlp.encode([b"\x01"] * 14)),
        ("wrong chain id (eip1559)", _eth_account({**type2, "chainId": 1})),
        ("wrong chain id (legacy)", _eth_account({**legacy, "chainId": 1})),
        ("unprotected legacy (v = 27/28)", _eth_account(unprotected)),
        ("high-s signature", _edit(good, _high_s)),
        ("recovery id 2", _edit(good, lambda f: f.__setitem__(9, b"\x02"))),
        ("nonce with a leading zero byte", _edit(good, lambda f: f.__setitem__(1, b"\x00\x01"))),
        ("zero value encoded as 0x00", _edit(good, lambda f: f.__setitem__(6, b"\x00"))),
        ("19-byte recipient", _edit(good, lambda f: f.__setitem__(5, b"\x01" * 19))),
        ("priority fee above max fee", sign_eip1559(TX_KEY, chain_id=CHAIN_ID, nonce=0, to=NOTARY, data=b"",
                                                    gas=30_000, max_fee_per_gas=1, max_priority_fee_per_gas=2)),
    ]
    invalid = []
    for name, raw in invalid_raw:
        try:
            decode_transaction(raw, CHAIN_ID)
        except ChainshareError as exc:
            invalid.append({"name": name, "raw": hx(raw), "error": type(exc).__name__})
        else:
            raise AssertionError(f"invalid vector {name!r} decoded")
    return {
        "description": f"Raw signed Ethereum transactions for chain id {CHAIN_ID}; hash = keccak(raw). 'error' "
                       "names the chainshare.errors class decode_transaction raises.",
        "chain_id": CHAIN_ID,
        "valid": valid,
        "invalid": invalid,
    }


# -- a small chain --------------------------------------------------------------------------------------

def chain_fixture() -> tuple[Any, Any, list[Any]]:
    """The vector chain: genesis with two agencies and one validator, four blocks."""
    alice, bob = account("vectors/alice"), account("vectors/bob")
    val = validator("vectors/validator", "Agency A")
    genesis = make_genesis([("Agency A", [alice.address]), ("Agency B", [bob.address])], [val],
                           params=ChainParams(voting_period_blocks=10))
    chain = Chain(genesis, val)
    d1, d2 = b"\x01" * 32, b"\x02" * 32
    propose = call_data("propose(address,bytes,string)", "0x" + NOTARY.hex(), call_data("anchor(bytes32)", d2),
                        "anchor d2 by governance")
    chain.produce([sign_call(alice, NOTARY, call_data("anchor(bytes32)", d1), 0),
                   sign_call(bob, NOTARY, call_data("anchor(bytes32)", d1), 0)])  # the second reverts
    chain.produce([])
    chain.produce([sign_call(alice, GOVERNANCE, propose, 1),
                   sign_call(alice, GOVERNANCE, call_data("vote(uint256,bool)", 1, True), 2),
                   sign_call(bob, GOVERNANCE, call_data("vote(uint256,bool)", 1, True), 1)])
    chain.produce([sign_call(bob, GOVERNANCE, call_data("execute(uint256)", 1), 2),
                   sign_call(alice, MEMBERSHIP, call_data("isMember(address)", "0x" + bob.address.hex()), 3)])
    return genesis, chain, [val]


def block_vectors() -> dict[str, Any]:
    genesis, chain, (val,) = chain_fixture()
    store = chain.chain
    blocks = []
    for h in range(store.head_height + 1):
        block = store.get_block(h)
        receipts = store.get_receipts(h)
        qc = store.get_qc(h)
        header = block.header
        blocks.append({
            "height": h,
            "hash": hx(block.hash),
            "encoded_header": hx(header.encode()),
            "parent_hash": hx(header.parent_hash),
            "round": header.round,
            "tx_root": hx(header.tx_root),
            "receipts_root": hx(header.receipts_root),
            "state_root": hx(header.state_root),
            "gas_used": header.gas_used,
            "transactions": [hx(t) for t in block.transactions],
            "tx_hashes": [hx(keccak256(t)) for t in block.transactions],
            "receipts": [hx(r.encode()) for r in receipts],
            "receipt_status": [r.status for r in receipts],
            "encoded_block": hx(block.encode()),
            "qc": hx(qc.encode()) if qc else None,
        })
    return {
        "description": "A chain built, signed and certified (1-of-1 BLS QC) as the single-validator node does, "
                       "from the genesis document below (its certificates are placeholders). Encodings are "
                       "canonical msgpack; block hash = keccak(encoded_header).",
        "chain_id": genesis.chain_id,
        "genesis": genesis.to_json(),
        "validator_bls_public_key": hx(val.public_key),
        "blocks": blocks,
    }


# -- quorum certificates --------------------------------------------------------------------------------

QC_BLOCK = keccak256(b"chainshare/vectors/qc-block")
QC_HEIGHT, QC_ROUND = 42, 43


def qc_vectors() -> dict[str, Any]:
    from chainshare.errors import ConsensusError
    from chainshare.ledger.quorum import verify_qc

    vals = [validator(f"vectors/qc-{i}", "Agency A") for i in range(4)]
    records = [{"bls_public_key": v.public_key} for v in vals]

    def qc_of(signers: list[int], *, block: bytes = QC_BLOCK, chain_id: int = CHAIN_ID) -> QuorumCertificate:
        votes = {i: sign_vote(vals[i].secret_key, chain_id, block, QC_HEIGHT, QC_ROUND) for i in signers}
        return aggregate_qc(block, QC_HEIGHT, QC_ROUND, votes, len(vals))

    good = qc_of([0, 1, 3])
    cases = [
        ("3 of 4 signers", good),
        ("all 4 signers", qc_of([0, 1, 2, 3])),
        ("2 of 4 signers: below quorum", qc_of([0, 1])),
        ("signed for another block", QuorumCertificate(QC_BLOCK, QC_HEIGHT, QC_ROUND, good.signers,
                                                       qc_of([0, 1, 3], block=b"\x00" * 32).signature)),
        ("signed on another chain", qc_of([0, 1, 3], chain_id=CHAIN_ID + 1)),
        ("bitmap names other signers", QuorumCertificate(QC_BLOCK, QC_HEIGHT, QC_ROUND, make_bitmap([0, 1, 2], 4),
                                                         good.signature)),
        ("bitmap of the wrong length", QuorumCertificate(QC_BLOCK, QC_HEIGHT, QC_ROUND, good.signers + b"\x00",
                                                         good.signature)),
        ("signer outside the validator set", QuorumCertificate(QC_BLOCK, QC_HEIGHT, QC_ROUND, b"\x17",
                                                               good.signature)),
    ]
    out = []
    for name, qc in cases:
        try:
            verify_qc(qc, records, CHAIN_ID)
            valid = True
        except ConsensusError:
            valid = False
        out.append({"name": name, "block_hash": hx(qc.block_hash), "height": qc.height, "round": qc.round,
                    "signers": hx(qc.signers), "signer_indices": qc.signer_indices(), "signature": hx(qc.signature),
                    "encoded": hx(qc.encode()), "valid": valid})
    return {
        "description": "Quorum certificates over 4 validators (quorum 3). Vote message = keccak(msgpack("
                       "['chainshare/vote/v2', chain_id, epoch, block_hash, height, round])) with epoch 0 (the genesis "
                       "validator set); signature = BLS12-381 "
                       "proof-of-possession scheme (G2 signatures), aggregate over the signers in the bitmap "
                       "(bit i = validators[i], little-endian within each byte).",
        "chain_id": CHAIN_ID,
        "validators": [{"bls_public_key": hx(v.public_key), "bls_pop": hx(v.pop)} for v in vals],
        "vote_message": hx(vote_message(CHAIN_ID, QC_BLOCK, QC_HEIGHT, QC_ROUND)),
        "vote_message_preimage": hx(codec.encode(["chainshare/vote/v2", CHAIN_ID, 0, QC_BLOCK, QC_HEIGHT, QC_ROUND])),
        "cases": out,
    }


# -- output -------------------------------------------------------------------------------------------

def build_all() -> dict[str, dict[str, Any]]:
    return {"merkle.json": merkle_vectors(), "transactions.json": transaction_vectors(),
            "blocks.json": block_vectors(), "qc.json": qc_vectors()}


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=1) + "\n"


def main() -> None:
    for name, content in build_all().items():
        path = HERE / name
        path.write_text(render(content))
        print(path)


if __name__ == "__main__":
    main()
