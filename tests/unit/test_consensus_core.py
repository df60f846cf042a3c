"""The consensus core's rules, one hand-built event at a time (docs/consensus.md rules 1-5, restart,
evidence, malformed input), its message codecs, and the BLS adapter the node plugs into it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare import codec
from chainshare.consensus.core import (
    Action,
    BlockValidated,
    Broadcast,
    BuildProposal,
    Commit,
    CommittedBlock,
    CoreConfig,
    CoreState,
    Event,
    FetchBlock,
    FinalityProof,
    LocalTimeout,
    PersistSafety,
    ProposalBuilt,
    ProposalReceived,
    QcReceived,
    RecordEvidence,
    SafetyData,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutReceived,
    ValidateBlock,
    VoteReceived,
    initial_state,
    is_safe_to_vote,
    restore_core,
    step,
)
from chainshare.consensus.evidence import DOUBLE_PROPOSAL, DOUBLE_VOTE, Evidence, verify_evidence
from chainshare.consensus.messages import (
    BlsCrypto,
    Proposal,
    QcAnnouncement,
    Timeout,
    TimeoutCertificate,
    Vote,
    decode_message,
    encode_message,
)
from chainshare.consensus.sim import (
    SIM_CHAIN_ID,
    FakeCrypto,
    build_sim_block,
    make_genesis_block,
    validator_address,
)
from chainshare.crypto import bls
from chainshare.errors import ConsensusError, DecodeError
from chainshare.ledger import quorum as qcmod
from chainshare.ledger.types import Block, QuorumCertificate, make_bitmap

N = 4
BASE_MS = 100
MAX_MS = 800
CRYPTO = [FakeCrypto.for_network(N, i) for i in range(N)]
ADDRESSES = tuple(validator_address(i) for i in range(N))
GENESIS = make_genesis_block()


# -- builders ------------------------------------------------------------------------------------

def make_config(index: int, **flags: bool) -> CoreConfig:
    return CoreConfig(SIM_CHAIN_ID, ADDRESSES, index, base_timeout_ms=BASE_MS, max_timeout_ms=MAX_MS, **flags)


def fresh(index: int, **flags: bool) -> CoreState:
    return initial_state(make_config(index, **flags), CRYPTO[index], GENESIS)


def make_block(parent: Block, view: int, justify: QuorumCertificate | None, tc: TimeoutCertificate | None = None,
               tx: bytes = b"tx", proposer: int | None = None, signer: int | None = None) -> Block:
    """A block for ``view`` on ``parent``, signed by the view's leader unless told otherwise."""
    leader = view % N
    unsigned = build_sim_block(BuildProposal(view, parent, justify, tc), ADDRESSES[leader if proposer is None else proposer],
                               0, (tx,))
    return sign_block(unsigned, leader if signer is None else signer)


def sign_block(block: Block, signer: int) -> Block:
    return Block(block.header, block.transactions, block.justify, block.timeout_cert,
                 CRYPTO[signer].sign_proposal(block.hash))


def make_vote(block: Block, voter: int) -> Vote:
    v = block.header.round
    return Vote(block.hash, block.height, v, voter, CRYPTO[voter].sign_vote(block.hash, block.height, v))


def make_qc(block: Block, signers: Sequence[int] = (0, 1, 2)) -> QuorumCertificate:
    v = block.header.round
    votes = {i: CRYPTO[i].sign_vote(block.hash, block.height, v) for i in signers}
    return CRYPTO[0].aggregate_qc(block.hash, block.height, v, votes)


def make_timeout(view: int, voter: int, high_qc: QuorumCertificate | None,
                 last_tc: TimeoutCertificate | None = None) -> Timeout:
    hv = high_qc.round if high_qc is not None else 0
    return Timeout(view, voter, high_qc, last_tc, CRYPTO[voter].sign_timeout(view, hv))


def make_tc(view: int, high_qcs: dict[int, QuorumCertificate | None]) -> TimeoutCertificate:
    parts = {i: ((q.round if q else 0), CRYPTO[i].sign_timeout(view, q.round if q else 0)) for i, q in high_qcs.items()}
    best = max((q for q in high_qcs.values() if q is not None), key=lambda q: q.round, default=None)
    return CRYPTO[0].aggregate_tc(view, parts, best)


def run(state: CoreState, events: Iterable[Event]) -> tuple[CoreState, list[Action]]:
    actions: list[Action] = []
    for event in events:
        state, more = step(state, event)
        actions.extend(more)
    return state, actions


def receive(state: CoreState, block: Block, sender: int | None = None, validate: bool = True
            ) -> tuple[CoreState, list[Action]]:
    """Deliver a proposal and answer every ValidateBlock it leads to (ok) when ``validate``."""
    state, actions = step(state, ProposalReceived(Proposal(block), block.header.round % N if sender is None else sender))
    out = list(actions)
    pending = [a for a in actions if isinstance(a, ValidateBlock)]
    while validate and pending:
        a = pending.pop(0)
        state, more = step(state, BlockValidated(a.block.hash, True))
        out.extend(more)
        pending.extend(x for x in more if isinstance(x, ValidateBlock))
    return state, out


def votes_in(actions: Iterable[Action]) -> list[Vote]:
    return [a.message for a in actions if isinstance(a, SendTo) and isinstance(a.message, Vote)]


A = TypeVar("A")


