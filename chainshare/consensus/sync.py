"""Block-sync decisions: which of the finalized blocks a peer serves a node takes as final.

Pure functions over blocks, hashes and a QC verifier; the replica (``replica.py``, over the P2P
transport and LevelDB) and the simulator (``consensus/sim.py``) both call them, so the simulator
runs the rules the node runs (docs/consensus.md, "Block sync"). A QC alone does not prove a block
final (a certified block can be abandoned for a sibling); a served block is taken only when

- f + 1 validators of the set in force hold it among their finalized blocks (the serving peer,
  if it is one, and enough others), or
- the batch ends in a block the peer proves final by its 2-chain (``ledger.finality``), the blocks
  of the batch linking parent to child, the proof's QCs signed by the set that certified its last
  block.

Every block taken must also carry a QC of the set of its height and re-execute to its header: the
caller checks those (``checked``, the length of the leading run of blocks that passed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from chainshare.consensus.messages import BlsCrypto
from chainshare.ledger.finality import FinalityProof, is_finality_proof_of
from chainshare.ledger.types import Block, QuorumCertificate

__all__ = ["count_blocks_to_take", "decide_sync", "get_set_verifier", "count_confirmed", "count_needed_holders", "is_linked",
           "is_proof_for_batch", "proof_signatures_hold"]


def count_needed_holders(n: int, peer_is_validator: bool) -> int:
    """How many validators OTHER than the serving peer must hold a block: f + 1 of the set of
    ``n`` in all, the peer counting as one when it is a validator of that set."""
    f = (n - 1) // 3
    return f if peer_is_validator else f + 1


def count_confirmed(served: Sequence[bytes], answers: Sequence[Sequence[object]], needed: int) -> int:
    """How many leading blocks of the batch (``served``: their hashes, in height order) at least
    ``needed`` of the ``answers`` (each another validator's finalized hashes at the same heights,
    possibly shorter, possibly garbage) hold."""
    lists = [a if isinstance(a, (list, tuple)) else () for a in answers]
    count = 0
    for k, h in enumerate(served):
        if sum(1 for a in lists if k < len(a) and a[k] == h) < needed:
            break
        count += 1
    return count


def is_linked(blocks: Sequence[Block]) -> bool:
    """True iff each block is the parent of the next (blocks are committed one by one: a break in a
    batch must be seen before any of it is)."""
    return all(b.header.parent_hash == a.hash and b.height == a.height + 1
               for a, b in zip(blocks, blocks[1:], strict=False))


def is_proof_for_batch(proof: FinalityProof, served: Sequence[Block]) -> bool:
    """True iff ``proof`` has the shape of a 2-chain over the last block of ``served`` and the
    served blocks link to it (so it proves them all). Signatures: ``proof_signatures_hold``."""
    return bool(served) and is_linked(served) and is_finality_proof_of(proof, served[-1])


def proof_signatures_hold(proof: FinalityProof, verify_qc: Callable[[QuorumCertificate], bool]) -> bool:
    """True iff every QC of ``proof`` (each block's QC of its parent, and the final QC) verifies with
    ``verify_qc`` (the set that certified the proven block)."""
    return all(b.justify is not None and verify_qc(b.justify) for b in proof.blocks) and verify_qc(proof.qc)


def count_blocks_to_take(checked: int, batch_len: int, confirmed: int, proof_holds: bool) -> int:
    """How many leading blocks of a batch of ``batch_len`` to commit: all of them if every one was
    checked (QC and re-execution) and a finality proof of the last one holds (shape and
    signatures), else the checked ones that f + 1 validators confirmed."""
    if proof_holds and checked == batch_len:
        return checked
    return min(confirmed, checked)


def decide_sync(served: Sequence[Block], checked: int, answers: Sequence[Sequence[object]], needed: int,
                proof: FinalityProof | None, verify_proof_qc: Callable[[QuorumCertificate], bool]) -> int:
    """The whole decision over one served batch, for a caller that has every input at hand (the
    simulators; the replica gathers them over the network and calls the parts): ``checked`` leading
    blocks passed their QC and re-execution checks, ``answers`` are the other validators' finalized
    hashes at the batch's heights, ``needed`` of them must hold a block, ``proof`` is the peer's
    head proof (None if it serves none) checked with ``verify_proof_qc``. Returns how many leading
    blocks to commit."""
    confirmed = count_confirmed([b.hash for b in served], answers, needed)
    holds = (proof is not None and confirmed < len(served) and is_proof_for_batch(proof, served)
             and proof_signatures_hold(proof, verify_proof_qc))
    return count_blocks_to_take(checked, len(served), confirmed, holds)


@lru_cache(maxsize=64)
def get_set_verifier(chain_id: int, epoch: int, keys: tuple[bytes, ...]) -> BlsCrypto:
    """A verify-only crypto for the validator set of ``epoch`` with BLS public ``keys``, cached by
    all three (a scheduled set can be replaced by another of the same epoch number before it is
    active: each is verified with its own keys)."""
    return BlsCrypto(chain_id, list(keys), -1, None, epoch)
