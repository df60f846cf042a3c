"""``chainshare bench sharing`` measures access decisions on a real devnet through the CLI, as README's figures
were taken: every pre-signed request is decided and finalized, and the closed loop (``--max-pending``) keeps
the load under the node's back-pressure floor, so no "busy, retry" refusal is needed. Kept short (one node,
a few hundred requests); no figure is judged here."""

from __future__ import annotations

from pathlib import Path

import pytest
from netkit import run_bench, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bench-sharing")]


def test_bench_sharing_decides_every_request_within_its_closed_loop(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "sharing", "--decisions", 300, "--nodes", 1, "--clients", 8, "--max-pending", 64,
                       "--cedar-iterations", 20, "--dataset-mb", 0, "--dir", tmp_path / "work")
    decisions = result["decisions"]
    assert decisions["decisions"] == decisions["allowed"] == 300 and decisions["errors"] == 0, decisions
    assert decisions["max_pending"] == 64 and decisions["refused_busy"] == 0
    assert decisions["decisions_per_s"] > 0 and decisions["node_cpu_us_per_decision"] > 0
    assert result["cedar"]["iterations"] == 20 and "delivery" not in result


def test_bench_sharing_refuses_a_negative_bound_with_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("bench", "sharing", "--max-pending", -1, cwd=tmp_path)
    assert proc.returncode == 2 and "--max-pending" in proc.stderr
