"""Finality proofs: what shows, beyond a QC, that a block is final (docs/consensus.md, rule 4).

A QC only certifies a block; a certified block can still be abandoned for a sibling. A block B is
final once a QC certifies a block B' that extends it with ``B'.view == parent(B').view + 1`` (the
2-chain). Inside a stored chain that is visible wherever consecutive blocks have consecutive views;
the last blocks of a chain need the 2-chain kept beside it: the replica stores, with every commit, the
blocks that extend its head (the empty suffix past the last block of a validator set, if any, then the
certified child) and the QC on the last of them. This module is the one definition of that proof, used
by the replica (to keep and serve it, and to judge one a peer serves) and by ``chain verify``.

Only shapes are checked here (links, heights, views); signatures are checked by the caller against
the validator set that certified the proven block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chainshare import codec
from chainshare.errors import DecodeError
from chainshare.ledger.types import Block, QuorumCertificate, decode_fields


@dataclass(frozen=True)
class FinalityProof:
    """``blocks`` extend the proven block (each carrying its parent's QC); ``qc`` certifies the last
    of them, whose view is its parent's + 1."""

    blocks: tuple[Block, ...]
    qc: QuorumCertificate

    @property
    def proven_hash(self) -> bytes:
        """The hash of the block this proof shows final: the parent of its first block."""
        return self.blocks[0].header.parent_hash

    @property
    def proven_height(self) -> int:
        return self.blocks[0].height - 1


def encode_finality_proof(tail: Sequence[Block], child: Block, qc: QuorumCertificate) -> bytes:
    """The stored and served form: [suffix blocks, certified child, its QC], canonical msgpack."""
    return codec.encode([[b.encode() for b in tail], child.encode(), qc.encode()])


def decode_finality_proof(raw: bytes) -> FinalityProof:
    """Decode a stored or served proof; raises DecodeError on anything malformed."""
    try:
        tail, child, qc = decode_fields(codec.decode(raw), 3, "finality proof")
        if not isinstance(tail, list):
            raise DecodeError("finality proof: the suffix must be an array")
        blocks = tuple(Block.decode(b) for b in tail) + (Block.decode(child),)
        return FinalityProof(blocks, QuorumCertificate.from_list(codec.decode(qc)))
    except (TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"finality proof: {exc}") from exc


def is_finality_proof_of(proof: FinalityProof, block: Block) -> bool:
    """True iff ``proof`` has the shape of a 2-chain over ``block``: its blocks link to ``block`` one
    by one, each carrying its parent's QC, and ``proof.qc`` certifies the last one, whose view is
    its parent's + 1 (the signatures still have to be checked)."""
    parent = block
    for b in proof.blocks:
        if (b.header.parent_hash != parent.hash or b.height != parent.height + 1 or b.justify is None
                or b.justify.block_hash != parent.hash or b.justify.height != parent.height
                or b.justify.round != parent.header.round):
            return False
        parent = b
    last = proof.blocks[-1]
    grandparent = proof.blocks[-2] if len(proof.blocks) > 1 else block
    return (proof.qc.block_hash == last.hash and proof.qc.height == last.height
            and proof.qc.round == last.header.round and last.header.round == grandparent.header.round + 1)


def is_two_chain(parent: Block, child: Block) -> bool:
    """True iff a QC on ``child`` finalizes ``parent``: child extends parent in the next view."""
    return child.header.parent_hash == parent.hash and child.header.round == parent.header.round + 1
