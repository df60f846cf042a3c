"""Governance and Membership: M-of-N agency votes are the only way to change membership, and a new
agency must hold a certificate of the consortium CA recorded at genesis."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from chainkit import (
    GOVERNANCE,
    MEMBERSHIP,
    NOTARY,
    Account,
    Ledger,
    account,
    make_genesis,
    revert_reason,
    validator,
)
from eth_utils import keccak as ref_keccak
from hexbytes import HexBytes
from web3 import Web3

from chainshare.crypto.ca import AgencyIdentity, init_ca, issue_agency
from chainshare.crypto.keystore import decrypt_account_key
from chainshare.crypto.secp import address_of_private_key
from chainshare.execution.contracts.governance import compute_required_votes
from chainshare.execution.contracts.membership import get_active_agency_count, get_agency, is_member
from chainshare.execution.genesis import ChainParams
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS

ROOT = Path(__file__).resolve().parents[2]
W3 = Web3()


def contract(name: str) -> Any:
    artifact = json.loads((ROOT / "contracts" / f"{name}.json").read_text())
    return W3.eth.contract(address=artifact["address"], abi=artifact["abi"])


GOV, MEM, NOT = contract("Governance"), contract("Membership"), contract("Notary")


def encode(c: Any, fn: str, *args: Any) -> bytes:
    return bytes(HexBytes(c.encode_abi(fn, args=list(args))))


MEMBERS = {name: account(name) for name in ("Agency A", "Agency B", "Agency C", "Agency D")}
A, B, C, D = MEMBERS.values()
OUTSIDER = account("outsider")


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    newcomer: AgencyIdentity
    newcomer_account: Account
    foreign: AgencyIdentity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = init_ca(base / "ca", password=None)
    newcomer = issue_agency(base / "ca", None, "Agency E", base / "agency-e", key_password=None, kdf_light=True)
    key = decrypt_account_key(json.loads((base / "agency-e" / "account.json").read_text()), "")
    init_ca(base / "other-ca", name="another consortium", password=None)
    foreign = issue_agency(base / "other-ca", None, "Agency F", base / "agency-f", key_password=None, kdf_light=True)
    return Pki(ca.cert_pem.encode(), newcomer, Account(key, address_of_private_key(key)), foreign)


@pytest.fixture
def ledger(pki: Pki) -> Ledger:
    genesis = make_genesis([(name, [acct.address]) for name, acct in MEMBERS.items()], [validator("v1", "Agency A")],
                           ca_certificate=pki.ca_pem, timestamp_ms=int(time.time() * 1000),
                           params=ChainParams(voting_period_blocks=20))
    return Ledger(genesis)


def add_agency_call(identity: AgencyIdentity, name: str | None = None) -> bytes:
    return encode(MEM, "addAgency", name or identity.name, "member", [identity.address], identity.cert_pem.encode())


def propose(ledger: Ledger, proposer: Account, target: bytes, data: bytes) -> int:
    receipt = ledger.send(proposer, GOVERNANCE, encode(GOV, "propose", Web3.to_checksum_address(target), data, "x"))
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    (pid,) = eth_abi.decode(["uint256"], receipt.output)
    return int(pid)


def vote(ledger: Ledger, voter: Account, pid: int, support: bool = True) -> Any:
    return ledger.send(voter, GOVERNANCE, encode(GOV, "vote", pid, support))


def execute(ledger: Ledger, executor: Account, pid: int) -> Any:
    return ledger.send(executor, GOVERNANCE, encode(GOV, "execute", pid))


def pass_proposal(ledger: Ledger, target: bytes, data: bytes, voters: tuple[Account, ...] = (A, B, C)) -> Any:
    pid = propose(ledger, A, target, data)
    for v in voters:
        assert vote(ledger, v, pid).status == STATUS_SUCCESS
    return execute(ledger, A, pid)


# -- thresholds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 11))
def test_required_votes_are_two_thirds_of_agencies_rounded_up(n: int) -> None:
    assert compute_required_votes(n, 2, 3) == math.ceil(n * 2 / 3)


def test_required_votes_view_reports_threshold_and_members(ledger: Ledger) -> None:
    ok, out = ledger.view(GOVERNANCE, encode(GOV, "requiredVotes"))
    assert ok and eth_abi.decode(["uint256", "uint256"], out) == (3, 4)


# -- the governed path ----------------------------------------------------------------------------------

def test_proposal_with_threshold_votes_adds_a_certified_agency(ledger: Ledger, pki: Pki) -> None:
    newcomer = pki.newcomer_account
    assert newcomer.checksum == pki.newcomer.address
    assert not is_member(ledger.reader(), newcomer.address)
    pid = propose(ledger, A, MEMBERSHIP, add_agency_call(pki.newcomer))
    assert pid == 1
    for voter in (A, B):
        assert vote(ledger, voter, pid).status == STATUS_SUCCESS
    below = execute(ledger, C, pid)
    assert below.status == STATUS_FAILURE
    assert revert_reason(below.output) == "proposal 1 has 2 yes votes of active agencies, needs 3"
    assert not is_member(ledger.reader(), newcomer.address)

    assert vote(ledger, C, pid).status == STATUS_SUCCESS
    receipt = execute(ledger, D, pid)
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    assert is_member(ledger.reader(), newcomer.address)
    agency = get_agency(ledger.reader(), "Agency E")
    assert agency is not None and agency["active"] and agency["accounts"] == [newcomer.address]
    assert get_active_agency_count(ledger.reader()) == 5

    added, executed = receipt.logs
    assert added.address == MEMBERSHIP and executed.address == GOVERNANCE
    assert added.topics == (ref_keccak(b"AgencyAdded(string,string,address[])"),)
    event = MEM.events.AgencyAdded().process_log(_web3_log(added))
    assert event["args"]["name"] == "Agency E" and event["args"]["accounts"] == [newcomer.checksum]
    assert executed.topics[0] == ref_keccak(b"ProposalExecuted(uint256,address)")
    assert executed.topics[1] == (1).to_bytes(32, "big")

    # The new agency's account can now transact.
    assert ledger.send(newcomer, NOTARY, encode(NOT, "anchor", b"\x42" * 32)).status == STATUS_SUCCESS
    # And the threshold follows the membership: ceil(5 * 2/3) = 4.
    _, out = ledger.view(GOVERNANCE, encode(GOV, "requiredVotes"))
    assert eth_abi.decode(["uint256", "uint256"], out) == (4, 5)


def test_proposal_and_vote_events_are_logged(ledger: Ledger, pki: Pki) -> None:
    pid = propose(ledger, A, MEMBERSHIP, add_agency_call(pki.newcomer))
    created = ledger.blocks[-1].receipts[0].logs[0]
    assert created.topics == (ref_keccak(b"ProposalCreated(uint256,address,address,string)"),
                              pid.to_bytes(32, "big"), bytes(12) + A.address)
    voted = vote(ledger, B, pid, False).logs[0]
    event = GOV.events.Voted().process_log(_web3_log(voted))
    assert event["args"]["agency"] == "Agency B" and event["args"]["support"] is False
    ok, out = ledger.view(GOVERNANCE, encode(GOV, "getProposal", pid))
    fields = eth_abi.decode(["address", "address", "bytes", "string", "uint256", "uint256", "bool", "uint256"], out)
    assert ok and fields[0] == A.checksum.lower() and fields[4:7] == (0, 1, False)


def test_no_votes_do_not_count_towards_the_threshold(ledger: Ledger, pki: Pki) -> None:
    pid = propose(ledger, A, MEMBERSHIP, add_agency_call(pki.newcomer))
    vote(ledger, A, pid)
    vote(ledger, B, pid)
    vote(ledger, C, pid, support=False)
    vote(ledger, D, pid, support=False)
    assert execute(ledger, A, pid).status == STATUS_FAILURE
    assert not is_member(ledger.reader(), pki.newcomer_account.address)


def test_an_agency_votes_only_once(ledger: Ledger, pki: Pki) -> None:
    pid = propose(ledger, A, MEMBERSHIP, add_agency_call(pki.newcomer))
    assert vote(ledger, B, pid).status == STATUS_SUCCESS
    again = vote(ledger, B, pid, support=False)
    assert again.status == STATUS_FAILURE
    assert revert_reason(again.output) == "agency 'Agency B' already voted on proposal 1"


def test_executed_proposal_cannot_run_again(ledger: Ledger, pki: Pki) -> None:
    assert pass_proposal(ledger, MEMBERSHIP, add_agency_call(pki.newcomer)).status == STATUS_SUCCESS
    again = execute(ledger, B, 1)
    assert again.status == STATUS_FAILURE and revert_reason(again.output) == "proposal 1 was already executed"
    late_vote = vote(ledger, D, 1)
    assert late_vote.status == STATUS_FAILURE and "already executed" in revert_reason(late_vote.output)


def test_expired_proposal_can_no_longer_be_voted(pki: Pki) -> None:
    genesis = make_genesis([(n, [a.address]) for n, a in MEMBERS.items()], [validator("v1", "Agency A")],
                           ca_certificate=pki.ca_pem, timestamp_ms=int(time.time() * 1000),
                           params=ChainParams(voting_period_blocks=1))
    ledger = Ledger(genesis)
    pid = propose(ledger, A, MEMBERSHIP, add_agency_call(pki.newcomer))  # block 1, deadline 2
    assert vote(ledger, A, pid).status == STATUS_SUCCESS  # block 2
    late = vote(ledger, B, pid)  # block 3
    assert late.status == STATUS_FAILURE and revert_reason(late.output) == "proposal 1 expired at block 2"


def test_unknown_proposal_reverts(ledger: Ledger) -> None:
    receipt = vote(ledger, A, 99)
    assert receipt.status == STATUS_FAILURE and revert_reason(receipt.output) == "no proposal 99"


def test_proposal_target_must_be_a_system_contract(ledger: Ledger) -> None:
    receipt = ledger.send(A, GOVERNANCE, encode(GOV, "propose", OUTSIDER.checksum, b"", "x"))
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output) == "proposal target must be a system contract"


def test_non_member_cannot_propose(ledger: Ledger, pki: Pki) -> None:
    data = encode(GOV, "propose", Web3.to_checksum_address(MEMBERSHIP), add_agency_call(pki.newcomer), "x")
    # Even when the call reaches the contract (eth_call), Governance refuses a non-member...
    ok, out = ledger.view(GOVERNANCE, data, sender=OUTSIDER.address)
    assert not ok and revert_reason(out) == "only accounts of member agencies may take part in governance"
    # ...and a non-member's transaction never gets into a block.
    with pytest.raises(AssertionError, match="not an account of a member agency"):
        ledger.send(OUTSIDER, GOVERNANCE, data)


@pytest.mark.parametrize("fn", ["addAgency", "revokeAgency"])
def test_members_cannot_change_membership_without_governance(ledger: Ledger, pki: Pki, fn: str) -> None:
    data = add_agency_call(pki.newcomer) if fn == "addAgency" else encode(MEM, "revokeAgency", "Agency B")
    receipt = ledger.send(A, MEMBERSHIP, data)
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output) == "only Governance may change membership: submit a proposal"
    assert is_member(ledger.reader(), B.address)
    assert not is_member(ledger.reader(), pki.newcomer_account.address)


def test_revoked_agency_loses_membership(ledger: Ledger) -> None:
    receipt = pass_proposal(ledger, MEMBERSHIP, encode(MEM, "revokeAgency", "Agency D"))
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    assert not is_member(ledger.reader(), D.address)
    agency = get_agency(ledger.reader(), "Agency D")
    assert agency is not None and agency["active"] is False
    assert get_active_agency_count(ledger.reader()) == 3
    assert receipt.logs[0].topics == (ref_keccak(b"AgencyRevoked(string)"),)
    ok, out = ledger.view(MEMBERSHIP, encode(MEM, "isMember", D.checksum))
    assert ok and eth_abi.decode(["bool"], out) == (False,)
    with pytest.raises(AssertionError, match="not an account of a member agency"):
        ledger.send(D, NOTARY, encode(NOT, "anchor", b"\x01" * 32))
    # Revoking twice is refused.
    again = pass_proposal(ledger, MEMBERSHIP, encode(MEM, "revokeAgency", "Agency D"))
    assert again.status == STATUS_FAILURE and revert_reason(again.output) == "agency 'Agency D' is already revoked"


def test_certificate_from_another_ca_is_refused(ledger: Ledger, pki: Pki) -> None:
    receipt = pass_proposal(ledger, MEMBERSHIP, add_agency_call(pki.foreign))
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output).startswith("certificate refused: certificate was not issued by this CA")
    assert get_agency(ledger.reader(), "Agency F") is None
    assert receipt.logs == ()


def test_certificate_of_another_agency_is_refused(ledger: Ledger, pki: Pki) -> None:
    receipt = pass_proposal(ledger, MEMBERSHIP, add_agency_call(pki.newcomer, name="Agency X"))
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output) == "certificate is for agency 'Agency E', not 'Agency X'"


def test_existing_agency_or_account_cannot_be_added_again(ledger: Ledger, pki: Pki) -> None:
    duplicate_name = encode(MEM, "addAgency", "Agency B", "member", [pki.newcomer.address],
                            pki.newcomer.cert_pem.encode())
    receipt = pass_proposal(ledger, MEMBERSHIP, duplicate_name)
    assert revert_reason(receipt.output) == "agency 'Agency B' already exists"
    taken_account = encode(MEM, "addAgency", "Agency E", "member", [B.checksum], pki.newcomer.cert_pem.encode())
    receipt = pass_proposal(ledger, MEMBERSHIP, taken_account)
    assert revert_reason(receipt.output) == f"account 0x{B.address.hex()} already belongs to an agency"


def _web3_log(lg: Any) -> dict[str, Any]:
    return {"address": Web3.to_checksum_address(lg.address), "topics": [HexBytes(t) for t in lg.topics],
            "data": HexBytes(lg.data), "blockHash": HexBytes(bytes(32)), "blockNumber": 1,
            "transactionHash": HexBytes(bytes(32)), "transactionIndex": 0, "logIndex": 0, "removed": False}


# -- regressions of bugs this suite found (formerly strict xfails) -------------------------------------

def test_votes_of_a_revoked_agency_no_longer_count(ledger: Ledger, pki: Pki) -> None:
    pid = propose(ledger, C, MEMBERSHIP, add_agency_call(pki.newcomer))
    assert vote(ledger, C, pid).status == STATUS_SUCCESS
    assert vote(ledger, D, pid).status == STATUS_SUCCESS
    assert pass_proposal(ledger, MEMBERSHIP, encode(MEM, "revokeAgency", "Agency D")).status == STATUS_SUCCESS
    # 3 active agencies need 2 votes; only C among the active ones voted yes.
    assert execute(ledger, A, pid).status == STATUS_FAILURE


def test_agency_accounts_must_be_the_one_its_certificate_binds(ledger: Ledger, pki: Pki) -> None:
    data = encode(MEM, "addAgency", "Agency E", "member", [OUTSIDER.checksum], pki.newcomer.cert_pem.encode())
    assert pass_proposal(ledger, MEMBERSHIP, data).status == STATUS_FAILURE
