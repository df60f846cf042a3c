"""One validator-set change per seed: safety across the epoch boundary, and liveness of the new set.

Each seed changes the set of 4 (replace one validator by a new node that starts as an observer,
reorder, add one, or remove the byzantine one) at a seeded activation height H, with the
byzantine validator in the old set, the new one or both; the simulator models the replica's
epoch switch (empty suffix blocks past H-1, a fresh core restored on H-1 after the old core's
remaining actions, epoch-separated signatures, observers, block sync by the f+1 rule) and checks
after every step that no two honest nodes finalize different blocks at any height (H-1 and H
included) and that every stored QC was signed by the set of its height.

With the switch exactly as ``replica.py`` implements it the new set often never starts: the QC
that finalizes H-1 usually exists only at the leader that aggregated it, whose next proposal (its
only carrier) is discarded by the switch, and block sync needs f+1 holders of H-1. The liveness
runs therefore use the two rules proposed for the replica (``PROPOSED``); the rules as implemented
are run for safety, and the failing seed is kept as a strict xfail.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chainshare.consensus.sim import EPOCH_CHANGE_KINDS, SimConfig, SimResult, get_scenario, simulate

SEEDS = 400
CHUNK = 50
SAFETY_ONLY_SEEDS = 150


def _proposed(seed: int) -> SimConfig:
    return replace(get_scenario(seed, reconfigure=True), finish_proposal_before_switch=True,
                   sync_epoch_finality_proof=True)


def _failures(results: list[SimResult]) -> list[tuple[int, list[str], list[str]]]:
    return [(r.seed, r.violations[:3], r.liveness_failures) for r in results if r.violations or r.liveness_failures]


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_a_validator_set_change_stays_safe_and_the_new_set_finalizes_after_gst(first: int) -> None:
    results = [simulate(seed, _proposed(seed)) for seed in range(first, first + CHUNK)]
    assert _failures(results) == []
    # the schedules really crossed the boundary, in every way they claim to
    assert all(r.switched > 0 and r.epoch_change is not None for r in results)
    assert {r.epoch_change.kind for r in results if r.epoch_change} == set(EPOCH_CHANGE_KINDS)
    assert any(r.first_switch_ms is not None and r.first_switch_ms < get_scenario(r.seed).gst_ms for r in results)
    assert sum(r.synced_blocks for r in results) > 0     # observers and laggards caught up by sync
    assert sum(r.evidence for r in results) > 0 and sum(r.crashes for r in results) > 0
    sides = {(r.byzantine in r.epoch_change.sets[0], r.byzantine in r.epoch_change.sets[1])
             for r in results if r.epoch_change}
    assert sides == {(True, True), (True, False), (False, True)}   # byzantine in both sets, the old, the new


@pytest.mark.parametrize("first", range(0, SAFETY_ONLY_SEEDS, CHUNK))
def test_the_epoch_switch_as_the_replica_implements_it_never_finalizes_conflicting_blocks(first: int) -> None:
    results = [simulate(seed, get_scenario(seed, reconfigure=True)) for seed in range(first, first + CHUNK)]
    assert [(r.seed, r.violations[:3]) for r in results if r.violations] == []
    assert sum(r.switched for r in results) > 0


@pytest.mark.xfail(strict=True, reason="replica.py: the proposal carrying the QC that finalizes the epoch's last "
                                       "block is discarded by the switch, and sync needs f+1 holders of that block")
def test_seed_3_the_old_set_finalizes_its_last_block_after_one_validator_switched() -> None:
    """Node 3 aggregates the QC of the first suffix block (finalizing H-1 = 11) after GST; its
    step emits BuildProposal then Commit, the switch drops the built proposal, and validators 0
    (byzantine), 1 and 2 stay in epoch 0 at height 9 to the end: the old set lacks a quorum
    without the byzantine's help, and only node 3 holds 10 and 11."""
    r = simulate(3, get_scenario(3, reconfigure=True))
    assert r.violations == []
    assert r.liveness_failures == []
