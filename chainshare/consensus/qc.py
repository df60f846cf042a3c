"""Signed consensus messages and quorum certificates, verifiable offline from the validator set.

Messages are domain-separated by purpose and chain id, so a signature for one network or one
purpose can never be replayed as another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chainshare import codec
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConsensusError
from chainshare.ledger.types import QuorumCertificate, make_bitmap


def compute_quorum(n: int) -> int:
    """n - f with f = (n - 1) // 3: equals 2f+1 at n = 3f+1, and for every n any two quorums
    share at least one honest validator."""
    return n - (n - 1) // 3


def compute_proposer_index(view: int, n: int) -> int:
    """PoA rotation: the leader of view v (a block header's ``round``) is validators[v mod n].

    Views only grow, across heights and timeouts alike, so every honest validator agrees on the
    leader of a view whatever QC it holds (a (height + round) rule would make the leader depend on
    which parent a validator believes in, costing liveness after a view change)."""
    return view % n


def proposal_message(chain_id: int, block_hash: bytes) -> bytes:
    return keccak256(codec.encode(["chainshare/proposal/v1", chain_id, block_hash]))


def vote_message(chain_id: int, block_hash: bytes, height: int, round: int) -> bytes:
    return keccak256(codec.encode(["chainshare/vote/v1", chain_id, block_hash, height, round]))


def sign_proposal(secret_key: bytes, chain_id: int, block_hash: bytes) -> bytes:
    return bls.sign(secret_key, proposal_message(chain_id, block_hash))


def verify_proposal_signature(public_key: bytes, chain_id: int, block_hash: bytes, signature: bytes) -> bool:
    return bls.verify(public_key, proposal_message(chain_id, block_hash), signature)


def sign_vote(secret_key: bytes, chain_id: int, block_hash: bytes, height: int, round: int) -> bytes:
    return bls.sign(secret_key, vote_message(chain_id, block_hash, height, round))


def aggregate_qc(block_hash: bytes, height: int, round: int, votes: dict[int, bytes], n: int) -> QuorumCertificate:
    """Aggregate votes {validator index: signature} into a QC (caller checks each vote first)."""
    indices = sorted(votes)
    return QuorumCertificate(block_hash, height, round, make_bitmap(indices, n),
                             bls.aggregate([votes[i] for i in indices]))


def verify_qc(qc: QuorumCertificate, validators: Sequence[dict[str, Any]], chain_id: int) -> None:
    """Raise ConsensusError unless ``qc`` carries >= quorum valid signatures of ``validators``."""
    n = len(validators)
    if len(qc.signers) != (n + 7) // 8:
        raise ConsensusError(f"QC signer bitmap has {len(qc.signers)} bytes, expected {(n + 7) // 8}")
    indices = qc.signer_indices()
    if any(i >= n for i in indices):
        raise ConsensusError("QC names a signer outside the validator set")
    if len(indices) < compute_quorum(n):
        raise ConsensusError(f"QC has {len(indices)} signers, quorum is {compute_quorum(n)} of {n}")
    pks = [validators[i]["bls_public_key"] for i in indices]
    if not bls.verify_aggregate_same_message(pks, vote_message(chain_id, qc.block_hash, qc.height, qc.round),
                                             qc.signature):
        raise ConsensusError(f"QC for block {qc.height} has an invalid aggregate signature")
