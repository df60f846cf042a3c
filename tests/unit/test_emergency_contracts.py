"""Emergency stops in AccessControl and Governance batches (docs/runbook.md), driven as transactions:
a frozen dataset or a paused consortium suspends every grant (no delivery or computation can be
recorded, isGrantValid false, new requests denied with the reason) and lifting it restores the
unexpired grants; only Governance (or the owner, for its own freeze) may stop or lift; one
Governance decision can revoke an agency and retire its validator at once."""

from __future__ import annotations

import time
from pathlib import Path
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

from chainshare.crypto.ca import compute_certificate_fingerprint, init_ca, issue_node_certificate
from chainshare.execution.contracts import ACCESS_CONTROL, GOVERNANCE, MEMBERSHIP
from chainshare.execution.contracts.membership import get_certificate_revocation
from chainshare.explorer.indexer.decode import decode_event

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


# -- certificate revocation (a compromised node TLS key): Membership.revokeCertificate --------------------

def _node_cert(consortium: Any, agency: str, node: str, out: Path) -> bytes:
    return issue_node_certificate(consortium.ca_dir, None, agency, node, out, key_password=None).encode()


def test_an_agency_revokes_its_own_node_certificate_at_once_and_no_one_else_may(
        consortium: Any, ledger: Ledger, acct: dict[str, Account], tmp_path: Path) -> None:
    cert = _node_cert(consortium, HEALTH, "health-node", tmp_path / "n1")
    fp = compute_certificate_fingerprint(cert)
    now = int(time.time() * 1000)  # the certificate is checked at block time: valid now, not at the genesis of 2025
    assert view(ledger, MEM, "certificateRevocation", fp) == (False, "", "", 0, "")
    assert "only agency 'Health Bureau' (the certificate's) or Governance" in reverted(
        ledger.send(acct[STATS], MEMBERSHIP, encode(MEM, "revokeCertificate", cert, "x"), timestamp_ms=now))
    assert "reason of 1..256 bytes" in reverted(
        ledger.send(acct[HEALTH], MEMBERSHIP, encode(MEM, "revokeCertificate", cert, ""), timestamp_ms=now + 1000))
    assert "not a valid PEM X.509 certificate" in reverted(
        ledger.send(acct[HEALTH], MEMBERSHIP, encode(MEM, "revokeCertificate", b"junk", "x"), timestamp_ms=now + 2000))
    receipt = ok(ledger.send(acct[HEALTH], MEMBERSHIP, encode(MEM, "revokeCertificate", cert, "key stolen"),
                             timestamp_ms=now + 3000))
    assert decode_logs(receipt) == [("CertificateRevoked", {"fingerprint": fp, "agency": HEALTH,
                                                            "node": "health-node", "reason": "key stolen"})]
    (log,) = receipt.logs  # the explorer's indexer decodes it from the ABI like every system-contract event
    assert decode_event(log.address, tuple(log.topics), log.data) == (
        "CertificateRevoked", {"fingerprint": "0x" + fp.hex(), "agency": HEALTH, "node": "health-node",
                               "reason": "key stolen"})
    height = ledger.parent_header.height
    assert view(ledger, MEM, "certificateRevocation", fp) == (True, HEALTH, "health-node", height, "key stolen")
    assert get_certificate_revocation(ledger.state, fp) == {"agency": HEALTH, "node": "health-node",
                                                            "height": height, "reason": "key stolen"}
    assert "already revoked" in reverted(ledger.send(acct[HEALTH], MEMBERSHIP, encode(
        MEM, "revokeCertificate", cert, "again"), timestamp_ms=now + 4000))
    # a certificate of another CA is refused: nothing to revoke on this chain
    init_ca(tmp_path / "other-ca", password=None)
    foreign = issue_node_certificate(tmp_path / "other-ca", None, HEALTH, "health-node", tmp_path / "n2",
                                     key_password=None).encode()
    assert "not issued by this CA" in reverted(ledger.send(acct[HEALTH], MEMBERSHIP, encode(
        MEM, "revokeCertificate", foreign, "x"), timestamp_ms=now + 5000))


def test_governance_revokes_a_certificate_of_any_agency(consortium: Any, ledger: Ledger, acct: dict[str, Account],
                                                        tmp_path: Path) -> None:
    cert = _node_cert(consortium, CUSTOMS, "customs-node", tmp_path / "n")
    ok(ledger.send(acct[HEALTH], MEMBERSHIP, encode(MEM, "isMember", acct[HEALTH].checksum),
                   timestamp_ms=int(time.time() * 1000)))  # move block time to now
    receipt = ok(pass_proposal(ledger, acct, MEMBERSHIP, encode(MEM, "revokeCertificate", cert, "owner unreachable")))
    assert ("CertificateRevoked", {"fingerprint": compute_certificate_fingerprint(cert), "agency": CUSTOMS,
                                   "node": "customs-node", "reason": "owner unreachable"}) in decode_logs(receipt)