def of_type(actions: Iterable[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


@dataclass(frozen=True)
class Chain:
    """B1 (view 1) <- B2 (view 2) <- B3 (view 3) <- B4 (view 4), each carrying its parent's QC."""

    b1: Block
    q1: QuorumCertificate
    b2: Block
    q2: QuorumCertificate
    b3: Block
    q3: QuorumCertificate
    b4: Block


@pytest.fixture(scope="module")
def chain() -> Chain:
    b1 = make_block(GENESIS, 1, None)
    q1 = make_qc(b1)
    b2 = make_block(b1, 2, q1)
    q2 = make_qc(b2)
    b3 = make_block(b2, 3, q2)
    q3 = make_qc(b3)
    return Chain(b1, q1, b2, q2, b3, q3, make_block(b3, 4, q3))


# -- purity ----------------------------------------------------------------------------------------

def test_step_never_modifies_the_state_it_is_given(chain: Chain) -> None:
    state = fresh(0)
    events: list[Event] = [Start(), ProposalReceived(Proposal(chain.b1), 1),
                           BlockValidated(chain.b1.hash, True), LocalTimeout(1)]
    for event in events:
        before = copy.deepcopy(state)
        nxt, _ = step(state, event)
        assert state == before
        assert step(before, event) == step(state, event)  # deterministic: same input, same output
        state = nxt


# -- rule 1: propose -------------------------------------------------------------------------------

def test_leader_of_view_one_asks_for_a_block_on_genesis_at_start() -> None:
    _, actions = step(fresh(1), Start())
    assert actions == [ScheduleTimeout(1, BASE_MS), BuildProposal(1, GENESIS, None, None)]
    _, actions = step(fresh(0), Start())
    assert actions == [ScheduleTimeout(1, BASE_MS)]


def test_built_proposal_is_signed_and_persisted_before_it_and_its_vote_are_sent() -> None:
    state, actions = step(fresh(1), Start())
    request = of_type(actions, BuildProposal)[0]
    assert isinstance(request, BuildProposal)
    unsigned = build_sim_block(request, ADDRESSES[1], 0, (b"tx",))
    state, actions = step(state, ProposalBuilt(unsigned))
    assert [type(a) for a in actions] == [PersistSafety, Broadcast, SendTo]
    persist, broadcast, send = actions
    assert isinstance(persist, PersistSafety) and persist.data == SafetyData(1, None)
    assert isinstance(broadcast, Broadcast) and isinstance(broadcast.message, Proposal)
    signed = broadcast.message.block
    assert signed.hash == unsigned.hash and CRYPTO[0].verify_proposal(1, signed.hash, signed.signature)
    assert persist.block == signed   # kept on disk: a certified block always survives on an honest node
    assert isinstance(send, SendTo) and send.index == 2 and send.message == make_vote(signed, 1)
    # a second build answer for the same view is ignored: one proposal per view
    assert step(state, ProposalBuilt(unsigned))[1] == []


def test_a_built_block_that_does_not_match_the_request_is_not_signed() -> None:
    state, actions = step(fresh(1), Start())
    request = of_type(actions, BuildProposal)[0]
    assert isinstance(request, BuildProposal)
    wrong_view = build_sim_block(replace(request, view=5), ADDRESSES[1], 0, (b"tx",))
    assert step(state, ProposalBuilt(wrong_view))[1] == []


def test_next_leader_aggregates_a_quorum_of_votes_into_the_qc_it_proposes_with(chain: Chain) -> None:
    b1 = chain.b1
    state, actions = receive(fresh(2), b1)
    assert votes_in(actions) == []  # its own vote stays inside: it is the next leader
    state, actions = run(state, [VoteReceived(make_vote(b1, 0))])
    assert of_type(actions, BuildProposal) == []
    state, actions = run(state, [VoteReceived(make_vote(b1, 1))])
    builds = of_type(actions, BuildProposal)
    assert len(builds) == 1 and isinstance(builds[0], BuildProposal)
    assert builds[0].view == 2 and builds[0].parent == b1 and builds[0].timeout_cert is None
    qc = builds[0].justify
    assert qc is not None and qc.block_hash == b1.hash and qc.signer_indices() == [0, 1, 2]
    assert CRYPTO[3].verify_qc(qc)
    assert state.view == 2 and state.highest_qc == qc


def test_the_aggregator_announces_a_qc_before_anything_else_it_does_with_it(chain: Chain) -> None:
    b1 = chain.b1
    state, _ = receive(fresh(2), b1)
    state, actions = run(state, [VoteReceived(make_vote(b1, 0)), VoteReceived(make_vote(b1, 1))])
    announced = [a.message.qc for a in of_type(actions, Broadcast) if isinstance(a.message, QcAnnouncement)]
    assert announced == [state.highest_qc]
    assert isinstance(actions[0], Broadcast) and isinstance(actions[0].message, QcAnnouncement)
    assert len(of_type(actions, BuildProposal)) == 1  # and it still proposes with that QC


def test_an_announced_qc_commits_and_moves_a_validator_on_without_the_next_proposal(chain: Chain) -> None:
    b1, q1, b2, q2 = chain.b1, chain.q1, chain.b2, chain.q2
    state, _ = receive(fresh(0), b1)
    state, _ = receive(state, b2)                       # carries QC(B1): a 1-chain
    state, actions = step(state, QcReceived(QcAnnouncement(q2)))
    assert of_type(actions, Commit) == [Commit((CommittedBlock(b1, q1),), FinalityProof(b2, q2))]
    assert state.highest_qc == q2 and state.view == 3
    # the proposal that carries it later changes nothing more
    state, actions = receive(state, chain.b3)
    assert of_type(actions, Commit) == [] and state.committed == b1


def test_a_forged_stale_or_replayed_announcement_is_ignored_and_only_a_new_one_is_verified(chain: Chain) -> None:
    crypto = _CountingCrypto(CRYPTO[0].keys, 0)
    crypto.calls = []
    state = initial_state(make_config(0), crypto, GENESIS)
    state, _ = receive(state, chain.b1)
    state, _ = receive(state, chain.b2)
    crypto.calls.clear()
    forged = replace(chain.q2, signature=bytes(96))
    after, actions = step(state, QcReceived(QcAnnouncement(forged)))
    assert actions == [] and after == state and crypto.calls == ["qc"]
    after, actions = step(state, QcReceived(QcAnnouncement(chain.q1)))   # not newer than highest_qc
    assert actions == [] and after == state and crypto.calls == ["qc"]    # no verification spent on it
    state, _ = step(state, QcReceived(QcAnnouncement(chain.q2)))
    crypto.calls.clear()
    after, actions = step(state, QcReceived(QcAnnouncement(chain.q2)))   # a replay
    assert actions == [] and after == state and crypto.calls == []


# -- rule 2: vote ----------------------------------------------------------------------------------

def test_vote_waits_for_re_execution_and_goes_to_the_next_leader(chain: Chain) -> None:
    b1 = chain.b1
    state, actions = receive(fresh(0), b1, validate=False)
    assert actions == [ValidateBlock(b1)]
    rejected, actions = step(state, BlockValidated(b1.hash, False))
    assert actions == [] and rejected.highest_voted_view == 0
    state, actions = step(state, BlockValidated(b1.hash, True))
    assert actions == [PersistSafety(SafetyData(1, None), b1), SendTo(2, make_vote(b1, 0))]


def test_votes_at_most_once_per_view(chain: Chain) -> None:
    b1 = chain.b1
    other = make_block(GENESIS, 1, None, tx=b"other")
    state, actions = receive(fresh(0), b1)
    assert len(votes_in(actions)) == 1
    state, actions = receive(state, other)
    assert votes_in(actions) == [] and of_type(actions, ValidateBlock) == []
    assert [a.evidence.kind for a in of_type(actions, RecordEvidence)] == [DOUBLE_PROPOSAL]
    state, actions = run(state, [ProposalReceived(Proposal(b1), 1), BlockValidated(b1.hash, True)])
    assert votes_in(actions) == []


@pytest.mark.parametrize("proposer,signer", [(2, 2), (1, 2), (2, 1)])
def test_no_vote_for_a_proposal_not_signed_by_the_leader_of_its_view(proposer: int, signer: int) -> None:
    forged = make_block(GENESIS, 1, None, proposer=proposer, signer=signer)
    state, actions = receive(fresh(0), forged, sender=signer)
    assert actions == [] and state == fresh(0)


def test_no_vote_for_a_block_whose_qc_is_forged_or_for_another_block(chain: Chain) -> None:
    b1, q1 = chain.b1, chain.q1
    state, _ = receive(fresh(0), b1)
    forged = replace(q1, signature=bytes(96))
    too_few = make_qc(b1, signers=(0, 1))
    for bad in (forged, too_few):
        blk = make_block(b1, 2, bad)
        after, actions = receive(state, blk)
        assert votes_in(actions) == [] and after.view == state.view
    sibling = make_block(GENESIS, 1, None, tx=b"sibling")
    wrong_parent = make_block(sibling, 2, q1)  # names a parent its QC does not certify
    assert votes_in(receive(state, wrong_parent)[1]) == []


def test_rule_two_clause_by_clause(chain: Chain) -> None:
    q1, b2, q2 = chain.q1, chain.b2, chain.q2
    state = replace(fresh(0), view=3)
    tc_low = make_tc(2, {0: None, 1: None, 2: None})    # nobody reported a QC above genesis
    tc_high = make_tc(2, {0: q1, 1: None, 2: None})     # someone held QC(view 1)
    skip = make_block(GENESIS, 3, None, tc=tc_low)      # view 3 extends genesis (view 0)
    assert is_safe_to_vote(state, make_block(b2, 3, q2), None)                    # v == qc.view + 1
    assert not is_safe_to_vote(state, skip, None)                                  # skips views, no TC
    assert is_safe_to_vote(state, skip, tc_low)                                    # TC(v-1), qc >= max
    assert not is_safe_to_vote(state, skip, tc_high)                               # TC says a higher QC exists
    assert not is_safe_to_vote(state, skip, make_tc(1, {0: None, 1: None, 2: None}))  # TC not for v-1
    assert not is_safe_to_vote(replace(state, highest_voted_view=3), make_block(b2, 3, q2), None)
    assert not is_safe_to_vote(state, make_block(b2, 2, q2), None)                 # v must exceed qc.view
    unsafe = replace(state, config=make_config(0, unsafe_skip_tc_rule=True))
    assert is_safe_to_vote(unsafe, skip, tc_high)


def test_a_proposal_that_skips_a_view_needs_the_timeout_certificate(chain: Chain) -> None:
    b1, q1 = chain.b1, chain.q1
    state, _ = receive(fresh(2), b1)
    tc_low = make_tc(3, {0: q1, 2: q1, 3: q1})
    tc_high = make_tc(3, {0: make_qc(make_block(b1, 2, q1)), 2: q1, 3: q1})
    state_v4, actions = step(state, TimeoutReceived(make_timeout(4, 3, q1, last_tc=tc_low)))
    assert state_v4.view == 4
    assert len(votes_in(receive(state_v4, make_block(b1, 4, q1, tc=tc_low))[1])) == 1
    assert votes_in(receive(state_v4, make_block(b1, 4, q1))[1]) == []
    state_hi, _ = step(state, TimeoutReceived(make_timeout(4, 3, q1, last_tc=tc_high)))
    assert state_hi.view == 4
    assert votes_in(receive(state_hi, make_block(b1, 4, q1, tc=tc_high))[1]) == []


# -- rule 3: timeouts, TCs, back-off ---------------------------------------------------------------

def test_local_timeout_persists_then_broadcasts_and_forbids_voting_in_that_view(chain: Chain) -> None:
    b1 = chain.b1
    state, actions = step(fresh(0), LocalTimeout(1))
    assert [type(a) for a in actions] == [PersistSafety, Broadcast, ScheduleTimeout]
    assert isinstance(actions[1], Broadcast)
    timeout = actions[1].message
    assert actions[0] == PersistSafety(SafetyData(1, None, None, timeout))   # the timeout itself is persisted
    assert isinstance(timeout, Timeout) and timeout.view == 1 and CRYPTO[2].verify_timeout(timeout)
    assert votes_in(receive(state, b1)[1]) == []
    _, again = step(state, LocalTimeout(1))
    assert Broadcast(timeout) in again and of_type(again, PersistSafety) == []   # re-sent, not re-signed


def test_back_off_doubles_from_the_second_consecutive_timeout_and_resets_on_a_qc(chain: Chain) -> None:
    """base, base, 2 base, ...: one crashed leader (two timeouts in a row in round-robin) costs 2 x base."""
    state = fresh(0)
    durations = []
    for _ in range(5):
        state, actions = step(state, LocalTimeout(1))
        durations += [a.duration_ms for a in actions if isinstance(a, ScheduleTimeout)]
    assert durations == [100, 200, 400, 800, 800]
    q1 = chain.q1
    state, actions = step(state, TimeoutReceived(make_timeout(2, 1, q1)))
    assert state.view == 2 and ScheduleTimeout(2, BASE_MS) in actions


def test_a_quorum_of_timeouts_forms_a_tc_and_the_next_leader_proposes_with_it() -> None:
    state, _ = step(fresh(2), LocalTimeout(1))
    state, actions = step(state, TimeoutReceived(make_timeout(1, 0, None)))
    # f+1 = 2 timeouts already: nothing more to join (it timed out itself); no TC yet
    assert state.view == 1 and of_type(actions, BuildProposal) == []
    state, actions = step(state, TimeoutReceived(make_timeout(1, 3, None)))
    assert state.view == 2 and state.last_tc is not None and state.last_tc.view == 1
    builds = of_type(actions, BuildProposal)
    assert builds == [BuildProposal(2, GENESIS, None, state.last_tc)]
    assert CRYPTO[0].verify_tc(state.last_tc)


def test_f_plus_one_timeouts_make_a_validator_time_out_too() -> None:
    state, actions = step(fresh(0), TimeoutReceived(make_timeout(1, 1, None)))
    assert of_type(actions, Broadcast) == []
    state, actions = step(state, TimeoutReceived(make_timeout(1, 2, None)))
    sent = [a.message for a in actions if isinstance(a, Broadcast)]
    assert len(sent) == 1 and isinstance(sent[0], Timeout) and sent[0].voter == 0
    assert state.view == 2  # its own timeout completed the TC


def test_a_timeout_whose_signature_does_not_match_its_high_qc_is_not_counted(chain: Chain) -> None:
    q1 = chain.q1
    lie = Timeout(2, 1, q1, None, CRYPTO[1].sign_timeout(2, 0))
    state, _ = step(replace(fresh(0), view=2), TimeoutReceived(lie))
    assert state.timeouts == {}


# -- rule 4: commit --------------------------------------------------------------------------------

def test_commit_on_a_two_chain_of_consecutive_views(chain: Chain) -> None:
    b1, q1, b2, q2, b3 = chain.b1, chain.q1, chain.b2, chain.q2, chain.b3
    state, _ = receive(fresh(0), b1)
    state, actions = receive(state, b2)
    assert of_type(actions, Commit) == []  # QC(B1) alone is a 1-chain
    state, actions = receive(state, b3)
    assert of_type(actions, Commit) == [Commit(((CommittedBlock(b1, q1)),), FinalityProof(b2, q2))]
    assert state.committed == b1 and state.committed_qc == q1 and b1.hash not in state.blocks


def test_no_commit_when_the_certified_child_skips_a_view(chain: Chain) -> None:
    b1, q1 = chain.b1, chain.q1
    tc2 = make_tc(2, {0: q1, 1: q1, 3: q1})
    c3 = make_block(b1, 3, q1, tc=tc2)     # view 3 after a timed-out view 2
    qc3 = make_qc(c3)
    c4 = make_block(c3, 4, qc3)
    qc4 = make_qc(c4)
    c5 = make_block(c4, 5, qc4)
    state, _ = receive(fresh(0), b1)
    state, actions = receive(state, c3)
    state, actions = receive(state, c4)    # learns QC(c3): c3 (view 3) over B1 (view 1): no 2-chain
    assert of_type(actions, Commit) == [] and state.committed == GENESIS
    state, actions = receive(state, c5)    # learns QC(c4): c4 (view 4) over c3 (view 3): commits B1, c3
    assert of_type(actions, Commit) == [Commit((CommittedBlock(b1, q1), CommittedBlock(c3, qc3)), FinalityProof(c4, qc4))]


def test_commit_waits_until_every_block_on_the_path_is_validated(chain: Chain) -> None:
    b1, b2, b3 = chain.b1, chain.b2, chain.b3
    state, _ = receive(fresh(0), b1, validate=False)
    state, _ = receive(state, b2, validate=False)
    state, actions = receive(state, b3, validate=False)
    assert of_type(actions, Commit) == []
    state, actions = step(state, BlockValidated(b1.hash, True))
    assert len(of_type(actions, Commit)) == 1


# -- rule 5 and synchronisation --------------------------------------------------------------------

def test_highest_qc_follows_every_qc_seen_and_a_far_behind_validator_catches_up_from_one_message() -> None:
    far = make_block(GENESIS, 1, None)
    fake_block_hash = b"\x42" * 32
    votes = {i: CRYPTO[i].sign_vote(fake_block_hash, 7, 500) for i in (1, 2, 3)}
    qc500 = CRYPTO[0].aggregate_qc(fake_block_hash, 7, 500, votes)
    state, actions = step(fresh(0), TimeoutReceived(make_timeout(501, 2, qc500)))
    assert state.view == 501 and state.highest_qc == qc500
    assert ScheduleTimeout(501, BASE_MS) in actions
    assert far.hash not in state.blocks


def test_a_proposal_with_an_unknown_parent_fetches_it_then_validates_in_order(chain: Chain) -> None:
    b1, b2 = chain.b1, chain.b2
    state, actions = receive(fresh(0), b2, sender=2, validate=False)
    assert actions == [ScheduleTimeout(2, BASE_MS), FetchBlock(b1.hash, 2)]   # QC(B1) moved it to view 2
    state, actions = receive(state, b1, sender=2, validate=False)
    assert actions == [ValidateBlock(b1)]
    state, actions = step(state, BlockValidated(b1.hash, True))
    assert actions == [ValidateBlock(b2)]
    state, actions = step(state, BlockValidated(b2.hash, True))
    assert votes_in(actions) == [make_vote(b2, 0)]


def test_a_copy_with_its_tc_stripped_does_not_cost_the_vote(chain: Chain) -> None:
    b1, q1 = chain.b1, chain.q1
    state, _ = receive(fresh(2), b1)
    tc3 = make_tc(3, {0: q1, 1: q1, 3: q1})
    state, _ = step(state, TimeoutReceived(make_timeout(4, 3, q1, last_tc=tc3)))
    real = make_block(b1, 4, q1, tc=tc3)
    stripped = replace(real, timeout_cert=None)      # same signed header: a relay dropped the TC
    state, actions = receive(state, stripped)
    assert votes_in(actions) == []
    state, actions = receive(state, real)
    assert votes_in(actions) == [make_vote(real, 2)]
    assert state.blocks[real.hash].block.timeout_cert == real.timeout_cert


def test_a_block_that_failed_validation_is_fetched_again_once_certified_and_validated_anew(chain: Chain) -> None:
    b1, b2 = chain.b1, chain.b2
    altered = replace(b1, transactions=(b"altered on the way",))   # same header hash and signature
    state, actions = receive(fresh(0), altered, validate=False)
    state, _ = step(state, BlockValidated(b1.hash, False))
    state, actions = receive(state, b2, validate=False)           # carries QC(B1): q validated it
    fetches = of_type(actions, FetchBlock)
    assert [f.block_hash for f in fetches] == [b1.hash] and fetches[0].peer in (1, 2)
    state, actions = receive(state, b1, validate=False)
    assert actions == [ValidateBlock(b1)]
    state, actions = step(state, BlockValidated(b1.hash, True))
    assert actions == [ValidateBlock(b2)]   # its child, which was waiting


# -- stale, future and malformed input ---------------------------------------------------------------

def test_stale_and_far_future_messages_are_ignored(chain: Chain) -> None:
    b1, b2, b3 = chain.b1, chain.b2, chain.b3
    state, _ = receive(fresh(1), b1)
    state, _ = receive(state, b2)
    state, _ = receive(state, b3)
    assert state.view == 3
    far = b"\x01" * 32
    events: list[Event] = [
        VoteReceived(make_vote(b1, 0)),                                        # view 1 < view - 1
        VoteReceived(Vote(far, 1, 10**6, 1, CRYPTO[1].sign_vote(far, 1, 10**6))),  # beyond the window
        VoteReceived(Vote(far, 1, 2**64 - 1, 2**32, bytes(96))),               # no such validator
        TimeoutReceived(make_timeout(2, 1, chain.q1)),                         # a view already left
        LocalTimeout(2),                                                       # a stale timer
        ProposalReceived(Proposal(b2), 2),                                     # already known
        ProposalReceived(Proposal(make_block(b1, 2, chain.q1, tx=b"late")), 2),  # a stale equivocation
        BlockValidated(b"\x09" * 32, True),                                   # never asked for
        ProposalBuilt(b3),                                                     # never asked for
    ]
    for event in events:
        after, actions = step(state, event)
        assert [a for a in actions if not isinstance(a, RecordEvidence)] == []
        assert after.view == state.view and after.blocks == state.blocks and after.votes == state.votes


def test_a_vote_for_an_unknown_block_is_harmless() -> None:
    unknown = b"\x07" * 32
    state, actions = step(fresh(2), VoteReceived(Vote(unknown, 1, 1, 3, CRYPTO[3].sign_vote(unknown, 1, 1))))
    assert actions == [] and state.view == 1


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_raise_decode_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except DecodeError:
        return
    event: Event
    if isinstance(message, Proposal):
        event = ProposalReceived(message, 1)
    elif isinstance(message, Vote):
        event = VoteReceived(message)
    else:
        event = TimeoutReceived(message)
    step(fresh(0), event)


_uint = st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1))
_sig = st.one_of(st.just(bytes(96)), st.binary(min_size=96, max_size=96))


