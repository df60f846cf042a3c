"""Consensus over seeded schedules: zero safety violations and liveness after GST, on 1,000+ seeds.

Each seed is one ``chainshare.consensus.sim`` run (message delays, drops, duplicates, reordering,
partitions, crash/restarts at any point of an action list, block sync with the replica's decisions
(``consensus/sync.py``), one byzantine validator that equivocates, double-votes, attempts fork
proposals, withholds, replays, sends garbage and serves forged sync batches). The simulator checks
safety after every step; these tests assert that no seed reports a violation or a liveness failure.
Seeds run in chunks so pytest-xdist spreads them over the cores.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chainshare.consensus.sim import CHAOS, TARGETED, SimResult, get_scenario, run_sim_bench, simulate

SEEDS = 1_000
CHUNK = 50


def _failures(results: list[SimResult]) -> list[tuple[int, list[str], list[str]]]:
    return [(r.seed, r.violations[:3], r.liveness_failures) for r in results if r.violations or r.liveness_failures]


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_four_validators_one_byzantine_stay_safe_and_live_after_gst(first: int) -> None:
    results = [simulate(seed, get_scenario(seed)) for seed in range(first, first + CHUNK)]
    assert _failures(results) == []
    # the schedules really exercised what they claim to
    assert all(r.finality_rounds for r in results)
    assert sum(r.evidence for r in results) > 0          # the byzantine validator equivocated
    assert sum(r.garbage_dropped for r in results) > 0   # and sent garbage
    assert sum(r.crashes for r in results) > 0           # honest validators crashed and restarted
    assert sum(r.synced_blocks for r in results) > 0     # laggards caught up by block sync (the replica's rules)


@pytest.mark.parametrize("n,first", [(5, 0), (7, 0), (7, 20)])
def test_larger_validator_sets_stay_safe_and_live(n: int, first: int) -> None:
    results = [simulate(seed, replace(get_scenario(seed), n=n)) for seed in range(first, first + 20)]
    assert _failures(results) == []


@pytest.mark.parametrize("n", [1, 3])
def test_networks_without_byzantine_tolerance_stay_safe_and_live_with_crashes(n: int) -> None:
    results = [simulate(seed, replace(CHAOS, n=n, byzantine=False)) for seed in range(10)]
    assert _failures(results) == []


def test_a_seed_replays_exactly() -> None:
    assert simulate(11, TARGETED) == simulate(11, TARGETED)
    assert simulate(12) == simulate(12)


def test_bench_summary_reports_seeds_violations_and_finality_rounds() -> None:
    out = run_sim_bench(6, 4)
    assert out["scenario"] == "sim" and out["seeds"] == 6
    assert out["violations"] == 0 and out["liveness_failures"] == 0
    rounds = out["finality_rounds"]
    assert set(rounds) == {"p50", "p99", "max", "histogram"} and rounds["p50"] >= 2
    assert sum(rounds["histogram"].values()) > 0 and out["wall_s"] >= 0
