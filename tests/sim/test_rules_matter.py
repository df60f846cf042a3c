"""Each safety rule is needed: switch one off (the ``unsafe_*`` flags of ``CoreConfig``, for tests
only) and the simulator, or a scripted schedule, shows a safety failure that the full rule set
never shows on the same schedules."""

from __future__ import annotations

from dataclasses import replace

from chainshare.consensus.core import (
    BlockValidated,
    BuildProposal,
    CoreConfig,
    CoreState,
    PersistSafety,
    ProposalReceived,
    SafetyData,
    SendTo,
    ValidateBlock,
    initial_state,
    restore_core,
    step,
)
from chainshare.consensus.messages import Proposal, Vote
from chainshare.consensus.sim import (
    SIM_CHAIN_ID,
    TARGETED,
    FakeCrypto,
    build_sim_block,
    make_genesis_block,
    simulate,
    validator_address,
)
from chainshare.ledger.types import Block, QuorumCertificate

MUTATION_SEEDS = range(30)


def test_without_rule_two_tc_branch_the_fork_attack_finalizes_conflicting_blocks() -> None:
    """The byzantine leader shows one validator the QC that finalizes a block, has the network cut
    that validator off, and proposes to the others a block that forks below the finalized one.
    Rule 2's TC check is what makes them refuse it."""
    broken = [simulate(seed, replace(TARGETED, unsafe_skip_tc_rule=True)) for seed in MUTATION_SEEDS]
    assert any("SAFETY" in v for r in broken for v in r.violations)
    intact = [simulate(seed, TARGETED) for seed in MUTATION_SEEDS]
    assert [r.violations for r in intact if r.violations] == []


# -- a scripted schedule for the highest_voted_view check ---------------------------------------------

N = 4
CRYPTO = [FakeCrypto.for_network(N, i) for i in range(N)]
ADDRESSES = tuple(validator_address(i) for i in range(N))
GENESIS = make_genesis_block()
BYZANTINE = 3   # the leader of view 3


def _block(parent: Block, view: int, justify: QuorumCertificate | None, tx: bytes) -> Block:
    b = build_sim_block(BuildProposal(view, parent, justify, None), ADDRESSES[view % N], 0, (tx,))
    return Block(b.header, b.transactions, b.justify, b.timeout_cert, CRYPTO[view % N].sign_proposal(b.hash))


def _qc(block: Block, signers: tuple[int, ...]) -> QuorumCertificate:
    v = block.header.round
    return CRYPTO[0].aggregate_qc(block.hash, block.height, v,
                                  {i: CRYPTO[i].sign_vote(block.hash, block.height, v) for i in signers})


def _deliver(state: CoreState, block: Block) -> tuple[CoreState, list[Vote], list[SafetyData]]:
    state, actions = step(state, ProposalReceived(Proposal(block), block.header.round % N))
    pending = [a.block for a in actions if isinstance(a, ValidateBlock)]
    while pending:
        state, more = step(state, BlockValidated(pending.pop(0).hash, True))
        actions += more
        pending += [a.block for a in more if isinstance(a, ValidateBlock)]
    # a vote goes out as SendTo, or stays inside when this validator is the next leader
    votes = [a.message for a in actions if isinstance(a, SendTo) and isinstance(a.message, Vote)]
    if any(isinstance(a, PersistSafety) for a in actions) and not votes and state.last_vote is not None:
        votes = [state.last_vote]
    return state, votes, [a.data for a in actions if isinstance(a, PersistSafety)]


def _run_restart_schedule(unsafe: bool) -> list[QuorumCertificate]:
    """Validators 1 and 2 vote for the byzantine leader's block A in view 3, crash, restart from
    what they persisted and are shown its other block B for view 3. Returns every QC that the
    signed votes of view 3 make possible (anyone may aggregate public votes)."""
    b1 = _block(GENESIS, 1, None, b"b1")
    b2 = _block(b1, 2, _qc(b1, (0, 1, 2)), b"b2")
    q2 = _qc(b2, (0, 1, 2))
    a = _block(b2, 3, q2, b"A")
    b = _block(b2, 3, q2, b"B")
    votes: dict[bytes, set[int]] = {a.hash: {BYZANTINE}, b.hash: {BYZANTINE}}   # the byzantine votes for both
    for i in (0, 1, 2):
        config = CoreConfig(SIM_CHAIN_ID, ADDRESSES, i, unsafe_skip_highest_voted_view_check=unsafe)
        state = initial_state(config, CRYPTO[i], GENESIS)
        for blk in (b1, b2):
            state, _, _ = _deliver(state, blk)
        state, cast, persisted = _deliver(state, a)
        assert [v.block_hash for v in cast] == [a.hash] and persisted[-1].highest_voted_view == 3
        votes[a.hash].add(i)
        if i == 0:
            continue
        restarted = restore_core(config, CRYPTO[i], GENESIS, None, persisted[-1])   # SIGKILL, restart
        for blk in (b1, b2):
            restarted, _, _ = _deliver(restarted, blk)
        restarted, cast, _ = _deliver(restarted, b)
        votes[b.hash].update(v.voter for v in cast if v.block_hash == b.hash)
    quorum = N - (N - 1) // 3
    return [_qc(blk, tuple(sorted(votes[blk.hash]))) for blk in (a, b) if len(votes[blk.hash]) >= quorum]


def test_persisted_highest_voted_view_keeps_a_restarted_validator_from_certifying_a_second_block() -> None:
    qcs = _run_restart_schedule(unsafe=False)
    assert len(qcs) == 1
    conflicting = _run_restart_schedule(unsafe=True)
    # two QCs for different blocks in one view: the quorum-intersection argument of the protocol is gone
    assert len(conflicting) == 2 and conflicting[0].block_hash != conflicting[1].block_hash
    assert all(CRYPTO[0].verify_qc(qc) for qc in conflicting)