@given(st.builds(Vote, st.binary(min_size=32, max_size=32), _uint, _uint, _uint, _sig),
       st.builds(Timeout, _uint, _uint, st.none(), st.none(), _sig))
def test_well_formed_messages_with_random_fields_never_crash_a_core(vote: Vote, timeout: Timeout) -> None:
    state = fresh(1)
    for msg in (vote, timeout):
        assert decode_message(encode_message(msg)) == msg
    state, actions = run(state, [VoteReceived(vote), TimeoutReceived(timeout)])
    assert of_type(actions, SendTo) == []


@given(st.lists(st.integers(0, 255), min_size=1, max_size=40))
def test_mutated_proposals_never_crash_a_core_and_never_get_a_vote(flips: list[int]) -> None:
    good = encode_message(Proposal(make_block(GENESIS, 1, None)))
    data = bytearray(good)
    for k, value in enumerate(flips):
        data[(k * 7919 + value) % len(data)] = value
    try:
        message = decode_message(bytes(data))
    except DecodeError:
        return
    if isinstance(message, Proposal) and bytes(data) != good:
        _, actions = receive(fresh(0), message.block)
        assert votes_in(actions) == [] or message.block.hash == make_block(GENESIS, 1, None).hash


# -- evidence ----------------------------------------------------------------------------------------

