"""One validator-set change per seed: safety across the epoch boundary, and liveness of the new set.

Each seed changes the set of 4 (replace one validator by a new node that starts as an observer,
reorder, add one, or remove the byzantine one) at a seeded activation height H, with the
byzantine validator in the old set, the new one or both; the simulator models the replica's
epoch switch (empty suffix blocks past H-1, a fresh core restored on H-1 after the old core's
remaining actions, epoch-separated signatures, observers, block sync by the f+1 rule) and checks
after every step that no two honest nodes finalize different blocks at any height (H-1 and H
included) and that every stored QC was signed by the set of its height.

Without its liveness rules the new set often never starts (this is how the simulator found
it): the QC that finalizes H-1 usually exists only at the leader that aggregated it, whose next
proposal (its only carrier) is discarded by the switch, and block sync needs f+1 holders of H-1.
The core therefore (1) announces every QC as it forms, the replica (2) times out of its view before
switching, which broadcasts that QC again, and (3) lets block sync take blocks up to one proven
final by a 2-chain from a single peer. The liveness runs use the rules as the replica has them;
runs without them check safety only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chainshare.consensus.sim import EPOCH_CHANGE_KINDS, SimConfig, SimResult, get_scenario, simulate

SEEDS = 400
CHUNK = 50
SAFETY_ONLY_SEEDS = 150


def _without_liveness_rules(seed: int) -> SimConfig:
    return replace(get_scenario(seed, reconfigure=True), announce_qc=False, farewell_timeout=False,
                   sync_epoch_finality_proof=False)


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


@pytest.mark.parametrize("seed", [11, 56, 62])
def test_without_its_liveness_rules_the_new_set_never_finalizes_on_these_seeds(seed: int) -> None:
    """Regression: the QC that finalizes the set's last block H-1 often exists only at the leader
    that aggregated it, and the epoch switch drops that leader's next proposal (its only carrier).
    Without the QC announcement, the farewell timeout and the proof-carrying sync, the nodes stayed at
    or below H-1 to the end on these seeds (first found on seed 3 before the simulator called the
    replica's sync decisions; the schedules have changed since: when the timer began doubling at the
    second consecutive timeout, seeds 11 and 77 became 32 and 49, and when the core began announcing
    QCs, whose extra broadcasts the byzantine node draws for, 32, 49 and 56 became 11, 56 and 62); with
    them the new set finalizes."""
    stuck = simulate(seed, _without_liveness_rules(seed))
    assert stuck.violations == [] and stuck.liveness_failures != []
    r = simulate(seed, get_scenario(seed, reconfigure=True))
    assert r.violations == [] and r.liveness_failures == []


@pytest.mark.parametrize("seed", [11, 56, 62])
def test_the_qc_announcement_alone_carries_the_last_qc_of_a_set_across_the_switch(seed: int) -> None:
    """On the seeds above, announcing each QC as it forms is enough on its own: with the farewell
    timeout and the proof-carrying sync switched off, the new set still finalizes."""
    r = simulate(seed, replace(_without_liveness_rules(seed), announce_qc=True))
    assert r.violations == [] and r.liveness_failures == []
