"""JointCompute driven as transactions do (signed EIP-1559 transactions in built blocks, calls
encoded and logs decoded with web3 from the ABIs in contracts/): jobs authorised per dataset by its
Cedar policy (``compute_joint``), input commitments, results confirmed by every participant, the
budget charged on every dataset, aborts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from chainkit import Account, Ledger, account, make_genesis, revert_reason, validator
from hexbytes import HexBytes
from web3 import Web3

from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS
from chainshare.execution.contracts.addresses import JOINT_COMPUTE
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Receipt

ROOT = Path(__file__).resolve().parents[2]
W3 = Web3()


def contract(name: str) -> Any:
    artifact = json.loads((ROOT / "contracts" / f"{name}.json").read_text())
    return W3.eth.contract(address=artifact["address"], abi=artifact["abi"])


DS, AC, JC = contract("Datasets"), contract("AccessControl"), contract("JointCompute")
OWNERS = ("Agency A", "Agency B", "Agency C")
REQUESTER = "Statistics Office"
SCHEMA = json.dumps({"columns": [{"name": "district", "kind": "string"}, {"name": "income", "kind": "integer"}],
                     "min_group": 5})
JOINT_OK = f'permit (principal == Agency::"{REQUESTER}", action == Action::"compute_joint", resource);'
COMPUTE_ONLY = f'permit (principal == Agency::"{REQUESTER}", action == Action::"compute", resource);'
QH, RH = b"\x51" * 32, b"\x52" * 32
EPS = 500_000


@pytest.fixture
def ledger() -> Ledger:
    names = (*OWNERS, REQUESTER)
    return Ledger(make_genesis([(n, [account(n).address]) for n in names], [validator("v1", OWNERS[0])]))


def encode(c: Any, fn: str, *args: Any) -> bytes:
    return bytes(HexBytes(c.encode_abi(fn, args=list(args))))


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    return receipt


def reverted(receipt: Receipt) -> str:
    assert receipt.status == STATUS_FAILURE, "expected a revert"
    return revert_reason(receipt.output)


def events(receipt: Receipt) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for lg in receipt.logs:
        c = {DATASETS: DS, ACCESS_CONTROL: AC, JOINT_COMPUTE: JC}[lg.address]
        entry = {"address": Web3.to_checksum_address(lg.address), "topics": [HexBytes(t) for t in lg.topics],
                 "data": HexBytes(lg.data), "blockHash": HexBytes(bytes(32)), "blockNumber": 1,
                 "transactionHash": HexBytes(bytes(32)), "transactionIndex": 0, "logIndex": 0, "removed": False}
        for item in c.abi:
            if item["type"] == "event" and W3.keccak(
                    text=f"{item['name']}({','.join(i['type'] for i in item['inputs'])})") == lg.topics[0]:
                out.append((item["name"], dict(c.events[item["name"]]().process_log(entry)["args"])))
    return out


def view(ledger: Ledger, c: Any, fn: str, *args: Any) -> tuple[Any, ...]:
    success, out = ledger.view(bytes(HexBytes(c.address)), encode(c, fn, *args))
    assert success, revert_reason(out)
    types = [o["type"] for o in next(x for x in c.abi if x.get("name") == fn)["outputs"]]
    return tuple(eth_abi.decode(types, out))


def who(name: str) -> Account:
    return account(name)


def setup_grants(ledger: Ledger, policies: tuple[str, ...] = (JOINT_OK,) * 3) -> list[int]:
    grants = []
    for i, (owner, policy) in enumerate(zip(OWNERS, policies, strict=True)):
        ok(ledger.send(who(owner), DATASETS, encode(DS, "register", f"Incomes {owner}", bytes([i + 1]) * 32, SCHEMA,
                                                     1000, policy), gas=3_000_000))
        receipt = ok(ledger.send(who(REQUESTER), ACCESS_CONTROL,
                                 encode(AC, "request", i + 1, "compute_joint", "joint statistics", 0), gas=3_000_000))
        _, allowed, grant_id = eth_abi.decode(["uint256", "bool", "uint256"], receipt.output)
        grants.append(grant_id if allowed else 0)
    return grants


def create(ledger: Ledger, grants: list[int], eps: int = EPS) -> Receipt:
    return ledger.send(who(REQUESTER), JOINT_COMPUTE, encode(JC, "createJob", grants, QH, eps), gas=3_000_000)


def spent(ledger: Ledger, grant_id: int) -> int:
    return int(view(ledger, AC, "getComputeAllowance", grant_id)[1])


def test_a_job_runs_commit_then_confirm_and_charges_every_dataset(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    receipt = ok(create(ledger, grants))
    (name, args), = events(receipt)
    assert name == "JointJobCreated" and args["participants"] == list(OWNERS) and args["datasetIds"] == [1, 2, 3]
    assert args["queryHash"] == QH and args["epsilonMicro"] == EPS
    job = 1
    assert "commit" in reverted(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "confirmResult", job,
                                                                                   "released", RH)))
    assert "participants" in reverted(ledger.send(who(REQUESTER), JOINT_COMPUTE,
                                                  encode(JC, "commitInput", job, b"\x01" * 32)))
    assert "zero" in reverted(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "commitInput", job, bytes(32))))
    ok(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "commitInput", job, bytes([7]) * 32)))
    assert "already" in reverted(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "commitInput", job,
                                                                                    b"\x09" * 32)))
    for i, owner in enumerate(OWNERS[1:], start=1):
        r = ok(ledger.send(who(owner), JOINT_COMPUTE, encode(JC, "commitInput", job, bytes([i + 7]) * 32)))
        assert events(r)[0][1]["commitment"] == bytes([i + 7]) * 32
    assert "is running" in reverted(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "commitInput", job,
                                                                                       b"\x09" * 32)))
    status = view(ledger, JC, "getJob", job)
    assert status[6] == "running" and list(status[7]) == [bytes([i + 7]) * 32 for i in range(3)]
    for owner in OWNERS[:2]:
        ok(ledger.send(who(owner), JOINT_COMPUTE, encode(JC, "confirmResult", job, "released", RH)))
    assert [spent(ledger, g) for g in grants] == [0, 0, 0]  # nothing charged before every participant signed
    last = ok(ledger.send(who(OWNERS[2]), JOINT_COMPUTE, encode(JC, "confirmResult", job, "released", RH),
                          gas=3_000_000))
    names = [n for n, _ in events(last)]
    assert names == ["JointResultConfirmed", "ComputationRecorded", "ComputationRecorded", "ComputationRecorded",
                     "JointResultRecorded"]
    assert events(last)[-1][1]["resultHash"] == RH and events(last)[-1][1]["participants"] == list(OWNERS)
    assert [spent(ledger, g) for g in grants] == [EPS] * 3
    assert view(ledger, JC, "getJob", job)[6] == "completed"
    assert view(ledger, JC, "getJob", job)[9:] == ("released", RH)


def test_a_dataset_whose_policy_does_not_allow_it_blocks_the_job(ledger: Ledger) -> None:
    grants = setup_grants(ledger, (JOINT_OK, JOINT_OK, COMPUTE_ONLY))
    assert grants[2] == 0  # Cedar denied compute_joint on dataset 3 (its policy permits compute only)
    assert "grant 0" in reverted(create(ledger, grants))
    compute = ok(ledger.send(who(REQUESTER), ACCESS_CONTROL, encode(AC, "request", 3, "compute", "x", 0),
                             gas=3_000_000))
    (_, allowed, compute_grant) = eth_abi.decode(["uint256", "bool", "uint256"], compute.output)
    assert allowed
    assert "compute_joint" in reverted(create(ledger, [grants[0], grants[1], compute_grant]))
    assert view(ledger, JC, "jobCount")[0] == 0


def test_only_the_grantee_may_use_its_grants_and_budget_is_checked_up_front(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    stolen = ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "createJob", grants, QH, EPS), gas=3_000_000)
    assert "not 'Agency A'" in reverted(stolen)
    assert "budget" in reverted(create(ledger, grants, eps=11_000_000))
    assert "appears twice" in reverted(create(ledger, [grants[0], grants[0]]))


def test_a_participant_that_drops_out_aborts_the_job_with_an_on_chain_record(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    ok(create(ledger, grants))
    for owner in OWNERS:
        ok(ledger.send(who(owner), JOINT_COMPUTE, encode(JC, "commitInput", 1, b"\x01" * 32)))
    ok(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "confirmResult", 1, "released", RH)))
    r = ok(ledger.send(who(OWNERS[1]), JOINT_COMPUTE, encode(JC, "abortJob", 1, "dropout: Agency C sent no share")))
    assert events(r) == [("JointJobAborted", {"jobId": 1, "by": OWNERS[1], "reason": "dropout: Agency C sent no share"})]
    assert view(ledger, JC, "getJob", 1)[6] == "aborted"
    assert "aborted" in reverted(ledger.send(who(OWNERS[2]), JOINT_COMPUTE, encode(JC, "confirmResult", 1,
                                                                                   "released", RH)))
    assert [spent(ledger, g) for g in grants] == [0, 0, 0]


def test_participants_confirming_different_results_abort_the_job(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    ok(create(ledger, grants))
    for owner in OWNERS:
        ok(ledger.send(who(owner), JOINT_COMPUTE, encode(JC, "commitInput", 1, b"\x01" * 32)))
    ok(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "confirmResult", 1, "released", RH)))
    r = ok(ledger.send(who(OWNERS[1]), JOINT_COMPUTE, encode(JC, "confirmResult", 1, "min_group", bytes(32))))
    assert [n for n, _ in events(r)] == ["JointResultConfirmed", "JointJobAborted"]
    assert view(ledger, JC, "getJob", 1)[8] == "inconsistent"


def test_only_joint_compute_charges_a_joint_computation(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    data = encode(AC, "chargeJointComputation", grants[0], QH, RH, EPS)
    assert "only JointCompute" in reverted(ledger.send(who(REQUESTER), ACCESS_CONTROL, data))
    assert "only JointCompute" in reverted(ledger.send(who(OWNERS[0]), ACCESS_CONTROL, data))


def create_with_deadline(ledger: Ledger, grants: list[int], ttl: int, **kw: Any) -> Receipt:
    return ledger.send(who(REQUESTER), JOINT_COMPUTE, encode(JC, "createJobWithDeadline", grants, QH, EPS, ttl),
                       gas=3_000_000, **kw)


def test_a_job_past_its_block_time_deadline_refuses_late_steps_and_anyone_involved_records_the_expiry(
        ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    assert "ttlSeconds" in reverted(create_with_deadline(ledger, grants, 0))
    assert "ttlSeconds" in reverted(create_with_deadline(ledger, grants, 8 * 24 * 3600))
    receipt = ok(create_with_deadline(ledger, grants, 30))
    created_s = ledger.parent_header.timestamp_ms // 1000
    assert [n for n, _ in events(receipt)] == ["JointJobCreated", "JointJobDeadline"]
    expires_at = events(receipt)[1][1]["expiresAt"]
    assert expires_at == created_s + 30 and view(ledger, JC, "getJobDeadline", 1) == (expires_at,)
    at = expires_at * 1000
    ok(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "commitInput", 1, b"\x01" * 32),
                   timestamp_ms=at - 1000))
    early = ledger.send(who(OWNERS[1]), JOINT_COMPUTE, encode(JC, "expireJob", 1), timestamp_ms=at - 500)
    assert f"expires at block time {expires_at}" in reverted(early)
    late = reverted(ledger.send(who(OWNERS[1]), JOINT_COMPUTE, encode(JC, "commitInput", 1, b"\x02" * 32),
                                timestamp_ms=at))
    assert late == (f"joint job 1 expired at block time {expires_at} (this block: {expires_at}): a late commitment "
                    "is refused; record the expiry with expireJob")
    assert "an abort is refused" in reverted(ledger.send(who(OWNERS[1]), JOINT_COMPUTE,
                                                         encode(JC, "abortJob", 1, "dropout"), timestamp_ms=at))
    r = ok(ledger.send(who(REQUESTER), JOINT_COMPUTE, encode(JC, "expireJob", 1), timestamp_ms=at + 1000))
    assert events(r) == [("JointJobExpired", {"jobId": 1, "by": REQUESTER, "expiresAt": expires_at})]
    job = view(ledger, JC, "getJob", 1)
    assert job[6] == "expired" and job[8] == f"expired at block time {expires_at}"
    assert "already expired" in reverted(ledger.send(who(OWNERS[2]), JOINT_COMPUTE, encode(JC, "expireJob", 1)))
    assert "is expired" in reverted(ledger.send(who(OWNERS[2]), JOINT_COMPUTE,
                                                encode(JC, "confirmResult", 1, "released", RH)))
    assert [spent(ledger, g) for g in grants] == [0, 0, 0]


def test_a_late_confirmation_is_refused_and_jobs_without_a_deadline_cannot_expire(ledger: Ledger) -> None:
    grants = setup_grants(ledger)
    ok(create(ledger, grants))  # job 1: no deadline
    assert view(ledger, JC, "getJobDeadline", 1) == (0,)
    assert "no deadline" in reverted(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "expireJob", 1),
                                                 timestamp_ms=ledger.parent_header.timestamp_ms + 10**9))
    ok(create_with_deadline(ledger, grants, 60))  # job 2
    expires_at = view(ledger, JC, "getJobDeadline", 2)[0]
    for owner in OWNERS:
        ok(ledger.send(who(owner), JOINT_COMPUTE, encode(JC, "commitInput", 2, b"\x01" * 32)))
    ok(ledger.send(who(OWNERS[0]), JOINT_COMPUTE, encode(JC, "confirmResult", 2, "released", RH)))
    late = reverted(ledger.send(who(OWNERS[1]), JOINT_COMPUTE, encode(JC, "confirmResult", 2, "released", RH),
                                timestamp_ms=expires_at * 1000 + 2000))
    assert late.startswith(f"joint job 2 expired at block time {expires_at}") and "late confirmation" in late
    assert [spent(ledger, g) for g in grants] == [0, 0, 0]