def test_a_double_vote_is_recorded_once_as_verifiable_evidence(chain: Chain) -> None:
    b1 = chain.b1
    other = make_block(GENESIS, 1, None, tx=b"other")
    state, actions = run(fresh(2), [VoteReceived(make_vote(b1, 0)), VoteReceived(make_vote(other, 0))])
    records = of_type(actions, RecordEvidence)
    assert len(records) == 1
    evidence = records[0].evidence
    assert evidence.kind == DOUBLE_VOTE and evidence.get_offender(N) == 0
    assert verify_evidence(evidence, CRYPTO[3], N)
    assert Evidence.decode(evidence.encode()) == evidence
    third = make_block(GENESIS, 1, None, tx=b"third")
    _, actions = step(state, VoteReceived(make_vote(third, 0)))
    assert of_type(actions, RecordEvidence) == []


def test_evidence_that_does_not_prove_equivocation_does_not_verify(chain: Chain) -> None:
    b1 = chain.b1
    vote = make_vote(b1, 0)
    other = make_block(GENESIS, 1, None, tx=b"other")
    assert not verify_evidence(Evidence(DOUBLE_VOTE, vote, vote), CRYPTO[0], N)
    forged = replace(make_vote(other, 0), signature=CRYPTO[1].sign_vote(other.hash, 1, 1))
    assert not verify_evidence(Evidence(DOUBLE_VOTE, vote, forged), CRYPTO[0], N)
    assert verify_evidence(Evidence(DOUBLE_PROPOSAL, b1, other), CRYPTO[0], N)
    with pytest.raises(DecodeError):
        Evidence.decode(codec.encode(["triple-vote", [], []]))


