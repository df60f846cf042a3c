"""`chainshare bench explorer` as an operator runs it: a small certified chain indexed into SQLite, two API
replicas loaded from a separate client process (every endpoint answered, none in error), then `--api-only`
re-measures the same database without rebuilding it, and refuses a database that holds no chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from netkit import cli_json, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("explorer-bench")]

ENDPOINTS = {"status", "blocks", "blocks_deep_page", "block_by_hash", "tx_with_proof", "txs_latest", "txs_deep_page",
             "address_busiest", "address_busiest_deep", "agency", "datasets", "dataset_history", "search_hash",
             "search_name_typo", "stats_minute", "etherscan_txlist"}


def test_bench_indexes_a_chain_then_api_only_remeasures_its_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'bench.db'}"
    full = cli_json(run_cli("bench", "explorer", "--txs", 300, "--db", db, "--clients", 2, "--requests", 8,
                            cwd=tmp_path, timeout=300))
    assert full["txs"] == 300 and full["index_tx_per_s"] > 0
    again = cli_json(run_cli("bench", "explorer", "--api-only", "--db", db, "--clients", 2, "--requests", 8,
                             cwd=tmp_path, timeout=300))
    for result in (full, again):
        api = result["api"]
        assert set(api) >= ENDPOINTS
        for name in ENDPOINTS:
            assert api[name]["n"] == 8 and api[name]["errors"] == 0, (name, api[name])
            assert api[name]["first_request_ms"] > 0 and api[name]["p95_ms"] >= api[name]["p50_ms"] > 0
    assert again["scenario"] == "explorer-api"
    proc = run_cli("bench", "explorer", "--api-only", "--db", f"sqlite:///{tmp_path / 'empty.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no indexed chain" in proc.stderr
    proc = run_cli("bench", "explorer", "--api-only", "--txs", 50, "--db", db, cwd=tmp_path)
    assert proc.returncode == 2 and "--txs would build nothing" in proc.stderr


def test_credit_bench_then_api_only_remeasures_the_credit_api(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'credit.db'}"
    full = cli_json(run_cli("bench", "explorer", "--credit-records", 200, "--credit-subjects", 20, "--db", db,
                            "--clients", 2, "--requests", 8, cwd=tmp_path, timeout=300))
    again = cli_json(run_cli("bench", "explorer", "--api-only", "--credit-records", 200, "--db", db,
                             "--clients", 2, "--requests", 8, cwd=tmp_path, timeout=300))
    assert (again["records"], again["subjects"]) == (200, 20) and again["scenario"] == "explorer-credit-api"
    for api in (full["api"], again["api"]):
        for name in ("credit_subject", "credit_record", "credit_black_list", "credit_red_list_deep", "search_uscc"):
            assert api[name]["n"] == 8 and api[name]["errors"] == 0, (name, api[name])
    proc = run_cli("bench", "explorer", "--api-only", "--credit-records", 5, "--db", db, cwd=tmp_path)
    assert proc.returncode == 2 and "holds 200 indexed credit records" in proc.stderr
