"""Governance end to end over JSON-RPC with web3.py: a new agency certified by the devnet's CA
(`chainshare ca issue-agency`, a subprocess) is added by a Governance proposal (vote, execute), may
then transact, and is removed again by a revokeAgency proposal that needs the new M-of-N threshold."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from netkit import Devnet, RpcError, anchor_data, load_artifact, run_cli, sign_call
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("governance")]

NEW = "agency-new"
REVOKED = "agency-revoked"


class Agency:
    def __init__(self, name: str, account: Any, cert: bytes) -> None:
        self.name = name
        self.account = account
        self.cert = cert


def issue_agency(ca_dir: Path, name: str, out: Path) -> Agency:
    """`chainshare ca issue-agency NAME --ca-dir ... --out ... --dev`, then read the identity back."""
    proc = run_cli("ca", "issue-agency", name, "--ca-dir", ca_dir, "--out", out, "--dev", "--json")
    assert proc.returncode == 0, proc.stderr
    identity = json.loads(proc.stdout)
    assert identity["name"] == name
    keystore = json.loads((out / "account.json").read_text())
    account = Account.from_key(Account.decrypt(keystore, ""))  # a standard V3 keystore, empty dev password
    assert account.address == identity["address"]
    return Agency(name, account, Path(identity["cert"]).read_bytes())


class Gov:
    """The three system contracts as web3.py contract objects, and a transact helper."""

    def __init__(self, net: Devnet) -> None:
        self.net = net
        self.w3 = net.web3()
        self.c = {n: self.w3.eth.contract(address=load_artifact(n)["address"], abi=load_artifact(n)["abi"])
                  for n in ("Membership", "Governance", "Notary")}
        self.founder = net.account
        self.controlled: list[Any] = [self.founder]  # accounts of agencies this module created


    def transact(self, fn: Any, acct: Any, gas: int | None = None) -> Any:
        fields = {"from": acct.address, "chainId": self.w3.eth.chain_id,
                  "nonce": self.w3.eth.get_transaction_count(acct.address, "pending")}
        if gas is not None:
            fields["gas"] = gas
        signed = acct.sign_transaction(fn.build_transaction(fields))
        return self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction),
                                                        timeout=30, poll_latency=0.05)

    def propose(self, inner: bytes, description: str, acct: Any) -> int:
        gov = self.c["Governance"]
        receipt = self.transact(gov.functions.propose(self.c["Membership"].address, inner, description), acct)
        assert receipt["status"] == 1
        (created,) = gov.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
        assert created["args"]["target"] == self.c["Membership"].address
        assert created["args"]["proposer"] == acct.address
        return int(created["args"]["id"])

    def vote(self, pid: int, acct: Any) -> None:
        receipt = self.transact(self.c["Governance"].functions.vote(pid, True), acct)
        assert receipt["status"] == 1
        (voted,) = self.c["Governance"].events.Voted().process_receipt(receipt, errors=DISCARD)
        assert voted["args"]["id"] == pid and voted["args"]["support"] is True

    def execute(self, pid: int, acct: Any) -> Any:
        receipt = self.transact(self.c["Governance"].functions.execute(pid), acct)
        assert receipt["status"] == 1, receipt
        (executed,) = self.c["Governance"].events.ProposalExecuted().process_receipt(receipt, errors=DISCARD)
        assert executed["args"]["id"] == pid
        return receipt

    def is_member(self, address: str) -> bool:
        return bool(self.c["Membership"].functions.isMember(address).call())

    def add(self, agency: Agency) -> Any:
        inner = self.c["Membership"].encode_abi("addAgency", [agency.name, "member", [agency.account.address],
                                                              agency.cert])
        pid = self.propose(bytes.fromhex(inner[2:]), f"add {agency.name}", self.founder)
        self.vote_all(pid)
        return self.execute(pid, self.founder)

    def vote_all(self, pid: int, skip: tuple[Any, ...] = ()) -> None:
        """Yes votes of every agency of this module that is a member now (whatever other tests added or
        revoked), so that the threshold in force is met: the founder is the only other agency."""
        for acct in self.controlled:
            if acct not in skip and self.is_member(acct.address):
                self.vote(pid, acct)

    def required_votes(self) -> tuple[int, int]:
        required, members = self.c["Governance"].functions.requiredVotes().call()
        assert required == max(1, math.ceil(members * 2 / 3))  # the devnet's threshold is 2/3 of agencies
        return int(required), int(members)


@pytest.fixture(scope="module")
def gov(devnet: Devnet) -> Gov:
    return Gov(devnet)


@pytest.fixture(scope="module")
def new_agency(gov: Gov, tmp_path_factory: pytest.TempPathFactory) -> Agency:
    agency = issue_agency(gov.net.dir / "ca", NEW, tmp_path_factory.mktemp("new-agency") / NEW)
    gov.controlled.append(agency.account)
    return agency


def anchor_as(net: Devnet, acct: Any) -> dict[str, Any]:
    raw = sign_call(acct.key, net.chain_id, net.nonce(acct.address, "pending"), net.contract_address("Notary"),
                    anchor_data(os.urandom(32)))
    return net.wait_receipt(net.send_raw(raw))


def test_new_agency_is_refused_until_governance_adds_it(devnet: Devnet, gov: Gov, new_agency: Agency) -> None:
    acct = new_agency.account
    assert gov.is_member(acct.address) is False
    with pytest.raises(RpcError) as refused:
        anchor_as(devnet, acct)
    assert refused.value.code == -32003 and "not an account of a member agency" in refused.value.message
    with pytest.raises(Web3RPCError, match="not an account of a member agency"):
        gov.transact(gov.c["Notary"].functions.anchor(os.urandom(32)), acct, gas=100_000)
    _, members = gov.required_votes()  # 1 agency alone: threshold 1

    receipt = gov.add(new_agency)
    (added,) = gov.c["Membership"].events.AgencyAdded().process_receipt(receipt, errors=DISCARD)
    assert added["args"]["name"] == NEW and added["args"]["accounts"] == [acct.address]

    assert gov.is_member(acct.address) is True
    assert gov.c["Membership"].functions.agencyOf(acct.address).call() == NEW
    name, role, accounts, cert, active = gov.c["Membership"].functions.getAgency(NEW).call()
    assert (name, role, accounts, cert, active) == (NEW, "member", [acct.address], new_agency.cert, True)
    rest = devnet.get(f"/agencies/{NEW}").json()
    assert rest["active"] is True and rest["added_height"] == receipt["blockNumber"]
    assert anchor_as(devnet, acct)["status"] == "0x1"
    assert gov.required_votes()[1] == members + 1


def test_revoke_needs_the_new_threshold_and_removes_the_agency(devnet: Devnet, gov: Gov, tmp_path: Path) -> None:
    agency = issue_agency(devnet.dir / "ca", REVOKED, tmp_path / REVOKED)
    gov.controlled.append(agency.account)
    gov.add(agency)
    acct = agency.account
    assert gov.is_member(acct.address) and anchor_as(devnet, acct)["status"] == "0x1"
    inner = gov.c["Membership"].encode_abi("revokeAgency", [REVOKED])
    pid = gov.propose(bytes.fromhex(inner[2:]), f"revoke {REVOKED}", gov.founder)
    gov.vote(pid, gov.founder)
    required, members = gov.required_votes()
    assert members >= 2 and required >= 2  # with the founder and the new agency: ceil(2 * 2/3) = 2
    with pytest.raises(ContractLogicError, match=rf"proposal {pid} has 1 yes votes\b.*needs {required}"):
        gov.c["Governance"].functions.execute(pid).call({"from": gov.founder.address})
    failed = gov.transact(gov.c["Governance"].functions.execute(pid), gov.founder, gas=500_000)
    assert failed["status"] == 0
    assert gov.is_member(acct.address) is True

    gov.vote_all(pid, skip=(gov.founder,))  # the agency itself votes for its removal
    # A transaction of the agency that waits for a nonce gap when the revocation lands.
    waiting = sign_call(acct.key, devnet.chain_id, devnet.nonce(acct.address, "pending") + 1,
                        devnet.contract_address("Notary"), anchor_data(os.urandom(32)))
    waiting_hash = devnet.send_raw(waiting)
    assert devnet.rpc("eth_getTransactionByHash", waiting_hash)["blockNumber"] is None
    receipt = gov.execute(pid, gov.founder)
    (revoked,) = gov.c["Membership"].events.AgencyRevoked().process_receipt(receipt, errors=DISCARD)
    assert revoked["args"]["name"] == REVOKED
    assert gov.is_member(acct.address) is False
    assert devnet.get(f"/agencies/{REVOKED}").json()["active"] is False
    devnet.wait_for_head(receipt["blockNumber"] + 2)
    assert devnet.rpc("eth_getTransactionByHash", waiting_hash) is None  # dropped from the mempool
    with pytest.raises(RpcError) as refused:
        anchor_as(devnet, acct)
    assert refused.value.code == -32003 and "not an account of a member agency" in refused.value.message
    assert anchor_as(devnet, gov.founder)["status"] == "0x1"  # the founder is unaffected
    with pytest.raises(ContractLogicError, match="already executed"):
        gov.c["Governance"].functions.execute(pid).call({"from": gov.founder.address})


def test_membership_cannot_be_changed_without_governance(gov: Gov, tmp_path: Path) -> None:
    other = issue_agency(gov.net.dir / "ca", "agency-direct", tmp_path / "direct")
    fn = gov.c["Membership"].functions.addAgency(other.name, "member", [other.account.address], other.cert)
    with pytest.raises(ContractLogicError, match="only Governance may change membership"):
        fn.call({"from": gov.founder.address})
    receipt = gov.transact(fn, gov.founder, gas=500_000)
    assert receipt["status"] == 0
    assert gov.is_member(other.account.address) is False


def test_certificate_of_another_ca_is_refused_at_execution(gov: Gov, tmp_path: Path) -> None:
    ca = run_cli("ca", "init", "--dir", tmp_path / "rogue-ca", "--dev", "--json")
    assert ca.returncode == 0, ca.stderr
    rogue = issue_agency(tmp_path / "rogue-ca", "agency-rogue", tmp_path / "rogue")
    inner = gov.c["Membership"].encode_abi("addAgency", [rogue.name, "member", [rogue.account.address], rogue.cert])
    founder = gov.founder
    pid = gov.propose(bytes.fromhex(inner[2:]), "add a rogue agency", founder)
    gov.vote_all(pid)
    with pytest.raises(ContractLogicError, match="certificate refused"):
        gov.c["Governance"].functions.execute(pid).call({"from": founder.address})
    assert gov.transact(gov.c["Governance"].functions.execute(pid), founder, gas=2_000_000)["status"] == 0
    assert gov.is_member(rogue.account.address) is False



def test_chain_with_membership_changes_verifies_from_genesis(devnet: Devnet, gov: Gov, tmp_path: Path) -> None:
    agency = issue_agency(devnet.dir / "ca", "agency-audited", tmp_path / "audited")
    gov.controlled.append(agency.account)
    inner = gov.c["Membership"].encode_abi("addAgency", [agency.name, "member", [agency.account.address],
                                                         agency.cert])
    pid = gov.propose(bytes.fromhex(inner[2:]), "add an audited agency", gov.founder)
    gov.vote_all(pid)
    gov.execute(pid, gov.founder)
    assert anchor_as(devnet, agency.account)["status"] == "0x1"
    # An auditor re-executes every block, certificate checks of Membership included.
    proc = run_cli("chain", "verify", "--node", devnet.rpc_url, "--json", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