# -- restart -----------------------------------------------------------------------------------------

def test_restart_from_persisted_safety_data_never_votes_twice_in_a_view(chain: Chain) -> None:
    b1 = chain.b1
    other = make_block(GENESIS, 1, None, tx=b"other")
    _, actions = receive(fresh(0), b1)
    persisted = [a.data for a in actions if isinstance(a, PersistSafety)]
    assert persisted == [SafetyData(1, None)]
    safety = SafetyData.decode(persisted[-1].encode())  # what the node reads back after SIGKILL
    restarted = restore_core(make_config(0), CRYPTO[0], GENESIS, None, safety)
    assert restarted.view == 1 and restarted.highest_voted_view == 1
    _, actions = run(restarted, [Start()])
    assert votes_in(receive(restarted, other)[1]) == []
    assert votes_in(receive(restarted, b1)[1]) == []
    # the check that does it: without it the restarted validator signs a second, conflicting vote
    unsafe = restore_core(make_config(0, unsafe_skip_highest_voted_view_check=True), CRYPTO[0], GENESIS, None, safety)
    assert votes_in(receive(unsafe, other)[1]) == [make_vote(other, 0)]


def test_restart_after_a_timeout_resumes_in_that_view_and_cannot_vote_there(chain: Chain) -> None:
    b1, q1, b2 = chain.b1, chain.q1, chain.b2
    state, _ = receive(fresh(0), b1)
    state, actions = step(state, LocalTimeout(1))
    state, _ = step(state, TimeoutReceived(make_timeout(2, 1, q1)))   # enter view 2 with QC(B1)
    state, actions = step(state, LocalTimeout(2))
    (sent,) = [a.message for a in actions if isinstance(a, Broadcast)]
    safety = [a.data for a in actions if isinstance(a, PersistSafety)][-1]
    assert safety == SafetyData(2, q1, None, sent)
    assert SafetyData.decode(safety.encode()) == safety
    restarted = restore_core(make_config(0), CRYPTO[0], GENESIS, None, safety)
    assert restarted.view == 2 and restarted.highest_qc == q1
    restarted, _ = receive(restarted, b1)
    assert votes_in(receive(restarted, b2)[1]) == []
    # its timer fires again: it re-sends the timeout it persisted, never a second one for view 2
    _, again = step(restarted, LocalTimeout(2))
    assert [a.message for a in again if isinstance(a, Broadcast)] == [sent]


def test_safety_data_written_before_the_timeout_was_kept_still_decodes() -> None:
    old = codec.encode([3, None, None])
    assert SafetyData.decode(old) == SafetyData(3, None, None, None)


def test_a_double_timeout_is_recorded_as_verifiable_evidence_and_honest_repeats_are_not(chain: Chain) -> None:
    from chainshare.consensus.evidence import DOUBLE_TIMEOUT

    state, _ = receive(fresh(0), chain.b1)
    state, _ = receive(state, chain.b2)       # view 3, QC(B1) and QC(B2) known
    first = make_timeout(3, 2, chain.q1)
    state, actions = step(state, TimeoutReceived(first))
    assert of_type(actions, RecordEvidence) == []
    state, actions = step(state, TimeoutReceived(first))   # the same one again (a re-send): nothing
    assert of_type(actions, RecordEvidence) == []
    forged = Timeout(3, 2, chain.q2, None, CRYPTO[1].sign_timeout(3, chain.q2.round))   # not 2's signature
    state, actions = step(state, TimeoutReceived(forged))
    assert of_type(actions, RecordEvidence) == []
    second = make_timeout(3, 2, chain.q2)
    state, actions = step(state, TimeoutReceived(second))
    (rec,) = of_type(actions, RecordEvidence)
    assert rec.evidence == Evidence(DOUBLE_TIMEOUT, first, second) and rec.evidence.get_offender(N) == 2
    assert verify_evidence(rec.evidence, CRYPTO[0], N)
    assert Evidence.decode(rec.evidence.encode()) == rec.evidence
    assert not verify_evidence(Evidence(DOUBLE_TIMEOUT, first, first), CRYPTO[0], N)
    _, actions = step(state, TimeoutReceived(second))       # reported once
    assert of_type(actions, RecordEvidence) == []


class _CountingCrypto(FakeCrypto):
    calls: list[str]

    def verify_vote(self, vote: Vote) -> bool:
        self.calls.append("vote")
        return super().verify_vote(vote)

    def verify_proposal(self, proposer: int, block_hash: bytes, signature: bytes) -> bool:
        self.calls.append("proposal")
        return super().verify_proposal(proposer, block_hash, signature)

    def verify_timeout(self, timeout: Timeout) -> bool:
        self.calls.append("timeout")
        return super().verify_timeout(timeout)

    def verify_tc(self, tc: TimeoutCertificate) -> bool:
        self.calls.append("tc")
        return super().verify_tc(tc)

    def verify_qc(self, qc: QuorumCertificate) -> bool:
        self.calls.append("qc")
        return super().verify_qc(qc)


