"""Secure aggregation across agencies on a real 5-validator devnet (issue 15, first half):
``chainshare node run`` processes on 127.0.0.1, one agency per node. agency1, agency3 and agency4 each
own a dataset of people; agency2 asks for the joint count / sum / mean with ``chainshare joint
query`` through its own node; then all five agencies, agency2 (the requester) among the owners. The owners' nodes exchange only Shamir shares over their mutual-TLS
P2P sessions; the job, the input commitments, the result hash and every participant's confirmation
are on chain; the epsilon is charged on every dataset.

- the released result is the plaintext computation plus the DP noise the owners added inside (the
  exactness of the protocol without noise: tests/unit/test_joint_aggregate.py);
- no node's log, and no output, carries a row or an owner's subtotal;
- a dataset whose policy does not permit ``compute_joint`` blocks the job (no grant, no job);
- an owner node that is down aborts the job cleanly, with a ``JointJobAborted`` record on chain;
- a participant's node process, recorded inside its TLS sessions (tests/integration/p2pcapture),
  exchanges only shares: no row, no subtotal in any encoding;
- an auditor checks each owner's input commitment against the registered dataset version (binding
  opening) and, with the owner's full opening, its exact local vector;
- a job past its block-time deadline refuses late steps, and an owner records its expiry;
- the explorer lists and shows joint jobs with every step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import DevnetPool, run_cli, wait_agencies_synced, wait_until
from test_sharing_network import Consortium, cli

from chainshare.execution.contracts.joint import JointCompute

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("joint-network")]

NODES = 5
OWNERS = ("agency1", "agency3", "agency4")
ALL = ("agency1", "agency2", "agency3", "agency4", "agency5")
REQUESTER = "agency2"
JOINT_POLICY = f'permit (principal == Agency::"{REQUESTER}", action == Action::"compute_joint", resource);\n'
COMPUTE_ONLY = f'permit (principal == Agency::"{REQUESTER}", action == Action::"compute", resource);\n'
SCHEMA = {"columns": [{"name": "name", "kind": "personal"}, {"name": "district", "kind": "string"},
                      {"name": "income", "kind": "integer"}], "min_group": 5}
SIZES = {"agency1": 41, "agency2": 29, "agency3": 57, "agency4": 33, "agency5": 38}


def people(owner: str) -> list[dict[str, Any]]:
    k = ALL.index(owner)
    return [{"name": f"Perpetua Oakhollow-{k}-{i:02d}", "district": ("north", "south")[i % 2],
             "income": 30_011 + 997 * i + 13 * k} for i in range(SIZES[owner])]


SECRETS = ["Oakhollow"] + [str(r["income"]) for o in ALL for r in people(o)]
QUERY = {"select": [{"fn": "count"}, {"fn": "sum", "column": "income", "bounds": [0, 100_000]},
                    {"fn": "avg", "column": "income", "bounds": [0, 100_000]}], "epsilon": 10}


def _publish(net: Consortium, base: Path, owner: str, policy: str, tag: str) -> int:
    path = base / f"{owner}-{tag}.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["name", "district", "income"])
        writer.writeheader()
        writer.writerows(people(owner))
    (base / f"{tag}.cedar").write_text(policy)
    (base / "schema.json").write_text(json.dumps(SCHEMA))
    out = cli(net, owner, "dataset", "publish", path, "--title", f"People {owner} {tag}", "--policy",
              base / f"{tag}.cedar", "--schema", base / "schema.json")
    return int(out["dataset_id"])


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Consortium:
    return Consortium(devnet_pool.start("joint", NODES, timeout=90))


@pytest.fixture(scope="module")
def datasets(net: Consortium, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    base = tmp_path_factory.mktemp("joint")
    ids = {owner: _publish(net, base, owner, JOINT_POLICY, "joint") for owner in ALL}
    ids["compute_only"] = _publish(net, base, "agency4", COMPUTE_ONLY, "compute-only")
    for owner in ALL:  # room for three epsilon-10 joint queries (the default budget is 10)
        cli(net, owner, "access", "limits", ids[owner], "--budget", 40, "--queries-per-hour", 30)
    for owner in ALL:
        granted = cli(net, REQUESTER, "access", "request", ids[owner], "--action", "compute_joint", "--purpose",
                      "joint statistics")
        assert granted["allowed"] is True, granted
    return ids


def leaked_secrets(proc: subprocess.CompletedProcess[str], out: dict[str, Any]) -> list[str]:
    """SECRETS in the CLI's output, leaving out the released (noisy, public) numbers and the 0x-hex
    hashes: a noisy mean of about 51,000 may equal a row's income, and hex holds decimal runs."""
    text = re.sub(r"0x[0-9a-fA-F]+", "", proc.stdout + proc.stderr)
    for value in sorted({str(v) for row in out["result"]["groups"] for v in row}, key=len, reverse=True):
        text = text.replace(value, "")
    return [s for s in SECRETS if s in text]


