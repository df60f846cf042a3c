"""Signed consensus votes, proposals and quorum certificates, verifiable offline from a validator set.

What a validator signs is domain-separated by purpose, chain id and validator-set epoch, so a
signature for one network, one purpose or one validator set can never be replayed as another
(epoch 0 is the genesis set; each Governance change of the set starts the next epoch). This module
is the one definition of those messages: the consensus core signs them, the ledger's verifier and
the Evidence contract check them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConsensusError
from chainshare.ledger.types import QuorumCertificate, decode_bytes, decode_fields, decode_uint, make_bitmap

HASH_SIZE = 32


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


def proposal_message(chain_id: int, block_hash: bytes, epoch: int = 0) -> bytes:
    return keccak256(codec.encode(["chainshare/proposal/v2", chain_id, epoch, block_hash]))


def vote_message(chain_id: int, block_hash: bytes, height: int, round: int, epoch: int = 0) -> bytes:
    return keccak256(codec.encode(["chainshare/vote/v2", chain_id, epoch, block_hash, height, round]))


def timeout_message(chain_id: int, view: int, high_qc_view: int, epoch: int = 0) -> bytes:
    """The 32-byte digest a validator signs to time out in ``view`` holding a QC of ``high_qc_view``."""
    return keccak256(codec.encode(["chainshare/timeout/v2", chain_id, epoch, view, high_qc_view]))


def sign_proposal(secret_key: bytes, chain_id: int, block_hash: bytes, epoch: int = 0) -> bytes:
    return bls.sign(secret_key, proposal_message(chain_id, block_hash, epoch))


def verify_proposal_signature(public_key: bytes, chain_id: int, block_hash: bytes, signature: bytes,
                              epoch: int = 0) -> bool:
    return bls.verify(public_key, proposal_message(chain_id, block_hash, epoch), signature)


def sign_vote(secret_key: bytes, chain_id: int, block_hash: bytes, height: int, round: int, epoch: int = 0) -> bytes:
    return bls.sign(secret_key, vote_message(chain_id, block_hash, height, round, epoch))


def aggregate_qc(block_hash: bytes, height: int, round: int, votes: dict[int, bytes], n: int) -> QuorumCertificate:
    """Aggregate votes {validator index: signature} into a QC (caller checks each vote first)."""
    indices = sorted(votes)
    return QuorumCertificate(block_hash, height, round, make_bitmap(indices, n),
                             bls.aggregate([votes[i] for i in indices]))


def verify_qc(qc: QuorumCertificate, validators: Sequence[dict[str, Any]], chain_id: int, epoch: int = 0) -> None:
    """Raise ConsensusError unless ``qc`` carries >= quorum valid signatures of ``validators``
    (the set of ``epoch``)."""
    n = len(validators)
    if len(qc.signers) != (n + 7) // 8:
        raise ConsensusError(f"QC signer bitmap has {len(qc.signers)} bytes, expected {(n + 7) // 8}")
    indices = qc.signer_indices()
    if any(i >= n for i in indices):
        raise ConsensusError("QC names a signer outside the validator set")
    if len(indices) < compute_quorum(n):
        raise ConsensusError(f"QC has {len(indices)} signers, quorum is {compute_quorum(n)} of {n}")
    pks = [validators[i]["bls_public_key"] for i in indices]
    if not bls.verify_aggregate_same_message(pks, vote_message(chain_id, qc.block_hash, qc.height, qc.round, epoch),
                                             qc.signature):
        raise ConsensusError(f"QC for block {qc.height} has an invalid aggregate signature")


@dataclass(frozen=True)
class Vote:
    """Validator ``voter``'s signature on (block_hash, height, view): one share of a QC."""

    block_hash: bytes
    height: int
    view: int
    voter: int
    signature: bytes

    def to_list(self) -> list[Any]:
        return [self.block_hash, self.height, self.view, self.voter, self.signature]

    @classmethod
    def from_list(cls, v: Any) -> Vote:
        f = decode_fields(v, 5, "vote")
        return cls(decode_bytes(f[0], HASH_SIZE, "vote.block_hash"), decode_uint(f[1], "vote.height"),
                   decode_uint(f[2], "vote.view"), decode_uint(f[3], "vote.voter"),
                   decode_bytes(f[4], bls.SIGNATURE_SIZE, "vote.signature"))

    def verify(self, public_key: bytes, chain_id: int, epoch: int = 0) -> bool:
        return bls.verify(public_key, vote_message(chain_id, self.block_hash, self.height, self.view, epoch),
                          self.signature)
