"""Evidence of equivocation: two conflicting messages signed by one validator for one view.

Three kinds are recognised: a double vote (two votes by one validator in one view for different
blocks), a double proposal (two different blocks signed by the leader of one view) and a double
timeout (two timeouts by one validator for one view reporting different high-QC views: an honest
validator re-sends the one it persisted, even after a restart). An
``Evidence`` holds both signed messages, so anyone with the validator set checks it with
``verify_evidence`` and nothing else; ``to_report`` gives the bytes the Evidence system contract
verifies and records on chain. Safety never depends on evidence: it only names who misbehaved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.consensus.messages import Crypto, Timeout, Vote
from chainshare.errors import DecodeError
from chainshare.execution.contracts.evidence import (
    DOUBLE_PROPOSAL,
    DOUBLE_TIMEOUT,
    DOUBLE_VOTE,
    encode_report,
)
from chainshare.ledger.quorum import compute_proposer_index
from chainshare.ledger.types import Block


@dataclass(frozen=True)
class Evidence:
    """Both signed messages of one equivocation by validator ``offender`` in ``view``."""

    kind: str
    first: Vote | Block | Timeout
    second: Vote | Block | Timeout

    @property
    def view(self) -> int:
        return self.first.view if isinstance(self.first, (Vote, Timeout)) else self.first.header.round

    def get_offender(self, n: int) -> int:
        """The index of the validator that signed both messages (in a set of ``n``)."""
        if isinstance(self.first, (Vote, Timeout)):
            return self.first.voter
        return compute_proposer_index(self.first.header.round, n)

    def to_list(self) -> list[Any]:
        return [self.kind, self.first.to_list(), self.second.to_list()]

    @classmethod
    def from_list(cls, v: Any) -> Evidence:
        if not isinstance(v, list) or len(v) != 3:
            raise DecodeError("evidence must be an array of 3 fields")
        if v[0] == DOUBLE_VOTE:
            return cls(DOUBLE_VOTE, Vote.from_list(v[1]), Vote.from_list(v[2]))
        if v[0] == DOUBLE_PROPOSAL:
            return cls(DOUBLE_PROPOSAL, Block.from_list(v[1]), Block.from_list(v[2]))
        if v[0] == DOUBLE_TIMEOUT:
            return cls(DOUBLE_TIMEOUT, Timeout.from_list(v[1]), Timeout.from_list(v[2]))
        raise DecodeError(f"unknown evidence kind {v[0]!r}")

    def encode(self) -> bytes:
        return codec.encode(self.to_list())

    def to_report(self, epoch: int) -> bytes:
        """The report ``Evidence.report`` takes: both signed messages (block headers only: the
        proposer signs the header hash), for validator set ``epoch``."""
        if isinstance(self.first, Vote) and isinstance(self.second, Vote):
            return encode_report(self.kind, epoch, self.first.to_list(), self.second.to_list())
        if isinstance(self.first, Timeout) and isinstance(self.second, Timeout):
            return encode_report(self.kind, epoch, *([t.view, t.high_qc_view, t.voter, t.signature]
                                                     for t in (self.first, self.second)))
        assert isinstance(self.first, Block) and isinstance(self.second, Block)
        return encode_report(self.kind, epoch, [self.first.header.to_list(), self.first.signature],
                             [self.second.header.to_list(), self.second.signature])

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        return cls.from_list(codec.decode(data))


def check_double_vote(first: Vote, second: Vote) -> Evidence | None:
    """Evidence if two (already verified) votes are one voter's conflicting votes in one view."""
    if first.voter != second.voter or first.view != second.view:
        return None
    if (first.block_hash, first.height) == (second.block_hash, second.height):
        return None
    return Evidence(DOUBLE_VOTE, first, second)


def check_double_timeout(first: Timeout, second: Timeout) -> Evidence | None:
    """Evidence if two (already verified) timeouts are one validator's for one view with different
    signed content (the high-QC view: the only other field its signature covers)."""
    if first.voter != second.voter or first.view != second.view or first.high_qc_view == second.high_qc_view:
        return None
    return Evidence(DOUBLE_TIMEOUT, first, second)


def check_double_proposal(first: Block, second: Block) -> Evidence | None:
    """Evidence if two (already verified) signed blocks are different proposals for one view."""
    if first.header.round != second.header.round or first.hash == second.hash:
        return None
    return Evidence(DOUBLE_PROPOSAL, first, second)


def verify_evidence(evidence: Evidence, crypto: Crypto, n: int) -> bool:
    """True iff ``evidence`` proves an equivocation: both messages validly signed by one validator
    of a set of ``n``, same view, different content."""
    first, second = evidence.first, evidence.second
    if evidence.kind == DOUBLE_VOTE and isinstance(first, Vote) and isinstance(second, Vote):
        return (check_double_vote(first, second) is not None and first.voter < n
                and crypto.verify_vote(first) and crypto.verify_vote(second))
    if evidence.kind == DOUBLE_TIMEOUT and isinstance(first, Timeout) and isinstance(second, Timeout):
        return (check_double_timeout(first, second) is not None and first.voter < n
                and crypto.verify_timeout(first) and crypto.verify_timeout(second))
    if evidence.kind == DOUBLE_PROPOSAL and isinstance(first, Block) and isinstance(second, Block):
        leader = compute_proposer_index(first.header.round, n)
        return (check_double_proposal(first, second) is not None
                and crypto.verify_proposal(leader, first.hash, first.signature)
                and crypto.verify_proposal(leader, second.hash, second.signature))
    return False
