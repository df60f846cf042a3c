"""Reading what a receipt says, as the CLI does after ``Governance.propose``."""

from __future__ import annotations

import pytest

from chainshare.client import get_proposal_id
from chainshare.errors import ChainshareError
from chainshare.execution.contracts.addresses import GOVERNANCE, MEMBERSHIP
from chainshare.execution.contracts.governance import Governance

CREATED = "0x" + Governance.E_CREATED.topic.hex()
VOTED = "0x" + Governance.E_VOTED.topic.hex()


def _log(address: bytes, *topics: str) -> dict[str, object]:
    return {"address": "0x" + address.hex().upper(), "topics": list(topics), "data": "0x"}


def test_the_proposal_id_comes_from_the_governance_proposal_created_log_wherever_it_is() -> None:
    receipt = {"transactionHash": "0xab", "logs": [
        _log(MEMBERSHIP, CREATED, "0x" + (7).to_bytes(32, "big").hex()),  # same topic, another contract
        _log(GOVERNANCE, VOTED, "0x" + (8).to_bytes(32, "big").hex()),  # the right contract, another event
        _log(GOVERNANCE, CREATED.upper().replace("0X", "0x"), "0x" + (42).to_bytes(32, "big").hex(), "0x00")]}
    assert get_proposal_id(receipt) == 42


def test_a_receipt_without_a_created_proposal_is_a_clear_error() -> None:
    receipt = {"transactionHash": "0xcd", "logs": [_log(GOVERNANCE, VOTED, "0x" + (1).to_bytes(32, "big").hex())]}
    with pytest.raises(ChainshareError, match="0xcd created no proposal"):
        get_proposal_id(receipt)
