"""Datasets and AccessControl driven exactly as transactions do: signed EIP-1559 transactions in
blocks built by build_block, calls encoded and logs decoded with web3 from the ABIs in contracts/.

Three certified agencies: Health Bureau (role health, CN-31) owns the datasets, Statistics Office
(statistics, CN-31) shares its jurisdiction, Customs Agency (customs, CN-44) does not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from chainkit import CHAIN_ID, Account, Ledger, revert_reason, sign_call, validator
from hexbytes import HexBytes
from web3 import Web3

from chainshare.crypto.ca import init_ca, issue_agency
from chainshare.crypto.keystore import decrypt_account_key
from chainshare.crypto.secp import address_of_private_key
from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS, GOVERNANCE, MEMBERSHIP, cedar
from chainshare.execution.contracts.membership import get_agency_attribute
from chainshare.execution.genesis import ChainParams, Genesis, GenesisAgency, parse_genesis
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Receipt

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "contracts" / "policies" / "examples"
W3 = Web3()
T0 = 1_750_000_000  # 2025-06-15, inside the window of examples/sharing_window.cedar


def contract(name: str) -> Any:
    artifact = json.loads((ROOT / "contracts" / f"{name}.json").read_text())
    return W3.eth.contract(address=artifact["address"], abi=artifact["abi"])


DS, AC, GOV, MEM = contract("Datasets"), contract("AccessControl"), contract("Governance"), contract("Membership")
HEALTH, STATS, CUSTOMS = "Health Bureau", "Statistics Office", "Customs Agency"
SCHEMA = json.dumps({"columns": [{"name": "citizen_id", "kind": "personal"}, {"name": "age", "kind": "integer"},
                                 {"name": "diagnosis", "kind": "string"}], "min_group": 10})
SAME_JURISDICTION = (EXAMPLES / "same_jurisdiction_read.cedar").read_text()
HEALTH_COMPUTE = (EXAMPLES / "health_compute_only.cedar").read_text()
FORBID_ABROAD = (EXAMPLES / "forbid_identified_outside_jurisdiction.cedar").read_text()
PERMIT_ALL = 'permit (principal, action, resource);'
H1, H2 = b"\x11" * 32, b"\x22" * 32


@dataclass(frozen=True)
class Consortium:
    genesis: Genesis
    accounts: dict[str, Account]
    ca_dir: Path  # the consortium CA (unencrypted key) that certified the agencies


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    base = tmp_path_factory.mktemp("pki")
    ca = init_ca(base / "ca", password=None)
    agencies, accounts = [], {}
    for name, role, jurisdiction in ((HEALTH, "health", "CN-31"), (STATS, "statistics", "CN-31"),
                                     (CUSTOMS, "customs", "CN-44")):
        ident = issue_agency(base / "ca", None, name, base / name.replace(" ", "-"), role=role, key_password=None,
                             kdf_light=True)
        key = decrypt_account_key(json.loads((ident.directory / "account.json").read_text()), "")
        accounts[name] = Account(key, address_of_private_key(key))
        agencies.append(GenesisAgency(name, role, (accounts[name].address,), ident.cert_pem.encode(), jurisdiction))
    genesis = Genesis(CHAIN_ID, T0 * 1000, ca.cert_pem.encode(), tuple(agencies),
                      (validator("v1", HEALTH).genesis_entry(),), ChainParams(voting_period_blocks=50))
    return Consortium(genesis, accounts, base / "ca")


@pytest.fixture
def ledger(consortium: Consortium) -> Ledger:
    return Ledger(consortium.genesis)


@pytest.fixture
def acct(consortium: Consortium) -> dict[str, Account]:
    return consortium.accounts


# -- helpers -------------------------------------------------------------------------------------

def encode(c: Any, fn: str, *args: Any) -> bytes:
    return bytes(HexBytes(c.encode_abi(fn, args=list(args))))


def decode_logs(receipt: Receipt) -> list[tuple[str, dict[str, Any]]]:
    """(event name, args) of every log of ``receipt``, decoded by web3 from the ABI artifacts."""
    out = []
    for lg in receipt.logs:
        c = {DATASETS: DS, ACCESS_CONTROL: AC, GOVERNANCE: GOV, MEMBERSHIP: MEM}[lg.address]
        entry = {"address": Web3.to_checksum_address(lg.address), "topics": [HexBytes(t) for t in lg.topics],
                 "data": HexBytes(lg.data), "blockHash": HexBytes(bytes(32)), "blockNumber": 1,
                 "transactionHash": HexBytes(bytes(32)), "transactionIndex": 0, "logIndex": 0, "removed": False}
        for abi_event in c.abi:
            if abi_event["type"] != "event":
                continue
            signature = f"{abi_event['name']}({','.join(i['type'] for i in abi_event['inputs'])})"
            if W3.keccak(text=signature) == lg.topics[0]:
                event = c.events[abi_event["name"]]().process_log(entry)
                out.append((abi_event["name"], dict(event["args"])))
    assert len(out) == len(receipt.logs)
    return out


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    return receipt


def reverted(receipt: Receipt) -> str:
    assert receipt.status == STATUS_FAILURE, "expected a revert"
    assert receipt.logs == ()
    return revert_reason(receipt.output)


def view(ledger: Ledger, c: Any, fn: str, *args: Any) -> tuple[Any, ...]:
    success, out = ledger.view(bytes(HexBytes(c.address)), encode(c, fn, *args))
    assert success, revert_reason(out)
    types = [o["type"] for o in next(x for x in c.abi if x.get("name") == fn)["outputs"]]
    return tuple(eth_abi.decode(types, out))


def register(ledger: Ledger, owner: Account, policy: str, *, content: bytes = H1, schema: str = SCHEMA,
             gas: int = 3_000_000) -> Receipt:
    return ledger.send(owner, DATASETS, encode(DS, "register", "Hospital admissions", content, schema, 4096, policy),
                       gas=gas)


def request(ledger: Ledger, who: Account, dataset_id: int, action: str, purpose: str = "statistics",
            duration: int = 0, *, timestamp_ms: int | None = None) -> Receipt:
    return ledger.send(who, ACCESS_CONTROL, encode(AC, "request", dataset_id, action, purpose, duration),
                       timestamp_ms=timestamp_ms)


def decision(receipt: Receipt) -> tuple[int, bool, int]:
    request_id, allowed, grant_id = eth_abi.decode(["uint256", "bool", "uint256"], ok(receipt).output)
    return int(request_id), bool(allowed), int(grant_id)


def pass_proposal(ledger: Ledger, acct: dict[str, Account], target: bytes, data: bytes) -> Receipt:
    """Propose, vote (2 of 3 agencies: the threshold) and execute a Governance proposal."""
    proposer = acct[HEALTH]
    receipt = ok(ledger.send(proposer, GOVERNANCE, encode(GOV, "propose", Web3.to_checksum_address(target), data, "x")))
    (pid,) = eth_abi.decode(["uint256"], receipt.output)
    for name in (HEALTH, STATS):
        ok(ledger.send(acct[name], GOVERNANCE, encode(GOV, "vote", pid, True)))
    return ledger.send(proposer, GOVERNANCE, encode(GOV, "execute", pid))


def is_valid(ledger: Ledger, grant_id: int, grantee: str) -> bool:
    return bool(view(ledger, AC, "isGrantValid", grant_id, grantee)[0])


# -- genesis and agency attributes -----------------------------------------------------------------

def test_genesis_jurisdictions_become_membership_attributes(consortium: Consortium, ledger: Ledger) -> None:
    assert get_agency_attribute(ledger.reader(), STATS, "jurisdiction") == "CN-31"
    assert get_agency_attribute(ledger.reader(), CUSTOMS, "jurisdiction") == "CN-44"
    assert view(ledger, MEM, "getAgencyAttribute", CUSTOMS, "jurisdiction") == ("CN-44",)
    doc = consortium.genesis.to_json()
    assert [a["jurisdiction"] for a in doc["agencies"]] == ["CN-31", "CN-31", "CN-44"]
    assert parse_genesis(doc) == consortium.genesis
    # An agency without a jurisdiction leaves the document (and its hash) as it was before the field.
    plain = {**doc, "agencies": [{k: v for k, v in a.items() if k != "jurisdiction"} for a in doc["agencies"]]}
    assert "jurisdiction" not in parse_genesis(plain).to_json()["agencies"][0]
    with pytest.raises(ValueError, match="jurisdiction must be a string"):
        parse_genesis({**doc, "agencies": [{**doc["agencies"][0], "jurisdiction": 31}]})


def test_jurisdiction_changes_only_through_governance(ledger: Ledger, acct: dict[str, Account]) -> None:
    data = encode(MEM, "setAgencyAttribute", CUSTOMS, "jurisdiction", "CN-31")
    assert reverted(ledger.send(acct[CUSTOMS], MEMBERSHIP, data)) == \
        "only Governance may change membership: submit a proposal"
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    assert decision(request(ledger, acct[CUSTOMS], 1, "read"))[1] is False
    receipt = ok(pass_proposal(ledger, acct, MEMBERSHIP, data))
    assert decode_logs(receipt)[0] == ("AgencyAttributeSet", {"name": CUSTOMS, "key": "jurisdiction",
                                                              "value": "CN-31"})
    assert decision(request(ledger, acct[CUSTOMS], 1, "read"))[1] is True
    bad = pass_proposal(ledger, acct, MEMBERSHIP, encode(MEM, "setAgencyAttribute", CUSTOMS, "role", "x"))
    assert reverted(bad) == "unknown agency attribute 'role': use one of jurisdiction"


# -- Datasets --------------------------------------------------------------------------------------

def test_register_records_owner_schema_version_and_policy(ledger: Ledger, acct: dict[str, Account]) -> None:
    receipt = ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    assert eth_abi.decode(["uint256"], receipt.output) == (1,)
    canonical = ('{"columns":[{"kind":"personal","name":"citizen_id"},{"kind":"integer","name":"age"},'
                 '{"kind":"string","name":"diagnosis"}],"min_group":10}')
    assert decode_logs(receipt) == [
        ("DatasetRegistered", {"id": 1, "owner": HEALTH, "title": "Hospital admissions", "contentHash": H1,
                               "sizeBytes": 4096, "schemaJson": canonical}),
        ("DatasetPolicySet", {"id": 1, "policyId": "ds1-p1", "policyText": SAME_JURISDICTION}),
    ]
    assert view(ledger, DS, "getDataset", 1) == (HEALTH, "Hospital admissions", H1, canonical, 4096, 1, "ds1-p1",
                                                 False, 1)
    assert view(ledger, DS, "getPolicy", 1) == ("ds1-p1", SAME_JURISDICTION)
    assert view(ledger, DS, "datasetCount") == (1,)
    # The default minimum group is written out.
    ok(register(ledger, acct[STATS], PERMIT_ALL, content=H2, schema='{"columns": [{"name": "n", "kind": "number"}]}'))
    assert json.loads(view(ledger, DS, "getDataset", 2)[3]) == {"columns": [{"name": "n", "kind": "number"}],
                                                                "min_group": 5}


def test_register_with_an_invalid_policy_reverts_with_cedars_message(ledger: Ledger, acct: dict[str, Account]) -> None:
    typo = 'permit (principal, action == Action::"read", resource) when { principal.jurisdictoin == "CN-31" };'
    reason = reverted(register(ledger, acct[HEALTH], typo))
    assert reason == ("policy refused: policy does not validate against the schema: [policy0] for policy `policy0`, "
                      "attribute `jurisdictoin` on entity type `Agency` not found")
    assert reverted(register(ledger, acct[HEALTH], "permit (principal, action, resource) when {")) == \
        "policy refused: policy does not parse: unexpected end of input"
    unknown_action = 'permit (principal, action == Action::"write", resource);'
    assert "unrecognized action `Action::\"write\"`" in reverted(register(ledger, acct[HEALTH], unknown_action))
    assert view(ledger, DS, "datasetCount") == (0,)


@pytest.mark.parametrize(("schema", "message"), [
    ("not json", "schema is not valid JSON"),
    ('{"columns": []}', "schema 'columns' must be a list of 1..256 columns"),
    (json.dumps({"columns": [{"name": f"c{i}", "kind": "string"} for i in range(257)]}), "list of 1..256 columns"),
    ('{"columns": [{"name": "a", "kind": "blob"}]}', "column 'a' has unknown kind 'blob'"),
    ('{"columns": [{"name": "a", "kind": "date"}, {"name": "a", "kind": "date"}]}', "column 'a' appears twice"),
    ('{"columns": [{"name": "a", "kind": "date"}], "min_group": 1}', "'min_group' must be an integer in 2..1000000"),
    ('{"columns": [{"name": "a", "kind": "date"}], "min_group": 5.0}', "'min_group' must be an integer"),
    ('{"columns": [{"name": "a", "kind": "date"}], "owner": "x"}', "and nothing else"),
    ('{"columns": [{"name": "a", "kind": "date", "note": 1}]}', 'exactly "name" and "kind"'),
    ('{"columns": [{"name": "a", "kind": "date"}], "min_group": 5, "min_group": 6}', "repeats a key"),
])
def test_invalid_schema_is_refused(ledger: Ledger, acct: dict[str, Account], schema: str, message: str) -> None:
    assert message in reverted(register(ledger, acct[HEALTH], PERMIT_ALL, schema=schema))


def test_only_the_owner_adds_versions_sets_policy_and_retires(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    for fn, args in (("addVersion", (1, H2, 10)), ("setPolicy", (1, PERMIT_ALL)), ("retire", (1,))):
        reason = reverted(ledger.send(acct[STATS], DATASETS, encode(DS, fn, *args)))
        assert reason == f"only accounts of agency {HEALTH!r}, the owner of dataset 1, may change it"
    receipt = ok(ledger.send(acct[HEALTH], DATASETS, encode(DS, "addVersion", 1, H2, 8192)))
    assert decode_logs(receipt) == [("DatasetVersionAdded", {"id": 1, "version": 2, "contentHash": H2,
                                                             "sizeBytes": 8192})]
    assert view(ledger, DS, "getVersion", 1, 1)[:2] == (H1, 4096)
    assert view(ledger, DS, "getDataset", 1)[2:6:3] == (H2, 2)
    assert reverted(ledger.send(acct[HEALTH], DATASETS, encode(DS, "addVersion", 1, H1, 1))) == \
        "dataset 1 already has a version with this content hash"
    receipt = ok(ledger.send(acct[HEALTH], DATASETS, encode(DS, "setPolicy", 1, HEALTH_COMPUTE), gas=3_000_000))
    assert decode_logs(receipt) == [("DatasetPolicySet", {"id": 1, "policyId": "ds1-p2", "policyText": HEALTH_COMPUTE})]
    assert view(ledger, DS, "getPolicy", 1) == ("ds1-p2", HEALTH_COMPUTE)
    assert "attribute `rol`" in reverted(ledger.send(
        acct[HEALTH], DATASETS, encode(DS, "setPolicy", 1, 'permit(principal, action, resource) when '
                                                          '{ principal.rol == "x" };'), gas=3_000_000))
    assert decode_logs(ok(ledger.send(acct[HEALTH], DATASETS, encode(DS, "retire", 1)))) == \
        [("DatasetRetired", {"id": 1, "owner": HEALTH})]
    assert reverted(ledger.send(acct[HEALTH], DATASETS, encode(DS, "addVersion", 1, b"\x33" * 32, 1))) == \
        "dataset 1 is retired"


# -- decisions -------------------------------------------------------------------------------------

def test_permit_by_jurisdiction_allows_and_issues_a_grant(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    receipt = request(ledger, acct[STATS], 1, "read", "census-2025", 3600)
    assert decision(receipt) == (1, True, 1)
    now = ledger.parent_header.timestamp_ms // 1000
    assert decode_logs(receipt) == [
        ("AccessRequested", {"requestId": 1, "datasetId": 1, "requester": STATS, "account": acct[STATS].checksum,
                             "action": "read", "purpose": "census-2025", "durationSeconds": 3600}),
        ("AccessDecided", {"requestId": 1, "datasetId": 1, "requester": STATS, "action": "read",
                           "purpose": "census-2025", "allowed": True, "policyIds": ["ds1-p1#0"], "errors": []}),
        ("GrantIssued", {"grantId": 1, "datasetId": 1, "grantee": STATS, "action": "read", "purpose": "census-2025",
                         "expiresAt": now + 3600}),
    ]
    assert view(ledger, AC, "getGrant", 1) == (1, STATS, "read", "census-2025", now + 3600, False)
    assert is_valid(ledger, 1, STATS) and not is_valid(ledger, 1, CUSTOMS) and not is_valid(ledger, 99, STATS)
    assert view(ledger, AC, "requestCount") == (1,) and view(ledger, AC, "grantCount") == (1,)
    # Duration 0 means 30 days.
    assert decision(request(ledger, acct[STATS], 1, "read"))[1]
    assert view(ledger, AC, "getGrant", 2)[4] == ledger.parent_header.timestamp_ms // 1000 + 30 * 86_400


def test_denied_request_succeeds_and_records_the_decision(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    receipt = request(ledger, acct[CUSTOMS], 1, "read")
    assert receipt.status == STATUS_SUCCESS
    assert decision(receipt) == (1, False, 0)
    names = [name for name, _ in decode_logs(receipt)]
    assert names == ["AccessRequested", "AccessDecided"]
    decided = decode_logs(receipt)[1][1]
    assert decided["allowed"] is False and decided["policyIds"] == [] and decided["errors"] == []
    assert view(ledger, AC, "grantCount") == (0,)


def test_denial_names_the_forbid_and_evaluation_errors(ledger: Ledger, acct: dict[str, Account]) -> None:
    policy = ('permit (principal, action, resource);\n'
              'forbid (principal, action == Action::"compute", resource) when { principal.role == "customs" };\n'
              'permit (principal, action, resource) when { context.time * 9223372036854775807 > 0 };\n')
    ok(register(ledger, acct[HEALTH], policy))
    decided = decode_logs(request(ledger, acct[CUSTOMS], 1, "compute"))[1][1]
    assert decided["allowed"] is False
    assert decided["policyIds"] == ["ds1-p1#1"]
    assert len(decided["errors"]) == 1 and decided["errors"][0].startswith(
        "error while evaluating policy `ds1-p1#2`: integer overflow")


def test_owner_is_decided_by_policy_like_anyone(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], HEALTH_COMPUTE))
    assert decision(request(ledger, acct[HEALTH], 1, "read"))[1] is False
    assert decision(request(ledger, acct[HEALTH], 1, "compute", "public-health-statistics/flu"))[1] is True
    assert decision(request(ledger, acct[STATS], 1, "compute", "public-health-statistics/flu"))[1] is False


@pytest.mark.parametrize(("args", "message"), [
    ((1, "write", "x", 0), "unknown action 'write': use one of read, read_identified, compute"),
    ((1, "read", "", 0), "purpose must be 1..256 bytes"),
    ((1, "read", "x" * 257, 0), "purpose must be 1..256 bytes"),
    ((1, "read", "x", 366 * 86_400), "durationSeconds must be at most 31536000"),
    ((7, "read", "x", 0), "no dataset 7"),
])
def test_malformed_request_reverts(ledger: Ledger, acct: dict[str, Account], args: tuple[Any, ...],
                                   message: str) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    assert reverted(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "request", *args))).startswith(message)


def test_consortium_forbid_installed_by_governance_wins(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    assert decision(request(ledger, acct[CUSTOMS], 1, "read_identified"))[1] is True
    receipt = ok(pass_proposal(ledger, acct, ACCESS_CONTROL,
                               encode(AC, "installConsortiumPolicy", "no-identified-abroad", FORBID_ABROAD)))
    assert decode_logs(receipt)[0] == ("ConsortiumPolicyInstalled", {"policyId": "no-identified-abroad",
                                                                     "policyText": FORBID_ABROAD, "replaced": False})
    assert view(ledger, AC, "getConsortiumPolicyIds") == (("no-identified-abroad",),)
    denied = decode_logs(request(ledger, acct[CUSTOMS], 1, "read_identified"))[1][1]
    assert denied["allowed"] is False and denied["policyIds"] == ["no-identified-abroad#0"]
    allowed = decode_logs(request(ledger, acct[STATS], 1, "read_identified"))[1][1]
    assert allowed["allowed"] is True and allowed["policyIds"] == ["ds1-p1#0"]
    assert decision(request(ledger, acct[CUSTOMS], 1, "read"))[1] is True  # the forbid is about identified data
    # Removal, also by Governance only, lifts it.
    ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "removeConsortiumPolicy", "no-identified-abroad")))
    assert decision(request(ledger, acct[CUSTOMS], 1, "read_identified"))[1] is True


def test_members_cannot_install_or_remove_consortium_policies(ledger: Ledger, acct: dict[str, Account]) -> None:
    for data in (encode(AC, "installConsortiumPolicy", "x", FORBID_ABROAD), encode(AC, "removeConsortiumPolicy", "x")):
        assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, data, gas=3_000_000)) == \
            "only Governance may change consortium policies: submit a proposal"


@pytest.mark.parametrize(("policy_id", "text", "message"), [
    ("open", PERMIT_ALL, "statement 0 is a permit: consortium-wide policies may only forbid"),
    ("empty", "", "policy text contains no statement"),
    ("ds1-p1", FORBID_ABROAD, "consortium policy id must be"),
    ("bad id!", FORBID_ABROAD, "consortium policy id must be"),
    ("typo", 'forbid (principal, action, resource) when { principal.juris == "" };', "attribute `juris`"),
])
def test_governance_cannot_install_an_invalid_consortium_policy(ledger: Ledger, acct: dict[str, Account],
                                                                policy_id: str, text: str, message: str) -> None:
    receipt = pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "installConsortiumPolicy", policy_id, text))
    assert message in reverted(receipt)


# -- grants ----------------------------------------------------------------------------------------

def test_grant_expiry_follows_block_time(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION))
    receipt = request(ledger, acct[STATS], 1, "read", duration=3600)
    granted_at = ledger.parent_header.timestamp_ms // 1000
    grant_id = decision(receipt)[2]
    ledger.execute([], timestamp_ms=(granted_at + 3599) * 1000)
    assert is_valid(ledger, grant_id, STATS)
    delivery = encode(AC, "recordDelivery", grant_id, H1, H2, 4096)
    ledger.execute([], timestamp_ms=(granted_at + 3600 + 1) * 1000)
    assert not is_valid(ledger, grant_id, STATS)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, delivery)) == \
        f"grant {grant_id} expired at {granted_at + 3600}"


def test_revoke_by_owner_or_grantee_but_not_a_third_agency(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    first, second = decision(request(ledger, acct[STATS], 1, "read"))[2], decision(request(ledger, acct[STATS], 1,
                                                                                            "compute"))[2]
    assert reverted(ledger.send(acct[CUSTOMS], ACCESS_CONTROL, encode(AC, "revokeGrant", first))) == \
        f"only the grantee {STATS!r} or the dataset owner {HEALTH!r} may revoke grant {first}"
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "revokeGrant", first)))
    assert decode_logs(receipt) == [("GrantRevoked", {"grantId": first, "datasetId": 1, "by": HEALTH})]
    receipt = ok(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "revokeGrant", second)))
    assert decode_logs(receipt)[0][1]["by"] == STATS
    assert not is_valid(ledger, first, STATS) and not is_valid(ledger, second, STATS)
    assert view(ledger, AC, "getGrant", first)[5] is True
    assert reverted(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "revokeGrant", first))) == \
        f"grant {first} is already revoked"


def test_delivery_is_recorded_by_the_owner_under_a_valid_read_grant(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    read = decision(request(ledger, acct[STATS], 1, "read"))[2]
    compute = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    delivery = encode(AC, "recordDelivery", read, H1, H2, 4096)  # read: pseudonymized bytes, another hash
    assert reverted(ledger.send(acct[STATS], ACCESS_CONTROL, delivery)) == \
        "only accounts of the owner of dataset 1 may record its use"
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, delivery))
    assert decode_logs(receipt) == [("DeliveryRecorded", {"grantId": read, "datasetId": 1, "grantee": STATS,
                                                          "contentHash": H1, "deliveredHash": H2,
                                                          "bytesDelivered": 4096})]
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", read, H2, H2, 1))) == \
        "content hash is not a version of dataset 1"
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", compute, H1, H1, 1))) \
        == f"grant {compute} is for 'compute', not read or read_identified"
    ok(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "revokeGrant", read)))
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, delivery)) == f"grant {read} was revoked"


def test_a_read_identified_delivery_records_the_version_itself(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    grant = decision(request(ledger, acct[STATS], 1, "read_identified"))[2]
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", grant, H1, H2, 9))) == \
        "a read_identified delivery is the dataset version itself: the delivered hash must be its content hash"
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordDelivery", grant, H1, H1, 9)))
    assert decode_logs(receipt)[0][1]["deliveredHash"] == H1


def test_computation_is_recorded_only_under_a_compute_grant(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    read = decision(request(ledger, acct[STATS], 1, "read"))[2]
    compute = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    q, r = b"\x0a" * 32, b"\x0b" * 32
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", read, q, r, 10))) == \
        f"grant {read} is for 'read', not compute"
    assert reverted(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "recordComputation", compute, q, r, 10))) == \
        "only accounts of the owner of dataset 1 may record its use"
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", compute, q, r, 0))) == \
        "an answered query spends a positive epsilonMicro"
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", compute, q, r, 250_000)))
    assert decode_logs(receipt) == [("ComputationRecorded", {"grantId": compute, "datasetId": 1, "grantee": STATS,
                                                             "queryHash": q, "resultHash": r,
                                                             "epsilonMicro": 250_000, "spentMicro": 250_000})]


def test_the_privacy_budget_is_the_grantees_across_its_grants_and_set_by_the_owner(
        ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    first = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    q, r = b"\x0a" * 32, b"\x0b" * 32
    assert reverted(ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "setComputeLimits", 1, 3_000_000, 5))) == \
        "only accounts of the owner of dataset 1 may set its compute limits"
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "setComputeLimits", 1, 3_000_000, 5)))
    limits_set = decode_logs(receipt)[0]
    assert limits_set[0] == "ComputeLimitsSet" and {"datasetId": 1, "budgetMicro": 3_000_000, "queriesPerHour": 5,
                                                     "by": HEALTH}.items() <= limits_set[1].items()
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", first, q, r, 2_000_000)))
    # A new grant does not renew the budget: it is the grantee's on the dataset.
    second = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    assert view(ledger, AC, "getComputeAllowance", second)[:2] == (3_000_000, 2_000_000)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", second, q, r,
                                                                      1_000_001))) == \
        "privacy budget exhausted: 2000000 of 3000000 micro-epsilon spent, the query needs 1000001"
    # A refusal decided on noisy counts is charged too; it is on chain with its reason.
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordRefusal", second, q, "min_group",
                                                                  1_000_000)))
    assert decode_logs(receipt) == [("ComputationRefused", {"grantId": second, "datasetId": 1, "grantee": STATS,
                                                            "queryHash": q, "reason": "min_group",
                                                            "epsilonMicro": 1_000_000, "spentMicro": 3_000_000})]
    receipt = ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordRefusal", second, q, "budget_exhausted",
                                                                  0)))
    assert decode_logs(receipt)[0][1]["reason"] == "budget_exhausted"
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordRefusal", second, q,
                                                                      "budget_exhausted", 5))) == \
        "a budget_exhausted refusal ran no noisy check: its epsilonMicro must be 0"
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordRefusal", second, q, "bored", 0))) \
        .startswith("unknown refusal reason 'bored'")


def test_queries_per_grant_and_hour_are_capped_on_chain(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    grant = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "setComputeLimits", 1, 10_000_000, 2)))
    hour = ledger.parent_header.timestamp_ms // 1000 // 3600 + 1
    ledger.execute([], timestamp_ms=hour * 3600 * 1000)  # at the start of an hour of block time
    q, r = b"\x0a" * 32, b"\x0b" * 32
    rate_refusal = encode(AC, "recordRefusal", grant, q, "rate_limit", 0)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, rate_refusal)) == \
        f"grant {grant} is not rate-limited: it ran 0 of 2 queries this hour"
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", grant, q, r, 1)))
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordRefusal", grant, q, "personal_column", 0)))
    assert view(ledger, AC, "getComputeAllowance", grant)[2:] == (2, 2, (hour + 1) * 3600)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", grant, q, r, 1))) == \
        f"rate limit: grant {grant} ran its 2 queries of this hour"
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, rate_refusal))  # one rate-limit refusal per hour is recorded
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, rate_refusal)) == \
        f"a rate-limit refusal of grant {grant} is already recorded for this hour"
    ledger.execute([], timestamp_ms=(hour + 1) * 3600 * 1000)
    ok(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", grant, q, r, 1)))


def test_retired_dataset_denies_every_request_and_voids_grants(ledger: Ledger, acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], PERMIT_ALL))
    grant = decision(request(ledger, acct[STATS], 1, "compute"))[2]
    ok(ledger.send(acct[HEALTH], DATASETS, encode(DS, "retire", 1)))
    receipt = request(ledger, acct[STATS], 1, "read")
    assert decision(receipt) == (2, False, 0)
    decided = decode_logs(receipt)[1][1]
    assert decided["policyIds"] == [] and decided["errors"] == ["dataset 1 is retired"]
    assert not is_valid(ledger, grant, STATS)
    assert reverted(ledger.send(acct[HEALTH], ACCESS_CONTROL, encode(AC, "recordComputation", grant, H1, H2, 1))) == \
        "dataset 1 is retired"


# -- gas and determinism ---------------------------------------------------------------------------

def test_cedar_work_is_charged_by_policy_size(ledger: Ledger, acct: dict[str, Account]) -> None:
    small = ok(register(ledger, acct[HEALTH], PERMIT_ALL, content=H1))
    padding = "// " + "x" * 4000 + "\n"
    large = ok(register(ledger, acct[HEALTH], padding + PERMIT_ALL, content=H2))
    extra_bytes = len(padding)
    # Validation gas per byte, plus calldata, storage and the event carrying the text.
    assert large.gas_used - small.gas_used >= extra_bytes * cedar.G_CEDAR_VALIDATE_BYTE
    ok(request(ledger, acct[STATS], 1, "read"))  # creates the request and grant counters
    cheap, dear = (ok(request(ledger, acct[STATS], i, "read")).gas_used for i in (1, 2))
    assert dear - cheap == extra_bytes * cedar.G_CEDAR_EVALUATE_BYTE
    # Too little gas for the evaluation: the whole call reverts (out of gas), nothing is decided.
    receipt = ledger.send(acct[STATS], ACCESS_CONTROL, encode(AC, "request", 2, "read", "x", 0), gas=120_000)
    assert reverted(receipt) == "out of gas"


def test_reexecuting_a_block_on_a_fresh_state_reaches_the_same_header(ledger: Ledger,
                                                                      acct: dict[str, Account]) -> None:
    ok(register(ledger, acct[HEALTH], SAME_JURISDICTION + 'permit (principal, action == Action::"read_identified", '
                                                          'resource);'))
    ok(pass_proposal(ledger, acct, ACCESS_CONTROL, encode(AC, "installConsortiumPolicy", "abroad", FORBID_ABROAD)))
    parent_state, parent_header, parent_acc = dict(ledger.state), ledger.parent_header, ledger.accumulator
    raws = []
    for who, action in ((STATS, "read"), (CUSTOMS, "read"), (STATS, "read_identified"), (CUSTOMS, "read_identified"),
                        (HEALTH, "compute")):
        a = acct[who]
        nonce = ledger.nonces.get(a.address, 0)
        ledger.nonces[a.address] = nonce + 1
        raws.append(sign_call(a, ACCESS_CONTROL, encode(AC, "request", 1, action, "audit", 60), nonce))
    executed = ledger.execute(raws)
    assert [r.status for r in executed.receipts] == [STATUS_SUCCESS] * 5
    assert [decode_logs(r)[1][1]["allowed"] for r in executed.receipts] == [True, False, True, False, False]
    cedar._compile.cache_clear()  # a node that has never seen these policies or agencies decides the same
    cedar._parse_entities.cache_clear()
    again = ledger.reapply(executed, parent_state, parent_header, parent_acc)
    assert again.block.header == executed.block.header
    assert again.receipts == executed.receipts
