"""The consensus core: Jolteon / DiemBFT-v4 2-chain BFT as a pure, deterministic state machine.

``step(state, event) -> (state, actions)`` is the whole interface. It does no I/O, reads no clock,
draws no randomness and keeps no globals: the same state and event always give the same result,
and the input state is never modified. Everything with an effect is an ``Action`` for the
environment (the node, or the simulator) to carry out, in list order:

- ``PersistSafety`` must be written durably BEFORE any action after it in the same list is carried
  out: "write what you are about to sign before sending it". A crash between the write and the
  sends is safe; a send before the write is not.
- ``Broadcast`` / ``SendTo`` put a message on the wire (``Broadcast`` = every validator but this one).
- ``BuildProposal`` asks for a block (answer: ``ProposalBuilt``); ``ValidateBlock`` asks for a block's
  re-execution (answer: ``BlockValidated``); ``ScheduleTimeout`` asks for a ``LocalTimeout`` later;
  ``FetchBlock`` asks a peer for a block (answer: ``ProposalReceived`` carrying it).
- ``Commit`` hands over finalized blocks, in height order, each with the QC that certifies it and
  the 2-chain proof; ``RecordEvidence`` hands over proof of an equivocation.

The rules of docs/consensus.md, literally (names in brackets are the functions):
1. propose [try_propose]: the leader of view v, once it entered v by QC(v-1) or TC(v-1), asks for
   a block extending ``highest_qc.block`` that carries ``highest_qc`` and, if it entered by TC, the TC;
2. vote [is_safe_to_vote]: only if ``v > highest_voted_view`` and ``v > B.qc.view`` and
   (``v == B.qc.view + 1`` or B carries TC(v-1) with ``B.qc.view >= max(TC.high_qc_views)``), and
   only for a block the environment re-executed successfully; the vote goes to Leader(v+1);
3. timeout [on_local_timeout]: ``highest_voted_view = max(it, v)``, broadcast Timeout(v, highest_qc);
   q timeouts form a TC; a QC or TC for view v moves the validator to v+1 [advance_view];
4. commit [check_commit]: a QC for B' whose parent B has ``B'.view == B.view + 1`` finalizes B and
   its ancestors;
5. ``highest_qc`` is updated from every verified QC [process_qc]: in proposals, aggregated votes,
   timeouts, TCs and QC announcements.
The leader of view v is ``validators[v mod n]`` (``qc.compute_proposer_index``); a block's view is
its header's ``round``. The genesis block is certified by an implicit QC of view 0 (``None``).

Beyond the five rules, for liveness only (none of it can make a validator sign what the rules
forbid): the validator that aggregates a QC broadcasts it at once [on_vote] and the others learn
it [on_qc_announcement], so they commit and enter the next view without waiting for the next
proposal; f+1 timeouts for the current view make a validator time out too; a timeout carries the
TC its sender entered the view by, and ``SafetyData`` keeps that TC across a restart; a block
whose parent is unknown is fetched from the validator that sent it; a block that failed
validation is fetched again from a signer of its QC once it is certified (a relay may have
altered its body: the header hash covers the transactions only through the roots the
environment checks), and a TC stripped from a copy is taken from a later copy.

Bounds, so that no peer can make the state grow without limit: votes, timeouts and proposals for
views beyond ``view + future_views`` are not buffered, but the QC and TC a proposal or timeout
carries are verified and learned first (they verify on their own), which is how a validator that
was down for many views catches up from one message; votes older than ``view - 1`` and timeouts
older than ``view`` are dropped; at most one proposal per view enters the block tree unless it is
a block this validator asked for; blocks whose parent is unknown wait in a buffer of
``max_orphans`` (a validator more than that many blocks behind must be brought up by a block sync
and ``restore_core`` on the synced head); the tree holds at most ``max_blocks`` uncommitted
blocks. A dropped message is simply ignored: ``step`` never raises on any input the network can
produce.

Restart: ``restore_core`` rebuilds a core from the last persisted ``SafetyData`` and the committed
chain head; the restored core never votes in a view at or below the persisted
``highest_voted_view`` (a timeout there is allowed: rule 3 only needs ``v >= highest_voted_view``),
so a SIGKILL at any moment cannot make it sign two conflicting votes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chainshare import codec
from chainshare.consensus.evidence import (
    Evidence,
    check_double_proposal,
    check_double_timeout,
    check_double_vote,
)
from chainshare.consensus.messages import (
    Crypto,
    Message,
    Proposal,
    QcAnnouncement,
    Timeout,
    TimeoutCertificate,
    Vote,
    check_tc_shape,
    decode_block_tc,
    get_qc_view,
)
from chainshare.errors import ConsensusError, DecodeError
from chainshare.execution.contracts.evidence import DOUBLE_PROPOSAL, DOUBLE_TIMEOUT, DOUBLE_VOTE
from chainshare.ledger import quorum as ledger_quorum
from chainshare.ledger.quorum import compute_proposer_index
from chainshare.ledger.types import Block, QuorumCertificate, compute_justify_hash

__all__ = [
    "Action", "BlockEntry", "BlockStatus", "BlockValidated", "Broadcast", "BuildProposal", "Commit",
    "CommittedBlock", "CoreConfig", "CoreState", "Event", "FetchBlock", "FinalityProof", "LocalTimeout",
    "PersistSafety", "ProposalBuilt", "ProposalReceived", "QcReceived", "RecordEvidence", "SafetyData",
    "ScheduleTimeout", "SendTo", "Start", "TimeoutReceived", "ValidateBlock", "VoteReceived", "compute_timeout_ms",
    "event_of", "initial_state", "is_safe_to_vote", "restore_core", "step",
]


# -- configuration and persisted safety data -----------------------------------------------------

@dataclass(frozen=True)
class CoreConfig:
    """Static parameters of one validator's core.

    ``validators[i]`` is validator i's 20-byte address (a block's ``header.proposer``); ``index`` is
    this validator. The ``unsafe_*`` switches break a safety rule on purpose: they exist ONLY so the
    tests can show that each rule is needed, and must never be set in a node."""

    chain_id: int
    validators: tuple[bytes, ...]
    index: int
    base_timeout_ms: int = 1000
    max_timeout_ms: int = 60_000
    future_views: int = 64
    max_orphans: int = 64
    max_blocks: int = 1024
    unsafe_skip_tc_rule: bool = False
    unsafe_skip_highest_voted_view_check: bool = False

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """n - f: equal to docs/consensus.md's 2f+1 when n = 3f+1, and still a safe quorum (any two
        share f+1 validators, so an honest one) when n is not of that form, where 2f+1 is not."""
        return ledger_quorum.compute_quorum(self.n)

    def leader(self, view: int) -> int:
        return compute_proposer_index(view, self.n)


@dataclass(frozen=True)
class SafetyData:
    """What a validator persists before it signs: the last view it voted or timed out in, and the
    highest QC it held then (docs/consensus.md's safety state), ``last_timeout``, the timeout it
    signed in its current view if any (after a restart it re-sends that one, never a second timeout
    for the view with another high-QC view: two would be evidence of equivocation), plus
    ``last_tc``, the TC by which it
    entered its current view if it entered by timeout. ``last_tc`` is for liveness only: after a
    restart the validator still holds the certificate of the view it resumes in, and its timeouts
    carry it to validators that are behind (without it, validators restarted in different views
    could each wait for the others forever). Canonically encoded for the node's durable store."""

    highest_voted_view: int
    highest_qc: QuorumCertificate | None
    last_tc: TimeoutCertificate | None = None
    last_timeout: Timeout | None = None

    def to_list(self) -> list[Any]:
        return [self.highest_voted_view, self.highest_qc.to_list() if self.highest_qc is not None else None,
                self.last_tc.to_list() if self.last_tc is not None else None,
                self.last_timeout.to_list() if self.last_timeout is not None else None]

    @classmethod
    def from_list(cls, v: Any) -> SafetyData:
        if not isinstance(v, list) or len(v) not in (3, 4):   # 3: written before last_timeout was kept
            raise DecodeError("safety data must be an array of 4 fields")
        hvv = v[0]
        if not isinstance(hvv, int) or isinstance(hvv, bool) or hvv < 0:
            raise DecodeError("highest_voted_view must be a non-negative integer")
        timeout = Timeout.from_list(v[3]) if len(v) == 4 and v[3] is not None else None
        return cls(hvv, QuorumCertificate.from_list(v[1]) if v[1] is not None else None,
                   TimeoutCertificate.from_list(v[2]) if v[2] is not None else None, timeout)

    def encode(self) -> bytes:
        return codec.encode(self.to_list())

    @classmethod
    def decode(cls, data: bytes) -> SafetyData:
        return cls.from_list(codec.decode(data))


# -- events (inputs) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """The environment is ready: arm the timer of the current view, propose if leader."""


@dataclass(frozen=True)
class ProposalReceived:
    """A proposal from validator ``sender`` (also the answer to ``FetchBlock``)."""

    proposal: Proposal
    sender: int


@dataclass(frozen=True)
class VoteReceived:
    vote: Vote


@dataclass(frozen=True)
class TimeoutReceived:
    timeout: Timeout


@dataclass(frozen=True)
class QcReceived:
    """A QC announced by the validator that aggregated it."""

    announcement: QcAnnouncement


@dataclass(frozen=True)
class LocalTimeout:
    """The timer armed by ``ScheduleTimeout(view, ...)`` fired."""

    view: int


@dataclass(frozen=True)
class ProposalBuilt:
    """The answer to ``BuildProposal``: the executed, unsigned block (the core signs it)."""

    block: Block


@dataclass(frozen=True)
class BlockValidated:
    """The answer to ``ValidateBlock``: whether the block re-executed to its header."""

    block_hash: bytes
    ok: bool


Event = (Start | ProposalReceived | VoteReceived | TimeoutReceived | QcReceived | LocalTimeout | ProposalBuilt
         | BlockValidated)


def event_of(message: Message, sender: int) -> Event:
    """The event a consensus message from validator ``sender`` (its index in the set) is for the core."""
    if isinstance(message, Proposal):
        return ProposalReceived(message, sender)
    if isinstance(message, Vote):
        return VoteReceived(message)
    if isinstance(message, Timeout):
        return TimeoutReceived(message)
    return QcReceived(message)


# -- actions (outputs) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Broadcast:
    """Send ``message`` to every validator except this one."""

    message: Message


@dataclass(frozen=True)
class SendTo:
    index: int
    message: Message


@dataclass(frozen=True)
class PersistSafety:
    """Write ``data`` durably (fsync) BEFORE carrying out any later action of the same list, and
    with it ``block`` when set: the block this validator is about to vote for. Keep such blocks
    (by hash) until they are committed or fall below the committed head, serve them to peers'
    ``FetchBlock``, and hand them back to ``restore_core`` after a restart: a certified block is
    then always held by an honest validator, even if every validator crashed since."""

    data: SafetyData
    block: Block | None = None


@dataclass(frozen=True)
class BuildProposal:
    """Build and execute a block for ``view`` on ``parent``: header.parent_hash = parent.hash,
    height = parent.height + 1, round = view, proposer = this validator's address,
    justify_hash = compute_justify_hash(justify, encoded TC); block.justify = justify,
    block.timeout_cert = timeout_cert.encode() (None if None), signature empty. Answer
    ``ProposalBuilt``. ``parent`` is the committed head or a block this core already had
    validated, so its executed state exists."""

    view: int
    parent: Block
    justify: QuorumCertificate | None
    timeout_cert: TimeoutCertificate | None


@dataclass(frozen=True)
class ValidateBlock:
    """Re-execute ``block`` on its parent's state and answer ``BlockValidated``. Its parent is the
    committed head or a block already validated ok, so its executed state exists."""

    block: Block


@dataclass(frozen=True)
class ScheduleTimeout:
    """Deliver ``LocalTimeout(view)`` after ``duration_ms`` (a later schedule does not cancel an
    earlier one: a stale ``LocalTimeout`` is ignored)."""

    view: int
    duration_ms: int


@dataclass(frozen=True)
class CommittedBlock:
    """A finalized block and the QC that certifies it (carried by its child)."""

    block: Block
    qc: QuorumCertificate


@dataclass(frozen=True)
class FinalityProof:
    """The 2-chain: ``block`` (B') is certified by ``qc``, and B'.view == parent.view + 1."""

    block: Block
    qc: QuorumCertificate


@dataclass(frozen=True)
class Commit:
    """``blocks`` are final, in height order, extending the previous commit's last block; the
    parent of ``proof.block`` is ``blocks[-1]``. The environment stores them (with their QCs)
    atomically, in order; they never change."""

    blocks: tuple[CommittedBlock, ...]
    proof: FinalityProof


@dataclass(frozen=True)
class FetchBlock:
    """Ask validator ``peer`` for the block ``block_hash``; deliver it as ``ProposalReceived``."""

    block_hash: bytes
    peer: int


@dataclass(frozen=True)
class RecordEvidence:
    evidence: Evidence


Action = (Broadcast | SendTo | PersistSafety | BuildProposal | ValidateBlock | ScheduleTimeout | Commit
          | FetchBlock | RecordEvidence)


# -- state ---------------------------------------------------------------------------------------

class BlockStatus:
    PENDING = "pending"        # waiting for its parent to be validated (ok)
    VALIDATING = "validating"  # ValidateBlock emitted
    VALID = "valid"
    INVALID = "invalid"


@dataclass(frozen=True)
class BlockEntry:
    block: Block
    status: str
    source: int  # the validator it came from (where to fetch its ancestors)


@dataclass(frozen=True)
class CoreState:
    """One validator's consensus state. Treat as immutable: ``step`` returns a new one.

    ``committed`` is the last finalized block (the root of ``blocks``, the tree of uncommitted
    blocks that descend from it) and ``committed_qc`` its certificate (None for genesis)."""

    config: CoreConfig
    crypto: Crypto = field(compare=False, repr=False)
    view: int
    highest_voted_view: int
    highest_qc: QuorumCertificate | None
    last_tc: TimeoutCertificate | None  # the TC for view - 1 when this view was entered by timeout
    committed: Block
    committed_qc: QuorumCertificate | None
    blocks: Mapping[bytes, BlockEntry] = field(default_factory=dict)
    certified: Mapping[bytes, QuorumCertificate] = field(default_factory=dict)
    finalize_target: FinalityProof | None = None
    orphans: Mapping[bytes, tuple[tuple[Block, int], ...]] = field(default_factory=dict)
    fetching: Mapping[bytes, tuple[int, int]] = field(default_factory=dict)  # hash -> (view, timeouts) asked at
    proposals: Mapping[int, Block] = field(default_factory=dict)  # first proposal seen per view
    votes: Mapping[int, Mapping[int, Vote]] = field(default_factory=dict)
    timeouts: Mapping[int, Mapping[int, Timeout]] = field(default_factory=dict)
    my_timeout: Timeout | None = None
    last_vote: Vote | None = None
    pending_build: BuildProposal | None = None
    proposed_view: int = 0
    consecutive_timeouts: int = 0
    reported: frozenset[tuple[str, int, int]] = frozenset()

    @property
    def safety_data(self) -> SafetyData:
        return SafetyData(self.highest_voted_view, self.highest_qc, self.last_tc, self.my_timeout)

    @property
    def committed_height(self) -> int:
        return self.committed.height

    @property
    def is_leader(self) -> bool:
        return self.config.leader(self.view) == self.config.index


def restore_core(config: CoreConfig, crypto: Crypto, committed: Block, committed_qc: QuorumCertificate | None,
                 safety: SafetyData | None = None, blocks: Sequence[Block] = ()) -> CoreState:
    """Rebuild a core after a restart (or a block sync) from the committed chain head, its QC
    (None for genesis) and the last persisted safety data. It resumes in the view after its highest
    QC, or in ``highest_voted_view`` if that is later (then it can only time out there), so it never
    signs a second vote in a view it voted in before the crash. Raises ConsensusError unless
    ``committed_qc`` certifies ``committed`` (None only for genesis). ``blocks`` are the blocks
    persisted with ``PersistSafety``: those that descend from ``committed`` re-enter the block tree
    and are validated again (``ValidateBlock``) once ``Start`` is stepped."""
    if committed_qc is None and committed.height != 0:
        raise ConsensusError("restore_core needs the QC of the committed head (None only for genesis)")
    if committed_qc is not None and (committed_qc.block_hash != committed.hash
                                     or committed_qc.round != committed.header.round):
        raise ConsensusError("restore_core: committed_qc does not certify the committed head")
    hvv = safety.highest_voted_view if safety is not None else 0
    hq = committed_qc
    if safety is not None and get_qc_view(safety.highest_qc) > get_qc_view(hq):
        hq = safety.highest_qc
    certified = {hq.block_hash: hq} if hq is not None and hq.round > committed.header.round else {}
    view = max(get_qc_view(hq) + 1, hvv, committed.header.round + 1)
    last_tc = safety.last_tc if safety is not None else None
    if last_tc is not None and last_tc.view != view - 1:
        last_tc = None
    my_timeout = safety.last_timeout if safety is not None else None
    if my_timeout is not None and (my_timeout.view != view or my_timeout.voter != config.index):
        my_timeout = None
    tree: dict[bytes, BlockEntry] = {}
    for b in sorted(blocks, key=lambda b: b.height):   # parents before children
        p = b.header.parent_hash
        if b.height > committed.height and (p == committed.hash or p in tree) and b.hash not in tree:
            tree[b.hash] = BlockEntry(b, BlockStatus.PENDING, config.index)
    return CoreState(config=config, crypto=crypto, view=view, highest_voted_view=hvv, highest_qc=hq,
                     last_tc=last_tc, committed=committed, committed_qc=committed_qc, blocks=tree,
                     certified=certified, proposed_view=hvv, my_timeout=my_timeout,
                     timeouts={view: {config.index: my_timeout}} if my_timeout is not None else {})


def initial_state(config: CoreConfig, crypto: Crypto, genesis: Block) -> CoreState:
    """The core of a fresh network: genesis committed, view 1, nothing voted."""
    return restore_core(config, crypto, genesis, None, None)


def compute_timeout_ms(config: CoreConfig, consecutive_timeouts: int) -> int:
    """Exponential back-off from the second consecutive local timeout since the last QC on:
    base, base, 2 base, 4 base, ..., capped. In round-robin rotation one crashed validator costs two
    timeouts in a row (the view whose votes it should aggregate, then its own view); doubling at the
    first of them made each rotation wait 3 x base instead of 2 x base (one validator of four down:
    ~1.85 s a block with 250 ms empty blocks). Longer stalls still back off exponentially."""
    return min(config.max_timeout_ms, config.base_timeout_ms << max(0, min(consecutive_timeouts, 33) - 1))


# -- the transition ------------------------------------------------------------------------------

class _Step:
    """The state being built by one ``step`` and the actions emitted so far (never escapes step)."""

    __slots__ = ("s", "actions")

    def __init__(self, state: CoreState) -> None:
        self.s = state
        self.actions: list[Action] = []

    def update(self, **changes: Any) -> None:
        self.s = replace(self.s, **changes)

    def emit(self, action: Action) -> None:
        self.actions.append(action)


def step(state: CoreState, event: Event) -> tuple[CoreState, list[Action]]:
    """Apply one event; return the next state and the actions to carry out, in order.

    Deterministic, never modifies ``state``, never raises on any event (an invalid, stale or
    unexpected input is ignored)."""
    t = _Step(state)
    if isinstance(event, ProposalReceived):
        on_proposal(t, event.proposal.block, event.sender)
    elif isinstance(event, VoteReceived):
        on_vote(t, event.vote)
    elif isinstance(event, TimeoutReceived):
        on_timeout(t, event.timeout)
    elif isinstance(event, QcReceived):
        on_qc_announcement(t, event.announcement.qc)
    elif isinstance(event, LocalTimeout):
        on_local_timeout(t, event.view)
    elif isinstance(event, BlockValidated):
        on_block_validated(t, event.block_hash, event.ok)
    elif isinstance(event, ProposalBuilt):
        on_proposal_built(t, event.block)
    elif isinstance(event, Start):
        on_start(t)
    return t.s, t.actions


# -- rule 2: voting ------------------------------------------------------------------------------

def is_safe_to_vote(state: CoreState, block: Block, tc: TimeoutCertificate | None) -> bool:
    """Rule 2: may this validator vote for ``block`` (view v, carrying ``tc``)? True iff
    ``v > highest_voted_view`` and ``v > B.qc.view`` and either ``v == B.qc.view + 1`` or ``tc`` is
    for view v-1 and ``B.qc.view >= max(tc.high_qc_views)``."""
    cfg = state.config
    v = block.header.round
    qc_view = get_qc_view(block.justify)
    if v <= state.highest_voted_view and not cfg.unsafe_skip_highest_voted_view_check:
        return False
    if v <= qc_view:
        return False
    if v == qc_view + 1:
        return True
    if cfg.unsafe_skip_tc_rule:
        return True
    return tc is not None and tc.view == v - 1 and qc_view >= tc.max_high_qc_view


def try_vote(t: _Step) -> None:
    """Vote for the proposal of the current view once it is validated and rule 2 allows it."""
    s = t.s
    block = s.proposals.get(s.view)
    if block is None:
        return
    entry = s.blocks.get(block.hash)
    if entry is None or entry.status != BlockStatus.VALID:
        return
    if s.last_vote is not None and s.last_vote.view == s.view and s.last_vote.block_hash == block.hash:
        return
    tc = _block_tc(block)
    if not is_safe_to_vote(s, block, tc):
        return
    vote = _sign_vote(t, block)
    t.emit(PersistSafety(t.s.safety_data, block))
    _deliver_vote(t, vote)


def _sign_vote(t: _Step, block: Block) -> Vote:
    s = t.s
    v = block.header.round
    vote = Vote(block.hash, block.height, v, s.config.index, s.crypto.sign_vote(block.hash, block.height, v))
    t.update(highest_voted_view=max(s.highest_voted_view, v), last_vote=vote)
    return vote


def _deliver_vote(t: _Step, vote: Vote) -> None:
    next_leader = t.s.config.leader(vote.view + 1)
    if next_leader == t.s.config.index:
        _count_own_vote(t, vote)
    else:
        t.emit(SendTo(next_leader, vote))


def on_vote(t: _Step, vote: Vote) -> None:
    """Collect a vote received from a peer, once its signature verifies; q votes for one block form
    its QC (rule 2, second sentence)."""
    if _is_vote_to_count(t.s, vote) and t.s.crypto.verify_vote(vote):
        _count_vote(t, vote)


def _count_own_vote(t: _Step, vote: Vote) -> None:
    """Collect the vote this validator (the next leader) has just signed, without a pairing check of
    it (as costly as a peer's): its crypto signs with the key of this validator's entry in the set
    (``BlsCrypto`` refuses any other), so the vote is valid."""
    if _is_vote_to_count(t.s, vote):
        _count_vote(t, vote)


def _is_vote_to_count(s: CoreState, vote: Vote) -> bool:
    """True iff ``vote`` is in range, in the window of views collected, and not a copy of one already
    counted or of a double vote already reported (a copy is not verified again)."""
    cfg = s.config
    if vote.voter >= cfg.n or vote.height == 0:
        return False
    if vote.view < s.view - 1 or vote.view > s.view + cfg.future_views or vote.view <= s.committed.header.round:
        return False
    first = s.votes.get(vote.view, {}).get(vote.voter)
    if first == vote:
        return False
    return first is None or (DOUBLE_VOTE, vote.voter, vote.view) not in s.reported


def _count_vote(t: _Step, vote: Vote) -> None:
    """Add a valid vote (or report it with the voter's first vote of its view as a double vote)."""
    s = t.s
    view_votes = s.votes.get(vote.view, {})
    first = view_votes.get(vote.voter)
    if first is not None:
        evidence = check_double_vote(first, vote)
        if evidence is not None:
            _report(t, evidence, vote.voter)
        return
    view_votes = {**view_votes, vote.voter: vote}
    t.update(votes={**s.votes, vote.view: view_votes})
    same = {i: v.signature for i, v in view_votes.items()
            if v.block_hash == vote.block_hash and v.height == vote.height}
    if len(same) == s.config.quorum:
        qc = s.crypto.aggregate_qc(vote.block_hash, vote.height, vote.view, same)
        # Announced before anything process_qc emits (a commit writes to disk): the others commit
        # and enter the next view now, not when this leader's proposal comes (block_time later).
        t.emit(Broadcast(QcAnnouncement(qc)))
        process_qc(t, qc)


def on_qc_announcement(t: _Step, qc: QuorumCertificate) -> None:
    """Learn an announced QC (rule 5). Only one newer than ``highest_qc`` and above the committed head
    is verified: an older one teaches nothing, and a replayed announcement costs one comparison."""
    s = t.s
    if qc.round <= get_qc_view(s.highest_qc) or qc.round <= s.committed.header.round:
        return
    if _is_valid_qc(s, qc):
        process_qc(t, qc)


# -- proposals -----------------------------------------------------------------------------------

def on_proposal(t: _Step, block: Block, sender: int) -> None:
    """Check a proposal's consensus rules (leader of its view, signature, justify QC for the parent
    it names, TC for the previous view), learn its certificates, put it in the block tree (asking
    for its parent if unknown) and have it validated; vote once it is valid (``try_vote``)."""
    s = t.s
    cfg = s.config
    h = block.header
    v = h.round
    if h.height <= s.committed.height or v <= s.committed.header.round:
        return
    known = s.blocks.get(block.hash)
    if known is not None and known.block == block:
        return  # a duplicate
    leader = cfg.leader(v)
    if h.proposer != cfg.validators[leader]:
        return
    first = s.proposals.get(v)
    if (first is not None and first.hash != block.hash and known is None and block.hash not in s.fetching
            and (DOUBLE_PROPOSAL, leader, v) in s.reported):
        return  # another copy of an equivocation already reported: not verified again
    qc = block.justify
    # A proposal too far ahead to be kept is only a carrier of certificates, which verify on their
    # own: nothing of it is verified unless one of them is new, and its signature only if they bring
    # this validator close enough to keep it.
    far = v > s.view + cfg.future_views
    if far:
        if not _carries_news(s, v, qc, _block_tc(block) if block.timeout_cert is not None else None):
            return
    elif not s.crypto.verify_proposal(leader, block.hash, block.signature):
        return
    if qc is None:
        if not (s.committed.height == 0 and h.height == 1 and h.parent_hash == s.committed.hash
                and h.justify_hash == compute_justify_hash(None, block.timeout_cert)):
            return
    elif (qc.block_hash != h.parent_hash or qc.height != h.height - 1
          or h.justify_hash != compute_justify_hash(qc, block.timeout_cert)
          or qc.round >= v or not _is_valid_qc(s, qc)):
        return
    tc: TimeoutCertificate | None = None
    if block.timeout_cert is not None:
        tc = _block_tc(block)
        if tc is None or tc.view != v - 1 or not _is_valid_tc(s, tc):
            return
    if not far and first is not None and first.hash != block.hash:  # (a far one is never in the tree)
        evidence = check_double_proposal(first, block)
        if evidence is not None:
            _report(t, evidence, leader)
    if qc is not None:
        process_qc(t, qc)
    if tc is not None:
        process_tc(t, tc)
    s = t.s
    if v > s.view + cfg.future_views:
        return  # too far ahead even after learning its certificates: not kept
    if far and not s.crypto.verify_proposal(leader, block.hash, block.signature):
        return
    if known is not None:
        _adopt_copy(t, known, block, tc)
        try_vote(t)
        return
    if first is None:
        t.update(proposals={**s.proposals, v: block})
    elif first.hash != block.hash and block.hash not in s.fetching:
        return  # an equivocation: only the first proposal of a view enters the tree, unless asked for
    insert_block(t, block, sender)
    try_vote(t)


def _adopt_copy(t: _Step, known: BlockEntry, copy: Block, tc: TimeoutCertificate | None) -> None:
    """Another copy of a block already in the tree (same signed header, another body or TC: the
    header commits to neither the TC nor, for the core, the transactions). A relay may have stripped
    the TC or altered the body of the copy that arrived first; the core takes the TC from a later
    copy, and re-validates a block that failed validation when a copy with another body arrives."""
    s = t.s
    bh = copy.hash
    if known.status == BlockStatus.INVALID and copy.transactions != known.block.transactions:
        parent = s.blocks.get(copy.header.parent_hash)
        parent_valid = copy.header.parent_hash == s.committed.hash or (
            parent is not None and parent.status == BlockStatus.VALID)
        entry = BlockEntry(copy, BlockStatus.VALIDATING if parent_valid else BlockStatus.PENDING, known.source)
        if parent_valid:
            t.emit(ValidateBlock(copy))
    elif known.block.timeout_cert is None and tc is not None:
        entry = replace(known, block=replace(known.block, timeout_cert=copy.timeout_cert))
    else:
        return
    v = copy.header.round
    proposals = s.proposals
    first = proposals.get(v)
    if first is not None and first.hash == bh:
        proposals = {**proposals, v: entry.block}
    t.update(blocks={**s.blocks, bh: entry}, proposals=proposals)


def _carries_news(s: CoreState, v: int, qc: QuorumCertificate | None, tc: TimeoutCertificate | None) -> bool:
    """Whether a message of view ``v`` too far ahead to keep carries anything to learn (unverified
    yet): a QC newer than ``highest_qc``, or the TC of view ``v - 1`` when this validator is not past it."""
    return ((qc is not None and qc.round > get_qc_view(s.highest_qc))
            or (tc is not None and tc.view == v - 1 and tc.view >= s.view))


def _block_tc(block: Block) -> TimeoutCertificate | None:
    try:
        return decode_block_tc(block)
    except DecodeError:
        return None


def insert_block(t: _Step, block: Block, source: int) -> None:
    """Add a checked block to the tree: validate it once its parent is valid; if its parent is
    unknown, buffer it and fetch the parent from ``source``."""
    s = t.s
    cfg = s.config
    bh = block.hash
    if bh in s.blocks or bh == s.committed.hash:
        return
    parent_hash = block.header.parent_hash
    if parent_hash == s.committed.hash:
        parent, parent_status = s.committed, BlockStatus.VALID
    elif parent_hash in s.blocks:
        entry = s.blocks[parent_hash]
        parent, parent_status = entry.block, entry.status
    else:
        if block.height - 1 <= s.committed.height:
            return  # its parent would sit at or below the finalized head, which it does not extend
        waiting = s.orphans.get(parent_hash, ())
        if all(b.hash != bh for b, _ in waiting) and sum(len(w) for w in s.orphans.values()) < cfg.max_orphans:
            t.update(orphans={**s.orphans, parent_hash: (*waiting, (block, source))})
        _fetch(t, parent_hash, source)
        return
    if (block.height != parent.height + 1 or block.header.round <= parent.header.round
            or (block.justify is not None and block.justify.round != parent.header.round)):
        return
    if len(s.blocks) >= cfg.max_blocks:
        return
    status = BlockStatus.VALIDATING if parent_status == BlockStatus.VALID else BlockStatus.PENDING
    fetching = {k: w for k, w in s.fetching.items() if k != bh}
    t.update(blocks={**s.blocks, bh: BlockEntry(block, status, source)}, fetching=fetching)
    if status == BlockStatus.VALIDATING:
        t.emit(ValidateBlock(block))
    children = t.s.orphans.get(bh)
    if children:
        t.update(orphans={k: w for k, w in t.s.orphans.items() if k != bh})
        for child, child_source in children:
            insert_block(t, child, child_source)
    if bh in t.s.certified:
        check_commit(t, bh)


def _fetch(t: _Step, block_hash: bytes, peer: int) -> None:
    """Ask ``peer`` for a block, at most once per block until the view changes or its timer fires
    again (a request or its answer may be lost)."""
    s = t.s
    now = (s.view, s.consecutive_timeouts)
    if s.fetching.get(block_hash) == now or peer == s.config.index or not 0 <= peer < s.config.n:
        return
    if block_hash not in s.fetching and len(s.fetching) >= s.config.max_orphans + 1:
        return
    t.update(fetching={**s.fetching, block_hash: now})
    t.emit(FetchBlock(block_hash, peer))


def on_block_validated(t: _Step, block_hash: bytes, ok: bool) -> None:
    """Record a re-execution result: validate the children waiting on it, then commit, propose and
    vote as far as the newly valid block allows."""
    entry = t.s.blocks.get(block_hash)
    if entry is None or entry.status != BlockStatus.VALIDATING:
        return
    blocks = dict(t.s.blocks)
    blocks[block_hash] = replace(entry, status=BlockStatus.VALID if ok else BlockStatus.INVALID)
    # The children of a valid block go to validation; those of an invalid one keep waiting (a
    # copy of it with another body may still validate).
    to_validate: list[Block] = []
    if ok:
        for h, e in blocks.items():
            if e.status == BlockStatus.PENDING and e.block.header.parent_hash == block_hash:
                blocks[h] = replace(e, status=BlockStatus.VALIDATING)
                to_validate.append(e.block)
    t.update(blocks=blocks)
    for b in to_validate:
        t.emit(ValidateBlock(b))
    if ok:
        apply_commits(t)
        try_propose(t)
        try_vote(t)


# -- rule 1: proposing ---------------------------------------------------------------------------

def try_propose(t: _Step) -> None:
    """Rule 1: as leader of the current view v, entered by QC(v-1) or TC(v-1), ask for a block
    extending highest_qc.block (once the parent is here and valid). A leader proposes only in a
    view it may still vote in, so a restart never makes it propose twice in one view."""
    s = t.s
    cfg = s.config
    v = s.view
    if cfg.leader(v) != cfg.index or s.proposed_view >= v or v <= s.highest_voted_view:
        return
    if s.pending_build is not None and s.pending_build.view == v:
        return
    hq = s.highest_qc
    entered_by_qc = get_qc_view(hq) == v - 1
    entered_by_tc = s.last_tc is not None and s.last_tc.view == v - 1
    if not (entered_by_qc or entered_by_tc):
        return
    parent_hash = hq.block_hash if hq is not None else s.committed.hash
    if parent_hash == s.committed.hash:
        parent = s.committed
    else:
        entry = s.blocks.get(parent_hash)
        if entry is None:
            if hq is not None:
                _fetch(t, parent_hash, _fetch_peer(s, hq))
            return
        if entry.status != BlockStatus.VALID:
            return
        parent = entry.block
    request = BuildProposal(v, parent, hq, s.last_tc if entered_by_tc else None)
    t.update(pending_build=request)
    t.emit(request)


def _fetch_peer(s: CoreState, qc: QuorumCertificate) -> int:
    """A signer of ``qc`` other than this validator (signers have the block), rotating with the
    view and the timeouts in it."""
    signers = [i for i in qc.signer_indices() if i != s.config.index and i < s.config.n]
    if not signers:
        return s.config.leader(qc.round)
    return signers[(s.view + s.consecutive_timeouts) % len(signers)]


def on_proposal_built(t: _Step, block: Block) -> None:
    """Sign the block the environment built for our ``BuildProposal``, vote for it, broadcast it."""
    s = t.s
    cfg = s.config
    req = s.pending_build
    if req is None or req.view != s.view:
        return
    h = block.header
    expected_tc = req.timeout_cert.encode() if req.timeout_cert is not None else None
    if (h.round != req.view or h.parent_hash != req.parent.hash or h.height != req.parent.height + 1
            or block.justify != req.justify or h.justify_hash != compute_justify_hash(req.justify, expected_tc)
            or h.proposer != cfg.validators[cfg.index] or block.timeout_cert != expected_tc):
        return
    t.update(pending_build=None)
    signed = Block(h, block.transactions, block.justify, block.timeout_cert, s.crypto.sign_proposal(block.hash),
                   block.hash)
    if not is_safe_to_vote(s, signed, req.timeout_cert) or s.view in s.proposals:
        return
    t.update(proposed_view=req.view, proposals={**s.proposals, req.view: signed},
             blocks={**s.blocks, signed.hash: BlockEntry(signed, BlockStatus.VALID, cfg.index)})
    vote = _sign_vote(t, signed)
    t.emit(PersistSafety(t.s.safety_data, signed))
    t.emit(Broadcast(Proposal(signed)))
    _deliver_vote(t, vote)


# -- rule 3: timeouts and view changes -----------------------------------------------------------

def on_start(t: _Step) -> None:
    """Arm the timer of the current view, validate the blocks restored from disk, propose if leader."""
    s = t.s
    t.emit(ScheduleTimeout(s.view, compute_timeout_ms(s.config, s.consecutive_timeouts)))
    roots = [h for h, e in s.blocks.items()
             if e.status == BlockStatus.PENDING and e.block.header.parent_hash == s.committed.hash]
    if roots:
        t.update(blocks={h: (replace(e, status=BlockStatus.VALIDATING) if h in roots else e)
                         for h, e in s.blocks.items()})
        for h in roots:
            t.emit(ValidateBlock(s.blocks[h].block))
    try_propose(t)


def on_local_timeout(t: _Step, view: int) -> None:
    """Rule 3: the timer of the current view fired: time out (or re-send our timeout), back off."""
    s = t.s
    if view != s.view:
        return
    t.update(consecutive_timeouts=s.consecutive_timeouts + 1)
    send_timeout(t)
    t.emit(ScheduleTimeout(view, compute_timeout_ms(t.s.config, t.s.consecutive_timeouts)))
    _refetch(t)


def send_timeout(t: _Step) -> None:
    """Time out in the current view v: highest_voted_view = max(it, v), persist, broadcast
    Timeout(v, highest_qc). A validator that already timed out in v re-sends the same message."""
    s = t.s
    if s.my_timeout is not None and s.my_timeout.view == s.view:
        t.emit(Broadcast(s.my_timeout))
        return
    v = s.view
    hq_view = get_qc_view(s.highest_qc)
    timeout = Timeout(v, s.config.index, s.highest_qc, s.last_tc, s.crypto.sign_timeout(v, hq_view))
    t.update(highest_voted_view=max(s.highest_voted_view, v), my_timeout=timeout)
    t.emit(PersistSafety(t.s.safety_data))
    t.emit(Broadcast(timeout))
    record_timeout(t, timeout)


def _refetch(t: _Step) -> None:
    """Ask again for the blocks still missing, each time from the next validator (the one asked
    before may be down, or byzantine)."""
    s = t.s
    n = s.config.n
    for parent_hash, waiting in list(s.orphans.items()):
        peer = (waiting[0][1] + s.consecutive_timeouts) % n
        if peer == s.config.index:
            peer = (peer + 1) % n
        _fetch(t, parent_hash, peer)
    hq = t.s.highest_qc
    if hq is not None and hq.block_hash not in t.s.blocks and hq.block_hash != t.s.committed.hash:
        _fetch(t, hq.block_hash, _fetch_peer(t.s, hq))
    parents = {e.block.header.parent_hash for e in t.s.blocks.values()}
    for h, e in list(t.s.blocks.items()):
        if e.status == BlockStatus.INVALID and (h in t.s.certified or h in parents):
            _recover_invalid(t, h)


def on_timeout(t: _Step, timeout: Timeout) -> None:
    """Learn the certificates a timeout carries, then count it toward a TC for its view."""
    s = t.s
    cfg = s.config
    v = timeout.view
    if timeout.voter >= cfg.n or v < s.view or timeout.high_qc_view >= v:
        return
    first = s.timeouts.get(v, {}).get(timeout.voter)
    if first is not None:
        # a second timeout of one validator for one view: only its own signature is checked, and only
        # until its double timeout is reported (a replayed copy costs no verification)
        if (first.high_qc_view != timeout.high_qc_view and (DOUBLE_TIMEOUT, timeout.voter, v) not in s.reported
                and s.crypto.verify_timeout(timeout)):
            evidence = check_double_timeout(first, timeout)
            if evidence is not None:
                _report(t, evidence, timeout.voter)
        return
    # Cheap before costly: the timeout's own signature (one verification) before the certificates
    # it carries (aggregates); one that will not be kept (too far ahead) only has its certificates
    # checked, which is how a validator that was down for many views catches up.
    keep = v <= s.view + cfg.future_views
    if not keep and not _carries_news(s, v, timeout.high_qc, timeout.last_tc):
        return  # too far ahead to keep and carrying nothing new: nothing to verify
    if keep and not s.crypto.verify_timeout(timeout):
        return
    if timeout.high_qc is not None and not _is_valid_qc(s, timeout.high_qc):
        return
    tc = timeout.last_tc
    if tc is not None:
        if tc.view != v - 1:
            return
        if tc.view < s.view:
            tc = None  # of no use to us: skip its verification
        elif not _is_valid_tc(s, tc):
            return
    # The certificates verify on their own: learn them even from a timeout too far ahead to keep,
    # which is how a validator that was down for many views catches up.
    if timeout.high_qc is not None:
        process_qc(t, timeout.high_qc)
    if tc is not None:
        process_tc(t, tc)
    if v > t.s.view + cfg.future_views or (not keep and not t.s.crypto.verify_timeout(timeout)):
        return
    record_timeout(t, timeout)


def record_timeout(t: _Step, timeout: Timeout) -> None:
    """Count a verified timeout: q for one view form a TC (and move us on); f+1 for the current
    view make us time out too (a liveness aid: at least one honest validator gave up on it)."""
    s = t.s
    cfg = s.config
    v = timeout.view
    if v < s.view:
        return
    view_timeouts = {**s.timeouts.get(v, {}), timeout.voter: timeout}
    t.update(timeouts={**s.timeouts, v: view_timeouts})
    if len(view_timeouts) == cfg.quorum:
        high = max((x.high_qc for x in view_timeouts.values() if x.high_qc is not None),
                   key=lambda qc: qc.round, default=None)
        tc = s.crypto.aggregate_tc(v, {i: (x.high_qc_view, x.signature) for i, x in view_timeouts.items()}, high)
        process_tc(t, tc)
    elif v == t.s.view and len(view_timeouts) >= cfg.f + 1:
        _join_timeout(t)


def _join_timeout(t: _Step) -> None:
    s = t.s
    if s.my_timeout is None or s.my_timeout.view != s.view:
        send_timeout(t)


def process_tc(t: _Step, tc: TimeoutCertificate) -> None:
    """A verified TC for view v: learn its high QC (rule 5) and move to v+1 (rule 3)."""
    if tc.high_qc is not None:
        process_qc(t, tc.high_qc)
    if tc.view >= t.s.view:
        advance_view(t, tc.view + 1, tc)


def process_qc(t: _Step, qc: QuorumCertificate) -> None:
    """A verified QC: update highest_qc (rule 5), move past its view (rule 3), check the 2-chain
    commit rule (rule 4)."""
    s = t.s
    if qc.round <= s.committed.header.round:
        return
    if qc.block_hash not in s.certified:
        t.update(certified={**s.certified, qc.block_hash: qc})
    if qc.round > get_qc_view(t.s.highest_qc):
        t.update(highest_qc=qc)
    if qc.round >= t.s.view:
        advance_view(t, qc.round + 1, None)
    _recover_invalid(t, qc.block_hash)
    check_commit(t, qc.block_hash)


def _recover_invalid(t: _Step, block_hash: bytes) -> None:
    """A block this validator found invalid is certified (q validators executed it to its header)
    or is the parent of a block in the tree: its copy was probably altered on the way, so ask a
    validator that has it (a signer of its QC, or the next validator in turn) for another copy."""
    s = t.s
    entry = s.blocks.get(block_hash)
    if entry is None or entry.status != BlockStatus.INVALID:
        return
    qc = s.certified.get(block_hash)
    if qc is not None:
        peer = _fetch_peer(s, qc)
    else:
        peer = (entry.source + 1 + s.consecutive_timeouts) % s.config.n
        if peer == s.config.index:
            peer = (peer + 1) % s.config.n
    _fetch(t, block_hash, peer)


def advance_view(t: _Step, new_view: int, tc: TimeoutCertificate | None) -> None:
    """Enter ``new_view`` (by QC when ``tc`` is None, else by TC): drop stale votes and timeouts,
    arm the timer, then propose / vote / time out as the new view already allows."""
    s = t.s
    if new_view <= s.view:
        return
    cfg = s.config
    horizon = new_view - cfg.future_views
    t.update(
        view=new_view, last_tc=tc, my_timeout=None, pending_build=None,
        consecutive_timeouts=0 if tc is None else s.consecutive_timeouts,
        votes={k: m for k, m in s.votes.items() if k >= new_view - 1},
        timeouts={k: m for k, m in s.timeouts.items() if k >= new_view},
        proposals={k: b for k, b in s.proposals.items() if k >= horizon},
        reported=frozenset(r for r in s.reported if r[2] >= horizon),
    )
    _prune_fetching(t)
    t.emit(ScheduleTimeout(new_view, compute_timeout_ms(cfg, t.s.consecutive_timeouts)))
    try_propose(t)
    try_vote(t)
    if len(t.s.timeouts.get(new_view, {})) >= cfg.f + 1 and t.s.view == new_view:
        _join_timeout(t)


# -- rule 4: commit ------------------------------------------------------------------------------

def check_commit(t: _Step, certified_hash: bytes) -> None:
    """Rule 4: a QC for B' whose parent B has B'.view == B.view + 1 finalizes B and its ancestors."""
    s = t.s
    b2 = s.blocks.get(certified_hash)
    qc2 = s.certified.get(certified_hash)
    if b2 is None or qc2 is None:
        return
    b1 = s.blocks.get(b2.block.header.parent_hash)
    if b1 is None:
        return  # the parent is the committed head (already final) or not in the tree
    if b2.block.header.round != b1.block.header.round + 1:
        return
    target = s.finalize_target
    if target is not None and target.block.height >= b2.block.height:
        return
    t.update(finalize_target=FinalityProof(b2.block, qc2))
    apply_commits(t)


def apply_commits(t: _Step) -> None:
    """Emit the ``Commit`` of the path from the committed head to the finality target once every
    block on it has been validated, then make the target the new root and prune the tree."""
    s = t.s
    proof = s.finalize_target
    if proof is None:
        return
    path: list[Block] = []
    h = proof.block.header.parent_hash
    while h != s.committed.hash:
        entry = s.blocks.get(h)
        if entry is None:
            t.update(finalize_target=None)  # not above our head any more: nothing to do
            return
        if entry.status != BlockStatus.VALID:
            return  # wait for its validation
        path.append(entry.block)
        h = entry.block.header.parent_hash
    if not path:
        t.update(finalize_target=None)
        return
    path.reverse()
    qcs = [b.justify for b in path[1:]] + [proof.block.justify]
    committed: list[CommittedBlock] = []
    for b, qc in zip(path, qcs, strict=True):
        if qc is None:  # cannot happen: a child always carries its parent's QC
            return
        committed.append(CommittedBlock(b, qc))
    head = committed[-1]
    t.emit(Commit(tuple(committed), proof))
    _set_committed_head(t, head.block, head.qc)


def _set_committed_head(t: _Step, head: Block, head_qc: QuorumCertificate) -> None:
    s = t.s
    kept: dict[bytes, BlockEntry] = {}
    for h, e in s.blocks.items():  # parents precede children in insertion order
        p = e.block.header.parent_hash
        if e.block.height > head.height and (p == head.hash or p in kept):
            kept[h] = e
    head_view = head.header.round
    t.update(
        committed=head, committed_qc=head_qc, blocks=kept, finalize_target=None,
        certified={h: qc for h, qc in s.certified.items() if qc.round > head_view},
        orphans={p: w for p, w in s.orphans.items() if w[0][0].height - 1 > head.height},
    )
    _prune_fetching(t)


def _prune_fetching(t: _Step) -> None:
    """Forget requests for blocks no longer needed (neither an orphan's parent nor highest_qc.block)."""
    s = t.s
    needed = set(s.orphans)
    if s.highest_qc is not None:
        needed.add(s.highest_qc.block_hash)
    if any(h not in needed for h in s.fetching):
        t.update(fetching={h: v for h, v in s.fetching.items() if h in needed})


# -- helpers -------------------------------------------------------------------------------------

def _is_valid_qc(s: CoreState, qc: QuorumCertificate) -> bool:
    """Verify a QC's shape and signature, skipping QCs already verified (held in the state)."""
    if qc == s.highest_qc or qc == s.committed_qc or s.certified.get(qc.block_hash) == qc:
        return True
    if qc.height == 0:
        return False
    if qc.block_hash == s.committed.hash:
        # The committed head may be the last block of the previous validator set: its QCs have
        # that set's bitmap and quorum, which only the crypto knows (it checks the shape too).
        return qc.height == s.committed.height and qc.round == s.committed.header.round and s.crypto.verify_qc(qc)
    n = s.config.n
    if len(qc.signers) != (n + 7) // 8:
        return False
    indices = qc.signer_indices()
    if any(i >= n for i in indices) or len(indices) < s.config.quorum:
        return False
    return s.crypto.verify_qc(qc)


def _is_valid_tc(s: CoreState, tc: TimeoutCertificate) -> bool:
    """Verify a TC: shape, its high QC (the QC of max(high_qc_views)) and its aggregate signature."""
    if check_tc_shape(tc, s.config.n) is None:
        return False
    if tc.high_qc is None:
        if tc.max_high_qc_view != 0:
            return False
    elif tc.high_qc.round != tc.max_high_qc_view or not _is_valid_qc(s, tc.high_qc):
        return False
    return s.crypto.verify_tc(tc)


def _report(t: _Step, evidence: Evidence, offender: int) -> None:
    key = (evidence.kind, offender, evidence.view)
    if key in t.s.reported:
        return
    t.update(reported=t.s.reported | {key})
    t.emit(RecordEvidence(evidence))
