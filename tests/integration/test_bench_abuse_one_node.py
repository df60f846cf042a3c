"""``chainshare bench abuse --nodes 1`` runs to its JSON result (it raised IndexError: the finality prober
took the second devnet account, which a one-node devnet lacks; it now signs as the warm-up's account after
the warm-up's nonces). A real bench run, kept short; no figure is judged here, only that both phases were
measured: every probe transaction finalized, the attackers' batches answered."""

from __future__ import annotations

from pathlib import Path

import pytest
from netkit import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bench-abuse-one-node")]


def test_bench_abuse_on_one_node_measures_both_phases(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "abuse", "--nodes", 1, "--duration", 2, "--attackers", 1, "--logs", 20,
                       "--dir", tmp_path / "net")  # checks its JSON was saved relative to the directory it ran in
    assert result["nodes"] == 1 and result["chain"]["logs"] == 20
    for phase in ("baseline", "under_attack"):
        assert result[phase]["lost"] == 0, result[phase]["lost_samples"]
        assert result[phase]["finality_ms"]["n"] >= 1 and result[phase]["healthz_ms"]["n"] >= 1
    assert result["under_attack"]["attack"]["batches"] >= 1
