"""contracts/*.json are exactly what the contract definitions produce (run `make contracts` after a change)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils import function_abi_to_4byte_selector

from chainshare.execution.contracts import all_contracts
from chainshare.execution.contracts.export import build_artifacts, render_artifact

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
ARTIFACTS = build_artifacts()


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_committed_abi_artifact_is_current(name: str) -> None:
    path = CONTRACTS_DIR / f"{name}.json"
    assert path.is_file(), f"{path} is missing: run `make contracts`"
    assert path.read_text() == render_artifact(ARTIFACTS[name]), f"{path} is stale: run `make contracts`"


def test_no_artifact_of_a_removed_contract_lingers() -> None:
    stale = {p.stem for p in CONTRACTS_DIR.glob("*.json")} - set(ARTIFACTS)
    assert not stale, f"contracts/ holds ABIs of contracts that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("contract", all_contracts(), ids=lambda c: c.NAME)
def test_abi_selectors_are_the_ones_the_runtime_dispatches(contract: object) -> None:
    """What web3.py/ethers compute from the ABI file is what the runtime dispatches on."""
    artifact = json.loads((CONTRACTS_DIR / f"{contract.NAME}.json").read_text())  # type: ignore[attr-defined]
    functions = [item for item in artifact["abi"] if item["type"] == "function"]
    selectors = {function_abi_to_4byte_selector(item): item["name"] for item in functions}
    dispatched = {sel: spec.name for sel, spec in contract.methods.items()}  # type: ignore[attr-defined]
    assert selectors == dispatched
    assert artifact["address"] == ARTIFACTS[contract.NAME]["address"]  # type: ignore[attr-defined]
