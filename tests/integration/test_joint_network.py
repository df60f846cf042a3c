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
- an owner node that is down aborts the job cleanly, with a ``JointJobAborted`` record on chain.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import DevnetPool, run_cli, shutdown_devnet
from test_sharing_network import Consortium, cli

from chainshare.bench import free_port_block
from chainshare.devnet import create_devnet, start_devnet
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
    last: Exception | None = None
    for attempt in range(3):
        directory = devnet_pool.base / f"joint{attempt}"
        create_devnet(directory, NODES, free_port_block(2 * NODES))
        devnet_pool.register(directory)  # stopped at the end of the module, whatever happens
        try:
            start_devnet(directory, timeout=90)
            return Consortium(directory)
        except Exception as exc:  # most likely a port taken between the probe and the bind
            last = exc
            shutdown_devnet(directory)
    raise AssertionError(f"could not start a {NODES}-node devnet: {last}")


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
    assert not [s for s in SECRETS if s in proc.stdout + proc.stderr]


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
    assert not [s for s in SECRETS if s in proc.stdout + proc.stderr]


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
