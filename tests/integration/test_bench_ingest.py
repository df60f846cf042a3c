"""``chainshare bench ingest`` on four validators through the CLI, as README's figures were taken: every
pre-signed anchor is admitted, finalized and succeeds. Each validator's account sends its own stream; the
streams once shared one salt, so three of four anchors reverted "digest already anchored" and the bench
measured reverts. Kept short; no figure is judged here."""

from __future__ import annotations

from pathlib import Path

import pytest
from netkit import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bench-ingest")]


def test_bench_ingest_on_four_validators_finalizes_every_anchor_without_a_revert(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "ingest", "--nodes", 4, "--txs", 400, "--clients", 8, "--max-pending", 200,
                       "--dir", tmp_path / "work")
    assert result["nodes"] == 4 and result["submitted"] == result["confirmed"] == 400, result
    assert result["errors"] == 0 and result["reverted"] == 0, result
    assert result["node_cpu_us_per_tx"] > 0 and result["client_cpu_us_per_tx"] > 0
    # the machine's speed at the end of the run, so that results of different hours can be compared
    probe = result["machine"]["probe"]
    assert result["machine"]["cpus"] >= 1 and probe["python_loop_ms"] > 0 and probe["sender_recovery_us"] > 0
