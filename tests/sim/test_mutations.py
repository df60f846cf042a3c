"""Mutation-tested adversary: each safety rule of docs/consensus.md, broken on purpose, lets the
adversary make two honest validators finalize different blocks; with every rule intact none of the
same schedules does.

A mutation replaces one function of the core (pytest's monkeypatch) with a broken copy: the
reviewer's table of issue 13 (vote ignores highest_voted_view, timeout does not raise it, vote sent
before PersistSafety, rule 2's TC clause removed, restore drops highest_voted_view, commit without
the next-view rule), a quorum one vote short, and a block sync (``consensus/sync.py``, the
decisions the replica runs) that takes served blocks whose QCs verify without f+1 holders or a
2-chain proof, and timeout signatures that do not name the validator-set epoch (a TC of the
previous epoch accepted in the next). "Caught" means an actual fork: the
simulator's safety check reports an honest validator finalizing a block at a height where another
honest validator finalized a different one (no structural assertion). The schedules are
``consensus.adversary.ATTACKS`` (n = 4, one byzantine, the network scheduled by the adversary,
crash cuts between any two actions); each runs in a few milliseconds, so every mutation is checked
against every schedule variant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from chainshare.consensus import core, sync
from chainshare.consensus.adversary import ATTACKS, AttackResult, run_all_attacks, run_attack, run_twins
from chainshare.consensus.core import (
    BlockStatus,
    Broadcast,
    CoreState,
    FinalityProof,
    PersistSafety,
    SafetyData,
)
from chainshare.consensus.messages import Timeout, get_qc_view
from chainshare.ledger import quorum as ledger_quorum
from chainshare.ledger.types import Block

Mutation = Callable[[pytest.MonkeyPatch], None]


def vote_ignores_highest_voted_view(mp: pytest.MonkeyPatch) -> None:
    intact = core.is_safe_to_vote

    def is_safe_to_vote(state: CoreState, block: Block, tc: object) -> bool:
        return intact(replace(state, highest_voted_view=0), block, tc)  # type: ignore[arg-type]

    mp.setattr(core, "is_safe_to_vote", is_safe_to_vote)


def timeout_does_not_raise_highest_voted_view(mp: pytest.MonkeyPatch) -> None:
    def send_timeout(t: core._Step) -> None:
        s = t.s
        if s.my_timeout is not None and s.my_timeout.view == s.view:
            t.emit(Broadcast(s.my_timeout))
            return
        timeout = Timeout(s.view, s.config.index, s.highest_qc, s.last_tc,
                          s.crypto.sign_timeout(s.view, get_qc_view(s.highest_qc)))
        t.update(my_timeout=timeout)            # highest_voted_view left as it was
        t.emit(PersistSafety(t.s.safety_data))
        t.emit(Broadcast(timeout))
        core.record_timeout(t, timeout)

    mp.setattr(core, "send_timeout", send_timeout)


def vote_sent_before_persist(mp: pytest.MonkeyPatch) -> None:
    def try_vote(t: core._Step) -> None:
        s = t.s
        block = s.proposals.get(s.view)
        entry = s.blocks.get(block.hash) if block is not None else None
        if block is None or entry is None or entry.status != BlockStatus.VALID:
            return
        if s.last_vote is not None and s.last_vote.view == s.view and s.last_vote.block_hash == block.hash:
            return
        if not core.is_safe_to_vote(s, block, core._block_tc(block)):
            return
        vote = core._sign_vote(t, block)
        core._deliver_vote(t, vote)             # sent first ...
        t.emit(PersistSafety(t.s.safety_data, block))   # ... persisted after

    mp.setattr(core, "try_vote", try_vote)


def tc_clause_removed(mp: pytest.MonkeyPatch) -> None:
    def is_safe_to_vote(state: CoreState, block: Block, tc: object) -> bool:
        v = block.header.round
        qc_view = get_qc_view(block.justify)
        if v <= state.highest_voted_view or v <= qc_view:
            return False
        # qc_view >= max(tc.high_qc_views) dropped: any TC for v - 1 will do
        return v == qc_view + 1 or (tc is not None and tc.view == v - 1)  # type: ignore[attr-defined]

    mp.setattr(core, "is_safe_to_vote", is_safe_to_vote)


def restore_drops_highest_voted_view(mp: pytest.MonkeyPatch) -> None:
    intact = core.restore_core

    def restore_core(config, crypto, committed, committed_qc, safety: SafetyData | None = None,  # type: ignore[no-untyped-def]
                     blocks=()):
        if safety is not None:
            safety = replace(safety, highest_voted_view=0)
        return intact(config, crypto, committed, committed_qc, safety, blocks)

    mp.setattr(core, "restore_core", restore_core)


def commit_without_next_view_rule(mp: pytest.MonkeyPatch) -> None:
    def check_commit(t: core._Step, certified_hash: bytes) -> None:
        s = t.s
        b2, qc2 = s.blocks.get(certified_hash), s.certified.get(certified_hash)
        if b2 is None or qc2 is None or b2.block.header.parent_hash not in s.blocks:
            return
        # B'.view == B.view + 1 not checked: any certified child finalizes its parent
        target = s.finalize_target
        if target is not None and target.block.height >= b2.block.height:
            return
        t.update(finalize_target=FinalityProof(b2.block, qc2))
        core.apply_commits(t)

    mp.setattr(core, "check_commit", check_commit)


def quorum_one_vote_short(mp: pytest.MonkeyPatch) -> None:
    intact = ledger_quorum.compute_quorum
    mp.setattr(ledger_quorum, "compute_quorum", lambda n: intact(n) - 1)


def sync_takes_a_certified_tail(mp: pytest.MonkeyPatch) -> None:
    # every served block whose QC verifies is taken: no f+1 holders, no 2-chain proof needed
    mp.setattr(sync, "count_blocks_to_take", lambda checked, batch_len, confirmed, proof_holds: checked)


def timeout_signature_without_epoch(mp: pytest.MonkeyPatch) -> None:
    # a timeout signs (chain, view, high-QC view) but not the epoch: a TC of one validator-set
    # epoch verifies in the next (a TC accepted from a lower epoch)
    intact = ledger_quorum.timeout_message
    mp.setattr(ledger_quorum, "timeout_message",
               lambda chain_id, view, high_qc_view, epoch=0: intact(chain_id, view, high_qc_view, 0))


MUTATIONS: dict[str, Mutation] = {
    "vote ignores highest_voted_view": vote_ignores_highest_voted_view,
    "timeout does not raise highest_voted_view": timeout_does_not_raise_highest_voted_view,
    "vote sent before PersistSafety": vote_sent_before_persist,
    "TC clause qc.view >= max(high_qc_views) removed": tc_clause_removed,
    "restore drops highest_voted_view": restore_drops_highest_voted_view,
    "commit without the next-view rule": commit_without_next_view_rule,
    "quorum n - f - 1": quorum_one_vote_short,
    "block sync takes a certified tail that is not final": sync_takes_a_certified_tail,
    "TC accepted from a lower epoch": timeout_signature_without_epoch,
}


def _forks(results: list[AttackResult]) -> list[AttackResult]:
    return [r for r in results if any(v.startswith("SAFETY") for v in r.violations)]


def test_with_every_rule_intact_no_schedule_finalizes_conflicting_blocks() -> None:
    results = run_all_attacks()
    assert len(results) == sum(variants for _, variants in ATTACKS.values())
    assert [(r.name, r.variant, r.violations) for r in results if r.violations] == []
    # the schedules did get to the decisive step: an honest validator refused what the rules forbid,
    # or the attack ran to the end and the honest validators agreed
    assert [(r.name, r.variant, r.stopped) for r in results if r.stopped is not None and not r.refused] == []
    assert any(r.stopped is None for r in results)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_broken_rule_lets_the_adversary_finalize_conflicting_blocks(name: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    MUTATIONS[name](monkeypatch)
    forks = _forks(run_all_attacks())
    assert forks, f"mutation {name!r} not caught by any schedule"


def test_a_fork_is_reported_as_two_honest_validators_finalizing_different_blocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tc_clause_removed(monkeypatch)
    r = run_attack("hidden_qc", 3)
    assert r.stopped is None
    assert len(r.violations) == 1 and r.violations[0].startswith("SAFETY: validator 1 finalized")
    assert "at height 1" in r.violations[0]


# -- Twins: random schedules, the byzantine validator an honest core run twice ---------------------

def test_twins_schedules_keep_the_honest_validators_agreeing_and_finalizing() -> None:
    results = [run_twins(seed) for seed in range(6)]
    assert [(r.seed, r.violations) for r in results if r.violations] == []
    assert all(r.finalized_height > 0 and len(r.twins) == 1 for r in results)
    assert sum(r.crashes for r in results) > 0


def test_twins_find_a_quorum_one_vote_short_at_random(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random Twins schedules find this mutation by themselves (seeds 16, 17 and 20 of the first
    24); the others need the scripted schedules above (40 random seeds find none of them)."""
    quorum_one_vote_short(monkeypatch)
    assert any(v.startswith("SAFETY") for seed in range(24) for v in run_twins(seed).violations)
