"""What the indexer checks before it stores a block, with the ledger's own verification code.

A block is accepted only as the child of an already accepted block: its parent hash and height,
the validator set (the one whose hash the parent header commits to), the proposer of its view,
its transaction and receipt Merkle roots, the hash of the QC it carries, and the QC stored beside
it (a BLS aggregate of a quorum of that set). Block 0 must be the block the genesis document
computes to. No re-execution: the state transitions themselves are vouched for by the QC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chainshare.errors import ConsensusError
from chainshare.execution.contracts.membership import (
    ValidatorSet,
    compute_validator_set_hash,
    select_validator_set,
)
from chainshare.ledger.merkle import compute_root
from chainshare.ledger.quorum import compute_proposer_index, verify_qc
from chainshare.ledger.types import Block, Header, QuorumCertificate, Receipt, compute_justify_hash


@dataclass(frozen=True)
class FetchedBlock:
    """A block as a node serves it: the block, the QC that finalizes it, its receipts."""

    block: Block
    qc: QuorumCertificate | None
    receipts: tuple[Receipt, ...]


def find_validator_set(sets: Sequence[ValidatorSet], parent: Header) -> ValidatorSet | None:
    """The set in force at ``parent.height + 1`` if its hash is the one ``parent`` commits to."""
    vs = select_validator_set(list(sets), parent.height + 1)
    return vs if compute_validator_set_hash(vs.validators) == parent.validator_set_hash else None


def verify_block(parent: Header, fetched: FetchedBlock, vs: ValidatorSet, chain_id: int) -> None:
    """Raise ConsensusError unless ``fetched`` is a finalized child of ``parent`` certified by ``vs``."""
    block, qc, receipts = fetched.block, fetched.qc, fetched.receipts
    h = block.header
    where = f"block {h.height}"
    if h.height != parent.height + 1 or h.parent_hash != parent.hash:
        raise ConsensusError(f"{where} does not extend the indexed block {parent.height} (parent hash differs)")
    if compute_validator_set_hash(vs.validators) != parent.validator_set_hash:
        raise ConsensusError(f"{where}: validator set {vs.epoch} is not the set block {parent.height} commits to")
    validators: list[dict[str, Any]] = list(vs.validators)
    if h.proposer != validators[compute_proposer_index(h.round, len(validators))]["address"]:
        raise ConsensusError(f"{where}: proposer is not the leader of view {h.round}")
    if compute_root(block.transactions) != h.tx_root:
        raise ConsensusError(f"{where}: transactions do not match the header's tx root")
    if len(receipts) != len(block.transactions):
        raise ConsensusError(f"{where}: {len(receipts)} receipts for {len(block.transactions)} transactions")
    if compute_root([r.encode() for r in receipts]) != h.receipts_root:
        raise ConsensusError(f"{where}: receipts do not match the header's receipts root")
    if compute_justify_hash(block.justify, block.timeout_cert) != h.justify_hash:
        raise ConsensusError(f"{where}: the QC it carries is not the one its header commits to")
    if qc is None:
        raise ConsensusError(f"{where}: served without the QC that finalizes it")
    if qc.block_hash != block.hash or qc.height != h.height or qc.round != h.round:
        raise ConsensusError(f"{where}: its QC certifies another block")
    try:
        verify_qc(qc, validators, chain_id, vs.epoch)
    except ConsensusError as exc:
        raise ConsensusError(f"{where}: QC does not verify against validator set {vs.epoch}: {exc.message}") from exc
