"""Evidence: equivocations by validators, recorded on chain for auditors.

Any member account (in practice the node that caught it) reports two conflicting messages signed
by one validator in one view: a double vote (two votes for different blocks), a double proposal
(two different block headers from the leader of the view) or a double timeout (two timeouts for
the view reporting different high-QC views). The contract verifies both BLS
signatures against the validator set of the report's epoch (``ledger.quorum``: the same messages
the consensus core signs) and records each (epoch, view, validator, kind) once, as an
``EquivocationRecorded`` event. Consensus safety never depends on this record: it names who
misbehaved so the consortium can act (for example retire the validator through Governance).

The report is canonical msgpack ``[kind, epoch, first, second]``: for ``double-vote`` each message
is a vote ``[block_hash, height, view, voter, signature]``; for ``double-proposal`` each is
``[header fields, proposer signature]``; for ``double-timeout`` each is ``[view, high_qc_view, voter,
signature]`` (what a timeout signs, ``ledger.quorum.timeout_message``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.errors import DecodeError
from chainshare.execution.contracts.addresses import EVIDENCE
from chainshare.execution.contracts.membership import get_validator_sets
from chainshare.execution.runtime import (
    G_BLS_VERIFY,
    G_SLOAD,
    CallContext,
    Revert,
    SystemContract,
    event,
    method,
)
from chainshare.ledger.quorum import Vote, compute_proposer_index, proposal_message, timeout_message
from chainshare.ledger.types import Header, decode_fields, decode_uint

DOUBLE_VOTE = "double-vote"
DOUBLE_PROPOSAL = "double-proposal"
DOUBLE_TIMEOUT = "double-timeout"
MAX_REPORT = 4096
K_COUNT = b"count"
K_RECORD = b"r:"


@dataclass(frozen=True)
class Equivocation:
    """A verified report: who signed twice, where, and the hash of the report bytes."""

    kind: str
    epoch: int
    view: int
    offender: int
    evidence_hash: bytes


def encode_report(kind: str, epoch: int, first: list[Any], second: list[Any]) -> bytes:
    return codec.encode([kind, epoch, first, second])


def verify_report(state: Any, chain_id: int, report: bytes) -> tuple[Equivocation, dict[str, Any]]:
    """Decode and verify ``report``; returns the equivocation and the offending validator's record.
    Raises Revert with the reason when it proves nothing."""
    try:
        kind, epoch, first, second = decode_fields(codec.decode(report), 4, "evidence")
        epoch = decode_uint(epoch, "evidence.epoch")
        sets = get_validator_sets(state)
        if epoch >= len(sets):
            raise Revert(f"no validator set {epoch} on this chain")
        validators = sets[epoch].validators
        if kind == DOUBLE_VOTE:
            a, b = Vote.from_list(first), Vote.from_list(second)
            if a.voter != b.voter or a.view != b.view:
                raise Revert("the two votes are not by one validator in one view")
            if (a.block_hash, a.height) == (b.block_hash, b.height):
                raise Revert("the two votes are for the same block: no equivocation")
            if a.voter >= len(validators):
                raise Revert(f"validator set {epoch} has no validator {a.voter}")
            pk = validators[a.voter]["bls_public_key"]
            if not (a.verify(pk, chain_id, epoch) and b.verify(pk, chain_id, epoch)):
                raise Revert("a vote signature does not verify")
            found = Equivocation(DOUBLE_VOTE, epoch, a.view, a.voter, keccak256(report))
        elif kind == DOUBLE_PROPOSAL:
            (ha, sa), (hb, sb) = (decode_fields(first, 2, "proposal"), decode_fields(second, 2, "proposal"))
            header_a, header_b = Header.from_list(ha), Header.from_list(hb)
            if header_a.round != header_b.round:
                raise Revert("the two proposals are not for one view")
            if header_a.hash == header_b.hash:
                raise Revert("the two proposals are the same block: no equivocation")
            leader = compute_proposer_index(header_a.round, len(validators))
            pk = validators[leader]["bls_public_key"]
            if not all(isinstance(s, bytes) and bls.verify(pk, proposal_message(chain_id, h.hash, epoch), s)
                       for h, s in ((header_a, sa), (header_b, sb))):
                raise Revert("a proposal signature does not verify")
            found = Equivocation(DOUBLE_PROPOSAL, epoch, header_a.round, leader, keccak256(report))
        elif kind == DOUBLE_TIMEOUT:
            (va, ha, ia, sa), (vb, hb, ib, sb) = (decode_fields(first, 4, "timeout"), decode_fields(second, 4, "timeout"))
            va, ha, ia, vb, hb, ib = (decode_uint(x, "timeout field") for x in (va, ha, ia, vb, hb, ib))
            if ia != ib or va != vb:
                raise Revert("the two timeouts are not by one validator for one view")
            if ha == hb:
                raise Revert("the two timeouts report the same high-QC view: no equivocation")
            if ia >= len(validators):
                raise Revert(f"validator set {epoch} has no validator {ia}")
            pk = validators[ia]["bls_public_key"]
            if not all(isinstance(s, bytes) and bls.verify(pk, timeout_message(chain_id, va, h, epoch), s)
                       for h, s in ((ha, sa), (hb, sb))):
                raise Revert("a timeout signature does not verify")
            found = Equivocation(DOUBLE_TIMEOUT, epoch, va, ia, keccak256(report))
        else:
            raise Revert(f"unknown evidence kind {kind!r}: use {DOUBLE_VOTE!r}, {DOUBLE_PROPOSAL!r} "
                         f"or {DOUBLE_TIMEOUT!r}")
    except DecodeError as exc:
        raise Revert(f"malformed evidence: {exc.message}") from exc
    return found, validators[found.offender]


class Evidence(SystemContract):
    NAME = "Evidence"
    ADDRESS = EVIDENCE
    E_RECORDED = event("EquivocationRecorded(uint256 indexed epoch, uint256 indexed view, string validator, "
                       "string agency, string kind, bytes32 evidenceHash, address reporter)")
    EVENTS = (E_RECORDED,)

    @method("report(bytes evidence)", returns="uint256 id")
    def report(self, ctx: CallContext, evidence: bytes) -> int:
        if len(evidence) > MAX_REPORT:
            raise Revert(f"evidence is at most {MAX_REPORT} bytes")
        ctx.charge(2 * G_BLS_VERIFY + 2 * G_SLOAD)
        found, offender = verify_report(ctx.state, ctx.env.chain_id, evidence)
        key = K_RECORD + codec.encode([found.kind, found.epoch, found.view, found.offender])
        if ctx.sload(key) is not None:
            raise Revert(f"this {found.kind} of {offender['name']} in view {found.view} is already recorded")
        raw = ctx.sload(K_COUNT)
        record_id = (int.from_bytes(raw, "big") if raw else 0) + 1
        ctx.sstore(K_COUNT, record_id.to_bytes(8, "big"))
        ctx.sstore(key, record_id.to_bytes(8, "big") + ctx.env.height.to_bytes(8, "big"))
        ctx.emit(self.E_RECORDED, found.epoch, found.view, offender["name"], offender["agency"], found.kind,
                 found.evidence_hash, "0x" + ctx.sender.hex())
        return record_id

    @method("count()", returns="uint256", view=True)
    def count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_COUNT)
        return int.from_bytes(raw, "big") if raw else 0