def test_a_timeout_with_a_forged_signature_costs_no_certificate_check(chain: Chain) -> None:
    """Cheap before costly: an admitted peer that sends timeouts with bad signatures carrying valid
    (aggregate) certificates gets one signature check per message, not a TC verification."""
    crypto = _CountingCrypto(CRYPTO[0].keys, 0)
    crypto.calls = []
    state = initial_state(make_config(0), crypto, GENESIS)
    tc = make_tc(1, {1: None, 2: None, 3: None})
    forged = Timeout(2, 1, chain.q1, tc, bytes(96))
    state, actions = step(state, TimeoutReceived(forged))
    assert crypto.calls == ["timeout"] and state.view == 1 and actions == []
    genuine = make_timeout(2, 1, chain.q1, tc)
    state, _ = step(state, TimeoutReceived(genuine))
    assert crypto.calls[1:] == ["timeout", "qc", "tc"] and state.view == 2


def counting(index: int) -> tuple[CoreState, _CountingCrypto]:
    crypto = _CountingCrypto(CRYPTO[index].keys, index)
    crypto.calls = []
    return initial_state(make_config(index), crypto, GENESIS), crypto


def test_copies_of_an_equivocation_already_reported_are_not_verified_again(chain: Chain) -> None:
    """A byzantine validator replaying its own (validly signed) double vote, double timeout or second
    proposal would otherwise cost a signature check per copy, which no failure budget sees."""
    from chainshare.consensus.evidence import DOUBLE_TIMEOUT

    other = make_block(GENESIS, 1, None, tx=b"other")
    state, crypto = counting(2)
    state, actions = run(state, [VoteReceived(make_vote(chain.b1, 0)), VoteReceived(make_vote(other, 0))])
    assert crypto.calls == ["vote", "vote"] and len(of_type(actions, RecordEvidence)) == 1
    third = make_block(GENESIS, 1, None, tx=b"third")
    state, actions = run(state, [VoteReceived(make_vote(other, 0)), VoteReceived(make_vote(third, 0))] * 5)
    assert crypto.calls == ["vote", "vote"] and actions == []

    state, crypto = counting(0)
    state, _ = receive(state, chain.b1)
    state, _ = receive(state, chain.b2)  # view 3
    first, second = make_timeout(3, 2, chain.q1), make_timeout(3, 2, chain.q2)
    state, actions = run(state, [TimeoutReceived(first), TimeoutReceived(second)])
    assert [r.evidence.kind for r in of_type(actions, RecordEvidence)] == [DOUBLE_TIMEOUT]
    checks = len(crypto.calls)
    state, actions = run(state, [TimeoutReceived(second)] * 5)
    assert len(crypto.calls) == checks and actions == []

    state, crypto = counting(3)
    state, _ = receive(state, chain.b1)
    rival = make_block(GENESIS, 1, None, tx=b"rival")
    state, actions = receive(state, rival)
    assert [r.evidence.kind for r in of_type(actions, RecordEvidence)] == [DOUBLE_PROPOSAL]
    checks = len(crypto.calls)
    state, actions = run(state, [ProposalReceived(Proposal(rival), 1)] * 5)
    assert len(crypto.calls) == checks and actions == []


def test_a_far_future_proposal_is_checked_only_when_its_certificates_bring_it_into_the_window(chain: Chain) -> None:
    state, crypto = counting(0)
    state, _ = receive(state, chain.b1)
    state, _ = receive(state, chain.b2)
    far_view = 3 + 10_000
    tc = make_tc(far_view - 1, {1: chain.q2, 2: chain.q2, 3: chain.q2})
    signed = make_block(chain.b2, far_view, chain.q2)
    unsigned = Block(signed.header, signed.transactions, signed.justify, signed.timeout_cert, bytes(96))
    crypto.calls.clear()
    # Far ahead, not brought into the window by its QC: its signature is never checked, it is not kept.
    state, actions = step(state, ProposalReceived(Proposal(unsigned), far_view % N))
    assert crypto.calls == ["qc"] and unsigned.hash not in state.blocks and state.view == 3
    # Far ahead and carrying no QC newer than its highest (here other valid aggregates of old views,
    # which no cache holds) and no usable TC: nothing at all is verified, however often it comes.
    old_qc = make_qc(chain.b2, (1, 2, 3))
    stale = make_block(chain.b2, far_view, old_qc)
    stale = Block(stale.header, stale.transactions, stale.justify, stale.timeout_cert, bytes(96))
    far_timeout = make_timeout(far_view, 1, make_qc(chain.b1, (1, 2, 3)))
    state, actions = run(state, [ProposalReceived(Proposal(stale), far_view % N), TimeoutReceived(far_timeout)] * 5)
    assert crypto.calls == ["qc"] and actions == []
    # Its TC brings this validator to its view: now its signature is checked, and a forged one is not kept.
    carried = make_block(chain.b2, far_view, chain.q2, tc=tc)
    forged = Block(carried.header, carried.transactions, carried.justify, carried.timeout_cert, bytes(96))
    state, _ = step(state, ProposalReceived(Proposal(forged), far_view % N))
    assert state.view == far_view and crypto.calls.count("proposal") == 1
    assert forged.hash not in state.blocks
    state, actions = receive(state, carried)
    assert carried.hash in state.blocks and crypto.calls.count("proposal") == 2


def test_blocks_persisted_before_voting_come_back_after_a_restart_and_are_built_upon(chain: Chain) -> None:
    b1, b2, q2 = chain.b1, chain.b2, chain.q2
    state, a1 = receive(fresh(3), b1)
    state, a2 = receive(state, b2)
    persisted = [a for a in a1 + a2 if isinstance(a, PersistSafety)]
    assert [p.block for p in persisted] == [b1, b2]
    safety = SafetyData(persisted[-1].data.highest_voted_view, q2)   # it also learned QC(B2)
    restarted = restore_core(make_config(3), CRYPTO[3], GENESIS, None, safety, [b2, b1])
    assert set(restarted.blocks) == {b1.hash, b2.hash} and restarted.view == 3
    restarted, actions = step(restarted, Start())
    assert actions == [ScheduleTimeout(3, BASE_MS), ValidateBlock(b1)]
    restarted, actions = step(restarted, BlockValidated(b1.hash, True))
    assert actions == [ValidateBlock(b2)]
    restarted, actions = step(restarted, BlockValidated(b2.hash, True))
    assert actions == [BuildProposal(3, b2, q2, None)]   # the leader of view 3 extends its highest QC


def test_restore_from_a_committed_head_resumes_above_it(chain: Chain) -> None:
    b2, q2 = chain.b2, chain.q2
    state = restore_core(make_config(3), CRYPTO[3], b2, q2, None)
    assert state.view == 3 and state.committed == b2
    _, actions = step(state, Start())
    assert BuildProposal(3, b2, q2, None) in actions


def test_restart_keeps_the_tc_it_entered_its_view_by_and_hands_it_to_validators_behind() -> None:
    tc1 = make_tc(1, {1: None, 2: None, 3: None})
    state, _ = step(fresh(0), TimeoutReceived(make_timeout(2, 1, None, last_tc=tc1)))
    assert state.view == 2 and state.last_tc == tc1
    _, actions = step(state, LocalTimeout(2))
    safety = [a.data for a in actions if isinstance(a, PersistSafety)][-1]
    assert (safety.highest_voted_view, safety.highest_qc, safety.last_tc) == (2, None, tc1)
    restarted = restore_core(make_config(0), CRYPTO[0], GENESIS, None, SafetyData.decode(safety.encode()))
    _, actions = step(restarted, LocalTimeout(2))
    timeout = [a.message for a in actions if isinstance(a, Broadcast)][0]
    assert isinstance(timeout, Timeout) and timeout.last_tc == tc1
    behind, _ = step(fresh(3), TimeoutReceived(timeout))
    assert behind.view == 2


