"""One validator-set change per seed: safety across the epoch boundary, and liveness of the new set.

Each seed changes the set of 4 (replace one validator by a new node that starts as an observer,
reorder, add one, or remove the byzantine one) at a seeded activation height H, with the
byzantine validator in the old set, the new one or both; the simulator models the replica's
epoch switch (empty suffix blocks past H-1, a fresh core restored on H-1 after the old core's
remaining actions, epoch-separated signatures, observers, block sync by the f+1 rule) and checks
after every step that no two honest nodes finalize different blocks at any height (H-1 and H
included) and that every stored QC was signed by the set of its height.

Without its two liveness rules the new set often never starts (this is how the simulator found
it): the QC that finalizes H-1 usually exists only at the leader that aggregated it, whose next
proposal (its only carrier) is discarded by the switch, and block sync needs f+1 holders of H-1.
The replica therefore (1) times out of its view before switching, which broadcasts that QC, and
(2) lets block sync take blocks up to one proven final by a 2-chain from a single peer. The
liveness runs use the rules as the replica has them; runs without them check safety only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chainshare.consensus.sim import EPOCH_CHANGE_KINDS, SimConfig, SimResult, get_scenario, simulate

SEEDS = 400
CHUNK = 50
SAFETY_ONLY_SEEDS = 150


def _without_liveness_rules(seed: int) -> SimConfig:
    return replace(get_scenario(seed, reconfigure=True), farewell_timeout=False, sync_epoch_finality_proof=False)


def _failures(results: list[SimResult]) -> list[tuple[int, list[str], list[str]]]:
    return [(r.seed, r.violations[:3], r.liveness_failures) for r in results if r.violations or r.liveness_failures]


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_a_validator_set_change_stays_safe_and_the_new_set_finalizes_after_gst(first: int) -> None:
    results = [simulate(seed, get_scenario(seed, reconfigure=True)) for seed in range(first, first + CHUNK)]
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
def test_without_its_liveness_rules_the_epoch_switch_still_never_finalizes_conflicting_blocks(first: int) -> None:
    results = [simulate(seed, _without_liveness_rules(seed)) for seed in range(first, first + CHUNK)]
    assert [(r.seed, r.violations[:3]) for r in results if r.violations] == []
    assert sum(r.switched for r in results) > 0


def test_seed_3_the_old_set_finalizes_its_last_block_after_one_validator_switched() -> None:
    """Regression: node 3 aggregates the QC of the first suffix block (finalizing H-1 = 11) after
    GST; its step emits BuildProposal then Commit and the switch drops the built proposal. Without
    the farewell timeout and the proof-carrying sync, validators 0 (byzantine), 1 and 2 stayed in
    epoch 0 at height 9 to the end; with them the new set finalizes."""
    stuck = simulate(3, _without_liveness_rules(3))
    assert stuck.violations == [] and stuck.liveness_failures != []
    r = simulate(3, get_scenario(3, reconfigure=True))
    assert r.violations == [] and r.liveness_failures == []
