"""ethers v6 (tests/ethers, pinned in its package-lock.json), unchanged, against a real node: a
contract object from contracts/Notary.json sends transactions (legacy, as ethers picks on a zero base
fee, and EIP-1559 with explicit fee fields), waits for their receipts,
decodes the event, reads a view, fetches the block and transaction, filters logs, and sees a revert
with the contract's reason. `make test` installs the pinned ethers (npm ci) before the suite."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from netkit import Devnet

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ethers")]

ETHERS_DIR = Path(__file__).resolve().parents[1] / "ethers"
ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "Notary.json"


@pytest.fixture(scope="module")
def ethers_run(devnet: Devnet) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node (Node.js) is not installed: `make test` installs it with the nodejs package"
    assert (ETHERS_DIR / "node_modules" / "ethers").is_dir(), (
        "ethers is not installed: run `npm ci --prefix tests/ethers` (`make test` does)")
    proc = subprocess.run([node, str(ETHERS_DIR / "check.mjs"), devnet.rpc_url, devnet.private_key, str(ARTIFACT)],
                          capture_output=True, text=True, timeout=120, cwd=ETHERS_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_ethers_sends_a_contract_transaction_and_decodes_its_receipt(ethers_run: dict[str, Any],
                                                                      devnet: Devnet) -> None:
    r = ethers_run
    notary = json.loads(ARTIFACT.read_text())["address"]
    assert r["chainId"] == devnet.chain_id
    # ethers v6 reads baseFeePerGas 0 (no fees on this network) as "legacy pricing": an EIP-155 transaction.
    assert r["txType"] == 0 and r["status"] == 1 and r["txHashMatches"] is True
    assert r["to"] == notary and r["from"] == r["wallet"] == devnet.account.address
    assert r["events"] == [{"name": "Anchored", "digest": r["digest"], "by": r["wallet"]}]
    assert r["nonce"] >= 1
    assert r["tx2"] == {"type": 2, "status": 1, "anchored": True}  # EIP-1559 when fee fields are given


def test_ethers_reads_views_blocks_transactions_and_logs(ethers_run: dict[str, Any]) -> None:
    r = ethers_run
    assert r["isAnchored"] is True and r["isAnchoredOther"] is False
    assert r["blockHashMatches"] is True and r["fetchedFrom"] == r["wallet"]
    assert r["filterCount"] == 1


def test_ethers_sees_a_revert_with_the_contract_reason(ethers_run: dict[str, Any]) -> None:
    for label in ("staticCall", "estimateGas"):
        assert ethers_run[label] == {"reverted": True, "code": "CALL_EXCEPTION", "reason": "digest already anchored"}