def test_safety_data_decoder_refuses_malformed_input() -> None:
    for bad in (codec.encode([1]), codec.encode([-1, None, None]), codec.encode([True, None, None]),
                codec.encode([1, None]), b"\xc1"):
        with pytest.raises(DecodeError):
            SafetyData.decode(bad)


# -- message codecs ----------------------------------------------------------------------------------

def test_every_message_round_trips_through_its_canonical_encoding(chain: Chain) -> None:
    b1, q1 = chain.b1, chain.q1
    tc = make_tc(2, {0: q1, 1: None, 3: q1})
    b3 = make_block(b1, 3, q1, tc=tc)
    for message in (Proposal(b3), make_vote(b1, 2), make_timeout(3, 1, q1, last_tc=tc), make_timeout(1, 0, None),
                    QcAnnouncement(q1)):
        assert decode_message(encode_message(message)) == message
    assert TimeoutCertificate.decode(tc.encode()) == tc
    with pytest.raises(DecodeError):  # one high-QC view per signer
        TimeoutCertificate.from_list([2, make_bitmap([0, 1, 2], N), [1, 1], None, bytes(96)])
    with pytest.raises(DecodeError):
        decode_message(codec.encode([9, []]))


# -- the BLS adapter the node plugs in -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bls_network() -> tuple[list[bytes], list[BlsCrypto]]:
    secrets = [bls.generate_secret_key(bytes([i + 1]) * 32) for i in range(N)]
    pks = [bls.public_key(s) for s in secrets]
    return pks, [BlsCrypto(SIM_CHAIN_ID, pks, i, secrets[i]) for i in range(N)]


def test_bls_adapter_votes_qcs_and_tcs_verify_and_forgeries_do_not(
        bls_network: tuple[list[bytes], list[BlsCrypto]]) -> None:
    pks, nodes = bls_network
    block_hash = b"\x11" * 32
    votes = [Vote(block_hash, 3, 5, i, nodes[i].sign_vote(block_hash, 3, 5)) for i in range(N)]
    assert all(nodes[0].verify_vote(v) for v in votes)
    assert not nodes[0].verify_vote(replace(votes[1], voter=2))   # signed by 1, claimed by 2
    qc = nodes[0].aggregate_qc(block_hash, 3, 5, {v.voter: v.signature for v in votes[:3]})
    assert nodes[3].verify_qc(qc)
    qcmod.verify_qc(qc, [{"bls_public_key": pk} for pk in pks], SIM_CHAIN_ID)   # the ledger's own check agrees
    assert not nodes[3].verify_qc(replace(qc, round=6))
    assert not nodes[3].verify_qc(nodes[0].aggregate_qc(block_hash, 3, 5, {0: votes[0].signature, 1: votes[1].signature}))
    timeouts = {0: (5, nodes[0].sign_timeout(6, 5)), 1: (4, nodes[1].sign_timeout(6, 4)),
                3: (5, nodes[3].sign_timeout(6, 5))}
    tc = nodes[2].aggregate_tc(6, timeouts, qc)
    assert nodes[1].verify_tc(tc) and tc.max_high_qc_view == 5
    assert not nodes[1].verify_tc(replace(tc, high_qc_views=(5, 5, 5)))
    assert not nodes[1].verify_tc(replace(tc, view=7))
    t = Timeout(6, 1, None, None, nodes[1].sign_timeout(6, 0))
    assert nodes[0].verify_timeout(t) and not nodes[0].verify_timeout(replace(t, view=7))
    sig = nodes[2].sign_proposal(block_hash)
    assert nodes[0].verify_proposal(2, block_hash, sig)
    assert qcmod.verify_proposal_signature(pks[2], SIM_CHAIN_ID, block_hash, sig)
    assert not nodes[0].verify_proposal(1, block_hash, sig) and not nodes[0].verify_proposal(9, block_hash, sig)
    assert not nodes[0].verify_vote(replace(votes[0], signature=b"\x00" * 96))


def test_a_bls_adapter_refuses_a_secret_key_that_is_not_its_validator_entry(
        bls_network: tuple[list[bytes], list[BlsCrypto]]) -> None:
    """The next leader counts its own vote unverified (core._deliver_vote): sound only because the key
    it signs with is the set's entry at its index, which the adapter checks once when it is made."""
    pks, _ = bls_network
    secret0 = bls.generate_secret_key(bytes([1]) * 32)
    with pytest.raises(ConsensusError, match=r"validator 1's public key .* epoch 3"):
        BlsCrypto(SIM_CHAIN_ID, pks, 1, secret0, 3)
    with pytest.raises(ConsensusError, match=r"index -1 is not in this validator set of 4"):
        BlsCrypto(SIM_CHAIN_ID, pks, -1, secret0)
    assert BlsCrypto(SIM_CHAIN_ID, pks, 0, secret0, 3).index == 0
    assert BlsCrypto(SIM_CHAIN_ID, pks, -1).index == -1   # verify-only: no key to match


def test_a_qc_with_the_leaders_own_unverified_bls_vote_verifies_for_a_peer(
        bls_network: tuple[list[bytes], list[BlsCrypto]]) -> None:
    pks, nodes = bls_network
    unsigned = build_sim_block(BuildProposal(1, GENESIS, None, None), ADDRESSES[1], 0, (b"tx",))
    b1 = Block(unsigned.header, unsigned.transactions, None, None, nodes[1].sign_proposal(unsigned.hash))
    state = initial_state(make_config(2), nodes[2], GENESIS)   # the leader of view 2 votes in view 1
    state, actions = receive(state, b1)
    assert votes_in(actions) == []   # its own vote stayed here, counted without a check
    peer_votes = [Vote(b1.hash, 1, 1, i, nodes[i].sign_vote(b1.hash, 1, 1)) for i in (0, 1)]
    state, actions = run(state, [VoteReceived(v) for v in peer_votes])
    builds = [a for a in actions if isinstance(a, BuildProposal)]
    assert len(builds) == 1 and builds[0].justify is not None
    qc = builds[0].justify
    assert qc.signer_indices() == [0, 1, 2]
    assert BlsCrypto(SIM_CHAIN_ID, pks, -1).verify_qc(qc)


