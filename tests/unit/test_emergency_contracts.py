"""Emergency stops in AccessControl and Governance batches (docs/runbook.md), driven as transactions:
a frozen dataset or a paused consortium suspends every grant (no delivery or computation can be
recorded, isGrantValid false, new requests denied with the reason) and lifting it restores the
unexpired grants; only Governance (or the owner, for its own freeze) may stop or lift; one
Governance decision can revoke an agency and retire its validator at once."""

from __future__ import annotations

from typing import Any

import test_datasets_access as base
from chainkit import Account, Ledger, validator
from test_datasets_access import (
    AC,
    CUSTOMS,
    GOV,
    H1,
    H2,
    HEALTH,
    MEM,
    PERMIT_ALL,
    STATS,
    decision,
    decode_logs,
    encode,
    is_valid,
    ok,
    pass_proposal,
    register,
    request,
    reverted,
    view,
)
from web3 import Web3

from chainshare.execution.contracts import ACCESS_CONTROL, GOVERNANCE, MEMBERSHIP

consortium, ledger, acct = base.consortium, base.ledger, base.acct  # the same fixtures


def _granted(ledger: Ledger, acct: dict[str, Account]) -> int:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    _, allowed, grant_id = decision(request(ledger, acct[STATS], 1, "read"))
    assert allowed
    return grant_id


def test_governance_freeze_suspends_grants_and_refuses_records_until_lifted(ledger: Ledger,
                                                                           acct: dict[str, Account]) -> None:
    grant_id = _granted(ledger, acct)
    receipt = ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "freezeDataset", 1, "leak suspected")))
    assert ("DatasetFrozen", {"account": Web3.to_checksum_address(GOVERNANCE), "datasetId": 1,
                              "reason": "leak suspected", "by": "governance"}) in decode_logs(receipt)
    assert not is_valid(ledger, grant_id, STATS)
    assert view(ledger, AC, "getEmergencyStop", 1) == (False, True, "dataset 1 is frozen by Governance: leak suspected")
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", grant_id, H1, H2, 9))) \
        == "dataset 1 is frozen by Governance: leak suspected"
    denied = decode_logs(request(ledger, acct[CUSTOMS], 1, "read"))[1][1]
    assert denied["allowed"] is False and denied["errors"] == ["dataset 1 is frozen by Governance: leak suspected"]
    # the owner can neither lift a Governance freeze nor overwrite it with its own
    assert "only a proposal may lift it" in reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL,
                                                                  encode(AC, "unfreezeDataset", 1)))
    assert "already frozen by Governance" in reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL,
                                                                   encode(AC, "freezeDataset", 1, "mine")))
    ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "unfreezeDataset", 1)))
    assert is_valid(ledger, grant_id, STATS)
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", grant_id, H1, H2, 9)))


def test_owner_freezes_its_dataset_at_once_others_cannot(ledger: Ledger, acct: dict[str, Account]) -> None:
    grant_id = _granted(ledger, acct)
    assert "only Governance (a proposal) or the owner of dataset 1" in reverted(
        ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "freezeDataset", 1, "x")))
    assert "reason must be" in reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "freezeDataset", 1, "")))
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "freezeDataset", 1, "audit")))
    assert decode_logs(receipt) == [("DatasetFrozen", {"account": acct[HEALTH].checksum, "datasetId": 1,
                                                       "reason": "audit", "by": HEALTH})]
    assert not is_valid(ledger, grant_id, STATS)
    assert "or the owner of dataset 1" in reverted(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "unfreezeDataset", 1)))
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "unfreezeDataset", 1)))
    assert is_valid(ledger, grant_id, STATS)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "unfreezeDataset", 1))) == \
        "dataset 1 is not frozen"


def test_consortium_pause_wins_over_every_policy_and_only_governance_sets_it(ledger: Ledger,
                                                                            acct: dict[str, Account]) -> None:
    grant_id = _granted(ledger, acct)
    for fn, args in (("pauseSharing", ("x",)), ("resumeSharing", ())):
        assert "only Governance" in reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, fn, *args)))
    receipt = ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "pauseSharing", "incident 7")))
    assert ("SharingPaused", {"reason": "incident 7"}) in decode_logs(receipt)
    assert not is_valid(ledger, grant_id, STATS)
    denied = decode_logs(request(ledger, acct[STATS], 1, "read"))[1][1]
    assert denied["allowed"] is False and denied["errors"] == ["all data sharing is paused by Governance: incident 7"]
    receipt = ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "resumeSharing")))
    assert ("SharingResumed", {}) in decode_logs(receipt)
    assert is_valid(ledger, grant_id, STATS)
    assert "not paused" in reverted(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "resumeSharing")))


def _batch(targets: list[bytes], calls: list[bytes]) -> bytes:
    return encode(GOV, "executeBatch", [Web3.to_checksum_address(t) for t in targets], calls)


def test_one_decision_revokes_an_agency_and_freezes_its_dataset(ledger: Ledger, acct: dict[str, Account]) -> None:
    grant_id = _granted(ledger, acct)
    assert "only Governance may run a batch" in reverted(
        ledger.send(acct[HEALTH], GOVERNANCE, _batch([ACCESS_CONTROL], [encode(AC, "pauseSharing", "x")])))
    data = _batch([ACCESS_CONTROL, MEMBERSHIP], [encode(AC, "freezeDataset", 1, "owner compromised"),
                                                encode(MEM, "revokeAgency", CUSTOMS)])
    receipt = ok(pass_proposal(ledger, acct, GOVERNANCE, data))
    names = [name for name, _ in decode_logs(receipt)]
    assert "DatasetFrozen" in names and "AgencyRevoked" in names and names[-1] == "ProposalExecuted"
    assert not is_valid(ledger, grant_id, STATS)
    # all or nothing: a batch whose second call reverts leaves the first undone
    bad = _batch([ACCESS_CONTROL, MEMBERSHIP], [encode(AC, "unfreezeDataset", 1),
                                               encode(MEM, "revokeAgency", CUSTOMS)])
    assert "already revoked" in reverted(pass_proposal(ledger, acct, GOVERNANCE, bad))
    assert view(ledger, AC, "getEmergencyStop", 1)[1] is True


def test_batch_retires_a_validator_and_revokes_its_agency(ledger: Ledger, acct: dict[str, Account]) -> None:
    # a set of 4 validators, one of them Customs'; the decision retires it and revokes Customs together
    vals = [validator(f"v{i}", a) for i, a in enumerate((HEALTH, STATS, HEALTH, CUSTOMS), 1)]
    head = ledger.parent_header.height

    def set_validators(vs: list[Any], activation: int) -> bytes:
        return encode(MEM, "setValidators", [v.name for v in vs], [v.agency for v in vs],
                      [v.public_key for v in vs], [v.pop for v in vs], activation)

    ok(pass_proposal(ledger, acct, MEMBERSHIP, set_validators(vals, head + 10)))
    data = _batch([MEMBERSHIP, MEMBERSHIP], [set_validators(vals[:3], head + 20), encode(MEM, "revokeAgency", CUSTOMS)])
    receipt = ok(pass_proposal(ledger, acct, GOVERNANCE, data))
    names = [name for name, _ in decode_logs(receipt)]
    assert names.count("ValidatorSetScheduled") == 1 and "AgencyRevoked" in names
    epoch, _, scheduled, _ = view(ledger, MEM, "validatorsAt", head + 20)
    assert list(scheduled) == ["v1", "v2", "v3"]
