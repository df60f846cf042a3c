"""Block time as contracts see it: a proposer chooses the header timestamp, so no timestamp may make
execution fail with anything but a clean revert or a refused block."""

from __future__ import annotations

import time
from pathlib import Path

from chainkit import (
    GOVERNANCE,
    MEMBERSHIP,
    Ledger,
    account,
    call_data,
    make_genesis,
    revert_reason,
    validator,
)

from chainshare.crypto.ca import init_ca, issue_agency
from chainshare.errors import ConsensusError
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS

A, B = account("time/a"), account("time/b")


def _ledger_with_passed_add_agency_proposal(tmp_path: Path) -> Ledger:
    ca = init_ca(tmp_path / "ca", password=None)
    newcomer = issue_agency(tmp_path / "ca", None, "Agency E", tmp_path / "e", key_password=None, kdf_light=True)
    genesis = make_genesis([("Agency A", [A.address]), ("Agency B", [B.address])], [validator("v", "Agency A")],
                           ca_certificate=ca.cert_pem.encode(), timestamp_ms=int(time.time() * 1000))
    ledger = Ledger(genesis)
    add = call_data("addAgency(string,string,address[],bytes)", "Agency E", "member", [newcomer.address],
                    newcomer.cert_pem.encode())
    for sender, data in ((A, call_data("propose(address,bytes,string)", "0x" + MEMBERSHIP.hex(), add, "add E")),
                         (A, call_data("vote(uint256,bool)", 1, True)), (B, call_data("vote(uint256,bool)", 1, True))):
        assert ledger.send(sender, GOVERNANCE, data).status == STATUS_SUCCESS
    return ledger


def test_certificate_check_uses_the_block_time(tmp_path: Path) -> None:
    ledger = _ledger_with_passed_add_agency_proposal(tmp_path)
    ten_years = 10 * 365 * 24 * 3600 * 1000
    receipt = ledger.send(A, GOVERNANCE, call_data("execute(uint256)", 1),
                          timestamp_ms=ledger.parent_header.timestamp_ms + ten_years)
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output).startswith("certificate refused: ")


def test_absurd_block_time_reverts_or_refuses_the_block_cleanly(tmp_path: Path) -> None:
    ledger = _ledger_with_passed_add_agency_proposal(tmp_path)
    try:
        receipt = ledger.send(A, GOVERNANCE, call_data("execute(uint256)", 1), timestamp_ms=10**17)
    except ConsensusError:
        return
    assert receipt.status == STATUS_FAILURE