def test_bls_adapter_counts_each_check_that_fails_and_none_that_passes(
        bls_network: tuple[list[bytes], list[BlsCrypto]]) -> None:
    """What the replica charges a peer for (chainshare/consensus/peergate.py): every verify_* that fails."""
    _, nodes = bls_network
    me = BlsCrypto(SIM_CHAIN_ID, nodes[0].public_keys, 0)
    block_hash = b"\x12" * 32
    vote = Vote(block_hash, 3, 5, 1, nodes[1].sign_vote(block_hash, 3, 5))
    qc = nodes[0].aggregate_qc(block_hash, 3, 5, {i: nodes[i].sign_vote(block_hash, 3, 5) for i in range(3)})
    timeout = Timeout(6, 1, None, None, nodes[1].sign_timeout(6, 0))
    tc = nodes[2].aggregate_tc(6, {i: (0, nodes[i].sign_timeout(6, 0)) for i in (0, 1, 3)}, None)
    sig = nodes[2].sign_proposal(block_hash)
    passing = [me.verify_vote(vote), me.verify_qc(qc), me.verify_timeout(timeout), me.verify_tc(tc),
               me.verify_proposal(2, block_hash, sig)]
    assert all(passing) and me.failed_checks == 0
    failing = [me.verify_vote(replace(vote, voter=2)), me.verify_qc(replace(qc, round=6)),
               me.verify_qc(replace(qc, signers=b"\x01")), me.verify_timeout(replace(timeout, view=7)),
               me.verify_tc(replace(tc, view=7)), me.verify_tc(replace(tc, signers=b"\x01")),
               me.verify_proposal(1, block_hash, sig), me.verify_proposal(9, block_hash, sig)]
    assert not any(failing) and me.failed_checks == len(failing)


def test_cores_on_bls_certify_a_block_the_ledger_check_accepts(
        bls_network: tuple[list[bytes], list[BlsCrypto]]) -> None:
    pks, nodes = bls_network
    configs = [make_config(i) for i in range(N)]
    states = [initial_state(configs[i], nodes[i], GENESIS) for i in range(N)]
    states[1], actions = step(states[1], Start())
    request = of_type(actions, BuildProposal)[0]
    assert isinstance(request, BuildProposal)
    states[1], actions = step(states[1], ProposalBuilt(build_sim_block(request, ADDRESSES[1], 0, (b"tx",))))
    proposal = [a.message for a in actions if isinstance(a, Broadcast)][0]
    assert isinstance(proposal, Proposal)
    collected = votes_in(actions)
    for i in (0, 3):
        states[i], acts = receive(states[i], proposal.block, sender=1)
        collected += votes_in(acts)
    assert {v.voter for v in collected} == {0, 1, 3}
    states[2], acts = receive(states[2], proposal.block, sender=1)
    states[2], acts = run(states[2], [VoteReceived(v) for v in collected])
    build = of_type(acts, BuildProposal)
    assert len(build) == 1 and isinstance(build[0], BuildProposal) and build[0].justify is not None
    qcmod.verify_qc(build[0].justify, [{"bls_public_key": pk} for pk in pks], SIM_CHAIN_ID)


# -- a core of a new validator set, rooted on the last block of the previous set -------------------

def test_a_new_set_core_accepts_any_valid_qc_of_its_committed_head_from_the_previous_set() -> None:
    """The first block of a new set carries the previous set's QC of the last block (H-1). Two
    valid QCs of that block (other signer subsets) may reach different validators of the new set
    (a byzantine leader of the old set aggregates both); a QC of H-1 has the OLD set's bitmap and
    quorum, so checking its shape against the new set would make each half refuse the other's
    proposal and timeouts, and the new set would never form a QC or a TC."""
    old = [bls.generate_secret_key(bytes([i + 1]) * 32) for i in range(4)]
    new = [bls.generate_secret_key(bytes([i + 11]) * 32) for i in range(5)]
    old_pks, new_pks = [bls.public_key(s) for s in old], [bls.public_key(s) for s in new]
    activation = 2
    prior = BlsCrypto(SIM_CHAIN_ID, old_pks, -1, None, 0)
    cryptos = [BlsCrypto(SIM_CHAIN_ID, new_pks, i, new[i], 1, prior=prior, activation_height=activation)
               for i in range(5)]
    addresses = tuple(validator_address(100 + i) for i in range(5))
    last = make_block(GENESIS, 1, None)  # block H-1 = 1, certified by the old set (epoch 0) in view 1

    def old_qc(signers: Sequence[int]) -> QuorumCertificate:
        votes = {i: qcmod.sign_vote(old[i], SIM_CHAIN_ID, last.hash, 1, 1, 0) for i in signers}
        return qcmod.aggregate_qc(last.hash, 1, 1, votes, 4)

    qc_a, qc_b = old_qc((0, 1, 2)), old_qc((1, 2, 3))
    assert prior.verify_qc(qc_a) and prior.verify_qc(qc_b) and qc_a != qc_b
    config = CoreConfig(SIM_CHAIN_ID, addresses, 0, base_timeout_ms=BASE_MS, max_timeout_ms=MAX_MS)
    state = restore_core(config, cryptos[0], last, qc_a)
    assert state.view == 2
    # The new leader of view 2 (2 mod 5) holds qc_b: its proposal is valid and gets validated.
    unsigned = build_sim_block(BuildProposal(2, last, qc_b, None), addresses[2], 0, (b"tx",))
    proposal = replace(unsigned, signature=cryptos[2].sign_proposal(unsigned.hash))
    _, actions = step(state, ProposalReceived(Proposal(proposal), 2))
    assert [a.block.hash for a in of_type(actions, ValidateBlock)] == [proposal.hash]
    # Timeouts that carry qc_b count toward the TC of view 2.
    for voter in (1, 2, 3, 4):
        state, _ = step(state, TimeoutReceived(Timeout(2, voter, qc_b, None, cryptos[voter].sign_timeout(2, 1))))
    assert state.view == 3 and state.last_tc is not None and state.last_tc.view == 2
    # A QC of another block at that height, or a forged one, is still refused.
    other = make_block(GENESIS, 1, None, tx=b"other")
    votes = {i: qcmod.sign_vote(old[i], SIM_CHAIN_ID, other.hash, 1, 1, 0) for i in (0, 1, 2)}
    forged = replace(qc_b, signature=qcmod.aggregate_qc(other.hash, 1, 1, votes, 4).signature)
    for bad in (forged, replace(qc_b, signers=make_bitmap([1, 2], 4))):
        bad_block = build_sim_block(BuildProposal(2, last, bad, None), addresses[2], 0, (b"tx",))
        bad_block = replace(bad_block, signature=cryptos[2].sign_proposal(bad_block.hash))
        _, actions = step(restore_core(config, cryptos[0], last, qc_a), ProposalReceived(Proposal(bad_block), 2))
        assert of_type(actions, ValidateBlock) == []


def test_the_next_leader_does_not_verify_its_own_vote_but_verifies_every_other(chain: Chain) -> None:
    state, crypto = counting(2)
    state, actions = receive(state, chain.b1)
    assert crypto.calls == ["proposal"] and votes_in(actions) == []   # its own vote: counted, not verified
    state, actions = run(state, [VoteReceived(make_vote(chain.b1, 0))])
    assert crypto.calls == ["proposal", "vote"] and of_type(actions, BuildProposal) == []
    forged = replace(make_vote(chain.b1, 1), signature=make_vote(chain.b1, 3).signature)
    state, actions = run(state, [VoteReceived(forged)])
    assert crypto.calls == ["proposal", "vote", "vote"] and of_type(actions, BuildProposal) == []
    state, actions = run(state, [VoteReceived(make_vote(chain.b1, 1))])
    builds = of_type(actions, BuildProposal)
    assert len(builds) == 1 and isinstance(builds[0], BuildProposal) and builds[0].justify is not None
    assert builds[0].justify.signer_indices() == [0, 1, 2]