def joint_query(net: Consortium, ids: list[int], tmp_path: Path) -> Any:
    (tmp_path / "q.json").write_text(json.dumps(QUERY))
    return run_cli("joint", "query", "--datasets", ",".join(map(str, ids)), "--query", tmp_path / "q.json",
                   "--devnet", net.dir, "--as", REQUESTER, "--json")


def job(net: Consortium, job_id: int, node: str = "node1") -> dict[str, Any]:
    response = httpx.get(f"{net.api(node)}/joint/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_joint_count_sum_mean_over_three_agencies(net: Consortium, datasets: dict[str, int],
                                                  tmp_path: Path) -> None:
    offsets = {f"node{i}": net.log_offset(f"node{i}") for i in range(1, NODES + 1)}
    proc = joint_query(net, [datasets[o] for o in OWNERS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rows = [r for o in OWNERS for r in people(o)]
    count, total = len(rows), sum(r["income"] for r in rows)
    (noisy_count, noisy_sum, noisy_mean), = out["result"]["groups"]
    # epsilon 10 over 3 measurements, 3 owners' draws: the count's noise has scale 0.3 per draw and the
    # sum's 30,000; 15 scales is a bound broken with probability far below 1e-6.
    assert abs(noisy_count - count) <= 5
    assert abs(noisy_sum - total) <= 15 * 30_000 * 3
    assert abs(noisy_mean - total / count) <= 0.2 * total / count
    assert out["participants"] == list(OWNERS)
    record = job(net, out["job_id"], "node3")
    assert record["status"] == "completed" and record["requester"] == REQUESTER
    assert record["datasets"] == [datasets[o] for o in OWNERS] and record["epsilon"] == 10
    assert record["outcome"] == "released" and record["result_hash"] == out["result_hash"]
    for bad, status in (("0", 400), (str(2**300), 400), ("x", 400), ("999999", 404)):
        response = httpx.get(f"{net.api('node2')}/joint/jobs/{bad}", timeout=10)
        assert response.status_code == status, (bad, response.status_code, response.text)
    for owner in OWNERS:  # the epsilon is charged on every dataset, under the joint grant
        audit = httpx.get(f"{net.api('node1')}/datasets/{datasets[owner]}/audit", timeout=10).json()["items"]
        computed = [e for e in audit if e["event"] == "ComputationRecorded"]
        assert computed and computed[-1]["args"]["resultHash"] == out["result_hash"], computed
    for name, since in offsets.items():  # no row, name or income in any node's log
        text = net.log_text(name, since)
        assert not [s for s in SECRETS if s in text], name
    assert not leaked_secrets(proc, out)


def test_five_agencies_with_the_requester_among_the_owners(net: Consortium, datasets: dict[str, int],
                                                          tmp_path: Path) -> None:
    proc = joint_query(net, [datasets[o] for o in ALL], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rows = [r for o in ALL for r in people(o)]
    (noisy_count, noisy_sum, _), = out["result"]["groups"]
    assert abs(noisy_count - len(rows)) <= 8  # 5 draws of scale 0.3
    assert abs(noisy_sum - sum(r["income"] for r in rows)) <= 15 * 30_000 * 5
    assert out["participants"] == list(ALL)
    assert job(net, out["job_id"], "node5")["status"] == "completed"
    assert not leaked_secrets(proc, out)


def test_a_dataset_whose_policy_does_not_allow_joint_computation_blocks_the_job(
        net: Consortium, datasets: dict[str, int], tmp_path: Path) -> None:
    denied = cli(net, REQUESTER, "access", "request", datasets["compute_only"], "--action", "compute_joint",
                 "--purpose", "joint statistics", code=1)  # a denied request exits 1, its decision on chain
    assert denied["allowed"] is False
    proc = joint_query(net, [datasets["agency1"], datasets["agency3"], datasets["compute_only"]], tmp_path)
    assert proc.returncode != 0
    assert "compute_joint" in proc.stderr and f"dataset {datasets['compute_only']}" in proc.stderr, proc.stderr


def test_an_owner_node_that_is_down_aborts_the_job_with_an_on_chain_record(
        net: Consortium, datasets: dict[str, int], tmp_path: Path) -> None:
    net.stop_node("node4")
    try:
        proc = joint_query(net, [datasets[o] for o in OWNERS], tmp_path)
        assert proc.returncode != 0
        assert "aborted" in proc.stderr and "agency4" in proc.stderr, proc.stderr
        latest = max(int(j) for j in _job_ids(net))
        record = job(net, latest)
        assert record["status"] == "aborted" and "dropout" in record["reason"] and "agency4" in record["reason"]
    finally:
        net.restart()


def test_an_owner_that_drops_out_mid_run_aborts_the_job_cleanly(net: Consortium, datasets: dict[str, int],
                                                                tmp_path: Path) -> None:
    """agency4's node is killed (SIGKILL) right after its input commitment is final: the job is aborted on
    chain naming the drop-out, nothing is released, and no owner confirms a result."""
    since = net.log_offset("node4")
    (tmp_path / "q.json").write_text(json.dumps(QUERY))
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "chainshare"), "joint", "query", "--datasets",
         ",".join(str(datasets[o]) for o in OWNERS), "--query", str(tmp_path / "q.json"), "--devnet", str(net.dir),
         "--as", REQUESTER, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        committed = net.wait_log(since, "agency4's commitment", timeout=120, name="node4", msg="joint input committed")
        os.kill(int(net.node("node4")["pid"]), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0 and stdout == "", stdout
        assert "aborted" in stderr, stderr
        record = job(net, int(committed["job"]))
        assert record["status"] == "aborted" and "agency4" in record["reason"], record
        def events_of(event: Any) -> list[Any]:
            params = {"topic0": "0x" + event.topic.hex(), "topic1": "0x" + record["job_id"].to_bytes(32, "big").hex()}
            return list(httpx.get(f"{net.api('node1')}/events", params=params, timeout=10).json()["items"])

        assert len(events_of(JointCompute.E_ABORTED)) == 1
        assert events_of(JointCompute.E_CONFIRMED) == [] and events_of(JointCompute.E_RECORDED) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        net.restart()


def _job_ids(net: Consortium) -> list[int]:
    ids = []
    for i in range(1, 50):
        if httpx.get(f"{net.api('node1')}/joint/jobs/{i}", timeout=10).status_code != 200:
            break
        ids.append(i)
    return ids


# --------------------------------------------------------------------------- a participant's captured view,
# commitment openings, expiry, and the explorer's job pages

CAPTURE_OWNERS = ("agency1", "agency3", "agency4")
CAPTURED = "node3"  # agency3's node: its P2P plaintext (inside TLS) is recorded by tests/integration/p2pcapture
CAPTURE_DIR = Path(__file__).resolve().parent / "p2pcapture"
CAPTURE_SIZES = {"agency1": 1201, "agency3": 1307, "agency4": 1409}  # the count subtotals, over 2**10
BOUND = 4_000_000_000
CAPTURE_QUERY = {"select": [{"fn": "sum", "column": "income", "bounds": [0, BOUND]}], "epsilon": 10}


def big_earners(owner: str) -> list[dict[str, Any]]:
    """Rows whose incomes (and so every owner's income subtotal, over 2**32) are numbers no other traffic holds."""
    k = CAPTURE_OWNERS.index(owner) + 1
    return [{"name": f"Quillon Marchbanks-{k}-{i:04d}", "district": ("north", "south")[i % 2],
             "income": 1_234_000_000 + 7_777_777 * k + 104_729 * i} for i in range(CAPTURE_SIZES[owner])]


def _encodings(value: int) -> dict[str, bytes]:
    """``value`` as each party could carry it: decimal text, int64 and uint32 (both byte orders),
    msgpack (chainshare.codec), LEB128 varint, and a GF(2^127-1) field element (a share's width)."""
    from chainshare import codec
    from chainshare.privacy.aggregate import MODULUS, SHARE_BYTES

    varint, rest = bytearray(), value
    while True:
        byte, rest = rest & 0x7F, rest >> 7
        varint.append(byte | (0x80 if rest else 0))
        if not rest:
            break
    out = {"decimal": str(value).encode(), "int64-be": value.to_bytes(8, "big", signed=True),
           "int64-le": value.to_bytes(8, "little", signed=True), "msgpack": codec.encode(value),
           "varint": bytes(varint), "field": (value % MODULUS).to_bytes(SHARE_BYTES, "big")}
    if 2**24 <= value < 2**32:  # a smaller value's uint32 is also a frame's 4-byte length prefix by chance
        out.update({"uint32-be": value.to_bytes(4, "big"), "uint32-le": value.to_bytes(4, "little")})
    return out


def _tls_streams(path: Path) -> dict[tuple[bytes, int], bytes]:
    """The capture file as one byte stream per (direction, TLS session)."""
    data, streams, i = path.read_bytes(), defaultdict_bytes(), 0
    while i < len(data):
        direction, session, size = data[i:i + 1], int.from_bytes(data[i + 1:i + 5], "big"), \
            int.from_bytes(data[i + 5:i + 9], "big")
        streams[(direction, session)] += data[i + 9:i + 9 + size]
        i += 9 + size
    return dict(streams)


def _poisson_bound(mean: float, tail: float) -> int:
    """The least k with P(X > k) < ``tail`` for X ~ Poisson(``mean``)."""
    k, term = 0, math.exp(-mean)
    cumulative = term
    while 1 - cumulative >= tail:
        k += 1
        term *= mean / k
        cumulative += term
    return k


def defaultdict_bytes() -> Any:
    from collections import defaultdict
    return defaultdict(bytes)


def _frames(stream: bytes) -> list[tuple[str, Any]]:
    """The P2P frames (length-prefixed msgpack ``[msg_type, body]``) of one captured stream."""
    from chainshare.p2p.framing import HEADER_SIZE, decode_payload

    out, i = [], 0
    while i + HEADER_SIZE <= len(stream):
        size = int.from_bytes(stream[i:i + HEADER_SIZE], "big")
        payload = stream[i + HEADER_SIZE:i + HEADER_SIZE + size]
        if len(payload) < size:
            break
        out.append(decode_payload(payload))
        i += HEADER_SIZE + size
    return out


def _exact_vectors() -> dict[str, list[int]]:
    """Each owner's exact local vector for CAPTURE_QUERY, computed here as the owner's node does."""
    from chainshare.privacy.aggregate import compute_local_vector, parse_joint_query
    from chainshare.sharing.schema import validate_schema

    schema = validate_schema(SCHEMA)
    jq = parse_joint_query(CAPTURE_QUERY, [schema] * len(CAPTURE_OWNERS))
    return {o: compute_local_vector(jq, iter(big_earners(o))) for o in CAPTURE_OWNERS}


@pytest.fixture(scope="module")
def capture_grants(net: Consortium, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    """(dataset id, compute_joint grant id of the requester) per capture owner."""
    base = tmp_path_factory.mktemp("capture")
    out = {}
    for owner in CAPTURE_OWNERS:
        path = base / f"{owner}.csv"
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["name", "district", "income"])
            writer.writeheader()
            writer.writerows(big_earners(owner))
        (base / "joint.cedar").write_text(JOINT_POLICY)
        (base / "schema.json").write_text(json.dumps(SCHEMA))
        ds = int(cli(net, owner, "dataset", "publish", path, "--title", f"Earners {owner}", "--policy",
                     base / "joint.cedar", "--schema", base / "schema.json")["dataset_id"])
        cli(net, owner, "access", "limits", ds, "--budget", 40, "--queries-per-hour", 30)
        granted = cli(net, REQUESTER, "access", "request", ds, "--action", "compute_joint", "--purpose", "audit")
        out[owner] = (ds, int(granted["grant_id"]))
    return out


@pytest.fixture(scope="module")
def captured_job(net: Consortium, capture_grants: dict[str, tuple[int, int]],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A joint job over the capture datasets run while agency3's node process records its TLS plaintext:
    the capture holds every session of that process from its start until the job's result is out."""
    base = tmp_path_factory.mktemp("captured")
    recording, capture = base / "node3.recording", base / "node3.tls"
    mp = pytest.MonkeyPatch()
    net.stop_node(CAPTURED)
    try:
        mp.setenv("PYTHONPATH", str(CAPTURE_DIR))
        mp.setenv("CHAINSHARE_TEST_TLS_CAPTURE", str(recording))
        net.restart()  # starts node3 only, under the capture
        mp.undo()
        (base / "q.json").write_text(json.dumps(CAPTURE_QUERY))
        proc = run_cli("joint", "query", "--datasets", ",".join(str(capture_grants[o][0]) for o in CAPTURE_OWNERS),
                       "--query", base / "q.json", "--devnet", net.dir, "--as", REQUESTER, "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
    finally:
        mp.undo()
        # The recording so far is the capture: node3 writes each record whole (open, append, close, under a
        # lock), so a rename cuts between records, and what it records from now on goes to a new file (node3
        # keeps running under the capture for the rest of the module: no second restart).
        if recording.exists():
            recording.replace(capture)
    return {"out": out, "capture": capture, "dir": base}


def test_a_participant_nodes_captured_traffic_holds_only_shares(captured_job: dict[str, Any]) -> None:
    """agency3's node process, recorded inside its mutual-TLS sessions for the whole job, exchanged
    joint.share frames of field elements only: no row, and no owner's exact subtotal (nor the exact
    total) in any encoding; while the released sum is right."""
    out, exact = captured_job["out"], _exact_vectors()
    total = sum(r["income"] for o in CAPTURE_OWNERS for r in big_earners(o))
    (noisy_sum,), = out["result"]["groups"]
    assert abs(noisy_sum - total) <= 15 * (BOUND / 10) * 3  # three owners' draws of scale BOUND/epsilon
    streams = _tls_streams(captured_job["capture"])
    frames = {key: _frames(stream) for key, stream in streams.items()}
    shares = {d: [body for (direction, _), fs in frames.items() if direction == d for t, body in fs
                  if t == "joint.share"] for d in (b"<", b">")}
    from chainshare.privacy.aggregate import SHARE_BYTES, InputShare, SumShare, decode_message

    me = CAPTURE_OWNERS.index("agency3") + 1
    for direction, bodies in shares.items():  # 2 input shares + 2 sum shares each way, all of this job
        messages = [decode_message(b) for b in bodies]
        assert len(messages) == 4 and {m.job_id for m in messages} == {out["job_id"]}, (direction, messages)
        assert sum(isinstance(m, InputShare) for m in messages) == 2
        assert sum(isinstance(m, SumShare) for m in messages) == 2
        assert all(len(m.shares) == SHARE_BYTES * len(exact["agency3"]) for m in messages)
        if direction == b">":
            assert {m.sender for m in messages} == {me}
    everything = b"".join(streams.values())
    assert b"joint.start" in everything  # the requester's request reached this process through the capture
    secrets: dict[str, int] = {f"{o} subtotal[{i}]": v for o in CAPTURE_OWNERS for i, v in enumerate(exact[o])}
    secrets.update({f"exact total[{i}]": sum(exact[o][i] for o in CAPTURE_OWNERS)
                    for i in range(len(exact["agency3"]))})
    secrets.update({f"{r['name']} income": r["income"] for o in CAPTURE_OWNERS for r in big_earners(o)})
    # A byte string under 4 bytes (the 2-byte varint of a row count) occurs by chance in megabytes of
    # binary traffic, so only the longer encodings are searched; decimal text only as a whole number;
    # a row count's uint32 is not searched (a P2P frame of that many bytes has it as its length prefix).
    # A 4-byte uint32 (a row's income) also occurs by chance in random share and signature bytes: one
    # pattern in N bytes about N / 2**32 times. Those few are tolerated up to a bound that chance exceeds
    # with probability under 1e-9; a leak of the rows would show hundreds. Every longer encoding: none.
    searched = [(name, kind, enc) for name, value in secrets.items() for kind, enc in _encodings(value).items()
                if kind == "decimal" or len(enc) >= 4]
    hits = [(name, kind, len(enc)) for name, kind, enc in searched
            if (re.search(rb"(?<![0-9])" + enc + rb"(?![0-9])", everything) if kind == "decimal"
                else enc in everything)]
    leaks = [(name, kind) for name, kind, width in hits if kind == "decimal" or width > 4]
    assert not leaks, leaks[:5]
    short = [(name, kind) for name, kind, width in hits if kind != "decimal" and width == 4]
    expected = sum(1 for _, kind, enc in searched if kind != "decimal" and len(enc) == 4) * len(everything) / 2**32
    assert len(short) <= _poisson_bound(expected, 1e-9), (len(short), expected, short[:5])
    assert b"Marchbanks" not in everything


def test_an_auditor_checks_each_owners_commitment_against_the_registered_dataset_version(
        net: Consortium, captured_job: dict[str, Any], capture_grants: dict[str, tuple[int, int]]) -> None:
    job_id, base = captured_job["out"]["job_id"], captured_job["dir"]
    exact = _exact_vectors()
    binding = cli(net, "agency1", "joint", "opening", job_id)  # the binding opening: no vector, anyone may have it
    assert "vector" not in binding and binding["dataset_id"] == capture_grants["agency1"][0]
    (base / "binding.json").write_text(json.dumps(binding))
    checked = cli(net, "agency5", "joint", "verify-opening", base / "binding.json")
    assert checked["valid"] is True and checked["participant"] == "agency1" and checked["dataset_version"] == 1
    full = cli(net, "agency3", "joint", "opening", job_id, "--full")
    assert full["vector"] == exact["agency3"]  # the auditor learns agency3's subtotal, not its rows
    (base / "full.json").write_text(json.dumps(full))
    checked = cli(net, "agency5", "joint", "verify-opening", base / "full.json")
    assert checked["valid"] is True and checked["full"] is True and checked["vector"] == exact["agency3"]
    for change, message in (({"vector": [full["vector"][0] + 1]}, "altered"),
                            ({"content_hash": "0x" + "11" * 32}, "does not match the on-chain commitment")):
        (base / "bad.json").write_text(json.dumps({**full, **change}))
        proc = run_cli("joint", "verify-opening", base / "bad.json", "--devnet", net.dir, "--as", "agency5")
        assert proc.returncode != 0 and message in proc.stderr, (change, proc.stderr)
    # only agency3's own accounts may have its node reveal the full opening
    from test_sharing_network import signed_headers

    from chainshare.cli.signing import new_request_stamp
    from chainshare.privacy.service import compute_joint_opening_message

    ts, nonce = new_request_stamp()
    message = compute_joint_opening_message(job_id, "node3", net.chain_id, ts, nonce)
    refused = httpx.post(f"{net.api('node3')}/joint/jobs/{job_id}/opening",
                         headers=signed_headers(net.key(REQUESTER), message, ts, nonce), timeout=10)
    assert refused.status_code in (401, 403) and "agency3" in refused.text, refused.text
    none = httpx.get(f"{net.api('node5')}/joint/jobs/{job_id}/opening", timeout=10)
    assert none.status_code == 404 and "no commitment opening" in none.text


@pytest.fixture(scope="module")
def expired_job(net: Consortium, capture_grants: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """A job created with a 10 s deadline (web3.py, as the requester) that only agency1 commits to."""
    from eth_account import Account
    from netkit import load_artifact
    from web3 import Web3
    from web3.exceptions import ContractLogicError

    w3 = Web3(Web3.HTTPProvider(net.rpc_url("node2"), request_kwargs={"timeout": 30}))
    art = load_artifact("JointCompute")
    contract = w3.eth.contract(address=art["address"], abi=art["abi"])

    def send(agency: str, call: Any) -> Any:
        acct = Account.from_key(net.key(agency))
        tx = call.build_transaction({"from": acct.address, "chainId": net.chain_id, "gas": 3_000_000,
                                     "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
                                     "maxFeePerGas": 0, "maxPriorityFeePerGas": 0})
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction), timeout=60, poll_latency=0.05)
        assert receipt["status"] == 1, receipt
        return receipt

    grants = [capture_grants[o][1] for o in CAPTURE_OWNERS]
    created = send(REQUESTER, contract.functions.createJobWithDeadline(grants, b"\x5a" * 32, 1_000_000, 10))
    (deadline,) = contract.events.JointJobDeadline().process_receipt(created)
    job_id, expires_at = int(deadline["args"]["jobId"]), int(deadline["args"]["expiresAt"])
    early = contract.functions.expireJob(job_id)
    with pytest.raises(ContractLogicError, match=f"expires at block time {expires_at}"):
        early.call({"from": Account.from_key(net.key("agency1")).address})
    send("agency1", contract.functions.commitInput(job_id, b"\x01" * 32))
    wait_until(lambda: w3.eth.get_block("latest")["timestamp"] > expires_at, 90, "block time past the deadline")
    late = contract.functions.commitInput(job_id, b"\x03" * 32)
    with pytest.raises(ContractLogicError) as refused:
        late.estimate_gas({"from": Account.from_key(net.key("agency3")).address})
    return {"job_id": job_id, "expires_at": expires_at, "late": str(refused.value)}


def test_a_job_past_its_deadline_refuses_late_steps_and_an_owner_records_its_expiry(
        net: Consortium, expired_job: dict[str, Any]) -> None:
    job_id, expires_at = expired_job["job_id"], expired_job["expires_at"]
    assert f"joint job {job_id} expired at block time {expires_at}" in expired_job["late"]
    assert "a late commitment is refused" in expired_job["late"]
    expired = cli(net, "agency4", "joint", "expire", job_id)
    assert expired["expired_by"] == "agency4" and expired["expires_at"] == expires_at
    wait_agencies_synced(net.info, "agency4", "agency5")
    shown = cli(net, "agency5", "joint", "show", job_id)
    assert shown["status"] == "expired" and shown["expires_at"] == expires_at
    assert shown["commitments"][0] == "0x" + "01" * 32 and shown["commitments"][1] == "0x" + "00" * 32
    again = run_cli("joint", "expire", job_id, "--devnet", net.dir, "--as", REQUESTER)
    assert again.returncode != 0 and "already expired" in again.stderr, again.stderr
    bad = run_cli("joint", "expire", "x", "--devnet", net.dir, "--as", REQUESTER)
    assert bad.returncode != 0 and "JOB_ID must be a positive integer" in bad.stderr


def test_the_explorer_lists_and_shows_joint_jobs_with_every_step(
        net: Consortium, captured_job: dict[str, Any], expired_job: dict[str, Any]) -> None:
    from chainshare.explorer.launcher import start_explorer, stop_explorer

    info = start_explorer(net.dir)
    try:
        url = info["urls"][0]
        head = net.head("node1")
        wait_until(lambda: httpx.get(f"{url}/api/v1/status", timeout=10).json()["indexed_height"] >= head, 120,
                   "the explorer to index the jobs")
        listed = httpx.get(f"{url}/api/v1/joint/jobs", params={"limit": 100}, timeout=10).json()["items"]
        by_id = {j["job_id"]: j for j in listed}
        done, gone = captured_job["out"]["job_id"], expired_job["job_id"]
        assert by_id[done]["status"] == "completed" and by_id[gone]["status"] == "expired"
        assert [j["job_id"] for j in listed] == sorted(by_id, reverse=True)
        job = httpx.get(f"{url}/api/v1/joint/jobs/{done}", timeout=10).json()
        on_chain = httpx.get(f"{net.api('node1')}/joint/jobs/{done}", timeout=10).json()
        assert job["participants"] == list(CAPTURE_OWNERS) and job["datasets"] == on_chain["datasets"]
        assert job["commitments"] == on_chain["commitments"] and job["query_hash"] == on_chain["query_hash"]
        assert job["result_hash"] == captured_job["out"]["result_hash"] and job["outcome"] == "released"
        assert job["confirmations"] == [{"outcome": "released", "result_hash": job["result_hash"]}] * 3
        assert job["expires_at"] == on_chain["expires_at"] > 0
        names = [e["event"] for e in job["events"]]
        assert names[:2] == ["JointJobCreated", "JointJobDeadline"] and names[-1] == "JointResultRecorded"
        assert names.count("JointInputCommitted") == 3 and names.count("JointResultConfirmed") == 3
        for e in job["events"]:
            assert httpx.get(f"{url}/api/v1/txs/{e['tx_hash']}", timeout=10).status_code == 200
        expired = httpx.get(f"{url}/api/v1/joint/jobs/{gone}", timeout=10).json()
        assert expired["reason"] == f"expired at block time {expired_job['expires_at']}"
        assert [e["event"] for e in expired["events"]][-1] == "JointJobExpired"
        assert expired["commitments"] == ["0x" + "01" * 32, None, None]
        for path, status in (("/api/v1/joint/jobs/x", 400), ("/api/v1/joint/jobs/99999", 404),
                             ("/api/v1/joint/jobs?status=nope", 400), ("/api/v1/joint/jobs?limit=0", 400)):
            assert httpx.get(url + path, timeout=10).status_code == status, path
        page = httpx.get(f"{url}/joint", timeout=10)
        assert page.status_code == 200 and f'href="/joint/{done}"' in page.text and "expired" in page.text
        one = httpx.get(f"{url}/joint/{done}", timeout=10)
        assert one.status_code == 200 and "JointResultRecorded" in one.text
        assert all(c[:10] in one.text for c in job["commitments"]) and "agency4" in one.text
        assert httpx.get(f"{url}/joint/abc", timeout=10).status_code == 400
        assert httpx.get(f"{url}/joint/99999", timeout=10).status_code == 404
    finally:
        stop_explorer(net.dir)
