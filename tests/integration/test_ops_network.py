"""Operating a 4-validator network (issue 14): back up a running validator under load, destroy it,
restore it, let it catch up, and verify its chain offline; the backup endpoint answers loopback
clients only and a damaged or foreign backup is refused with a precise message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import (
    Devnet,
    RpcError,
    anchor_data,
    cli_json,
    run_cli,
    sign_call,
    wait_agencies_synced,
    wait_until,
)

from chainshare.bench import presign_anchors
from chainshare.config import load_config
from chainshare.crypto.ca import compute_certificate_fingerprint
from chainshare.devnet import is_running
from chainshare.execution.contracts.membership import Membership
from chainshare.execution.runtime import decode_return, encode_call
from chainshare.p2p import TlsIdentity, build_client_context

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ops")]


@pytest.fixture(scope="module")
def net(devnet_pool: Any) -> Devnet:
    # an empty block every 250 ms: a Governance window of blocks (below) passes in seconds
    return devnet_pool.launch("ops4", nodes=4, block_time_ms=100,  # type: ignore[no-any-return]
                              empty_block_interval_ms=250)


def node_info(net: Devnet, name: str) -> dict[str, Any]:
    net.reload()
    return next(n for n in net.info["nodes"] if n["name"] == name)


def head_of(url: str) -> int:
    return int(httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
                          timeout=10).json()["result"], 16)


class Load(threading.Thread):
    """Streams pre-signed Notary.anchor transactions to node1 in small batches until stopped."""

    def __init__(self, net: Devnet, count: int = 4000) -> None:
        super().__init__(daemon=True)
        self.url = net.rpc_url
        self.raws = presign_anchors(net.key_bytes, net.chain_id, net.nonce(tag="pending"), count, os.urandom(8))
        self.stopping = threading.Event()
        self.accepted = 0

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(0, len(self.raws), 20):
                if self.stopping.is_set():
                    return
                try:
                    answers = client.post(self.url, json=[
                        {"jsonrpc": "2.0", "id": k, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
                        for k, r in enumerate(self.raws[i:i + 20])]).json()
                except (httpx.HTTPError, ValueError):
                    return
                self.accepted += sum(1 for a in answers if "result" in a)
                time.sleep(0.05)


def test_backup_under_load_restore_catch_up_and_verify(net: Devnet, tmp_path: Path) -> None:
    node4 = node_info(net, "node4")
    config = net.dir / "nodes" / "node4" / "node.toml"
    load = Load(net)
    load.start()
    try:
        wait_until(lambda: load.accepted >= 200, 120, "the load to be under way")
        out = tmp_path / "node4.backup"
        proc = run_cli("node", "backup", "--config", config, "--out", out, "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        made = cli_json(proc)
        assert made["has_finality_proof"] is True and made["head_height"] > 0 and made["keys"] == []
        with tarfile.open(out) as tar:  # keys excluded unless asked
            assert sorted(tar.getnames()) == ["ledger.snap", "manifest.json"]
        accepted_at_backup = load.accepted
        wait_until(lambda: load.accepted > accepted_at_backup + 200, 120, "more load after the backup")

        # destroy the node: SIGKILL and delete its ledger
        os.kill(node4["pid"], signal.SIGKILL)
        wait_until(lambda: not is_running(node4["pid"]), 20, "node4 to die")
        data_dir = Path(node4["data_dir"])
        shutil.rmtree(data_dir)

        started = time.monotonic()
        proc = run_cli("node", "restore", "--in", out, "--config", config, "--json", timeout=600)
        assert proc.returncode == 0, proc.stderr
        restored = cli_json(proc)
        assert restored["head_height"] == made["head_height"] and restored["head_hash"] == made["head_hash"]
        assert restored["verify"]["head_final"] is True
        restore_s = time.monotonic() - started

        net.start(timeout=120)  # starts the one node that is not running: node4 on its restored data
        node4 = node_info(net, "node4")
        target = head_of(net.rpc_url)
        assert target > made["head_height"]
        wait_until(lambda: head_of(node4["rpc"]) >= target, 180, f"node4 to catch up to block {target}")
        caught_up_s = time.monotonic() - started
    finally:
        load.stopping.set()
        load.join(30)
    # the restored node takes part again: the chain keeps growing on it
    h = head_of(node4["rpc"])
    wait_until(lambda: head_of(node4["rpc"]) > h, 120, "node4 to follow new blocks")
    print(json.dumps({"restore_s": round(restore_s, 2), "restore_to_caught_up_s": round(caught_up_s, 2)}))

    # offline verification of the restored node's ledger (the node must be stopped: one LevelDB process)
    os.kill(node4["pid"], signal.SIGTERM)
    wait_until(lambda: not is_running(node4["pid"]), 30, "node4 to stop")
    proc = run_cli("chain", "verify", "--data-dir", node4["data_dir"], "--json", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = cli_json(proc)
    assert report["blocks"] - 1 >= target
    net.start(timeout=120)


def test_backup_refuses_remote_clients_and_bad_restores(net: Devnet, tmp_path: Path) -> None:
    node1 = node_info(net, "node1")
    # (that a non-loopback client gets 403 is in tests/unit/test_backup.py: devnet nodes listen on loopback)
    r = httpx.post(node1["rpc"] + "/admin/backup", timeout=10)
    assert r.status_code == 405 and "takes GET" in r.json()["error"]["message"]

    out = tmp_path / "node1.backup"
    proc = run_cli("node", "backup", "--node", node1["rpc"], "--out", out, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr

    # restoring over an existing data directory is refused, and nothing is touched
    proc = run_cli("node", "restore", "--in", out, "--data-dir", Path(node1["data_dir"]))
    assert proc.returncode == 2 and "is not empty" in proc.stderr

    # a damaged backup (ledger bytes changed) is refused and leaves no data directory behind
    damaged = tmp_path / "damaged.backup"
    with tarfile.open(out) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "ledger.snap":
                data = data[:-40] + bytes(40)
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    target = tmp_path / "restored"
    proc = run_cli("node", "restore", "--in", damaged, "--data-dir", target)
    assert proc.returncode == 2, proc.stderr
    assert "malformed" in proc.stderr or "truncated" in proc.stderr or "damaged" in proc.stderr
    assert not target.exists() and not (tmp_path / "restored.restoring").exists()

    # a backup of another network is refused against this node's configuration
    other_genesis = json.loads((net.dir / "genesis.json").read_text())
    other_genesis["chain_id"] = 4242
    other = tmp_path / "other"
    other.mkdir()
    (other / "genesis.json").write_text(json.dumps(other_genesis))
    cfg = (net.dir / "nodes" / "node1" / "node.toml").read_text()
    (other / "node.toml").write_text(cfg.replace('genesis = "../../genesis.json"', 'genesis = "genesis.json"')
                                     .replace('data_dir = "data"', 'data_dir = "restored"'))
    proc = run_cli("node", "restore", "--in", out, "--config", other / "node.toml", "--no-verify")
    assert proc.returncode != 0 and "restore it for the network it came from" in proc.stderr, proc.stderr
    assert not (other / "restored").exists()


# -- emergencies (docs/runbook.md): each is a command, its effect is checked where it matters -----------

PEOPLE = "citizen_id,district,age\n" + "".join(f"CN{i:08d},{('north', 'south')[i % 2]},{20 + i % 30}\n"
                                               for i in range(40))


def cli_as(net: Devnet, agency: str, *args: Any, code: int = 0) -> Any:
    proc = run_cli(*args, "--devnet", net.dir, "--as", agency, "--json", timeout=300)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}; stderr: {proc.stderr}"
    return cli_json(proc) if code == 0 or proc.stdout.strip() else proc.stderr


def fetch(net: Devnet, agency: str, dataset_id: int, out: Path, *grant: Any) -> Any:
    return run_cli("dataset", "fetch", dataset_id, "--out", out, "--devnet", net.dir, "--as", agency,
                   *(("--grant", *grant) if grant else ()), timeout=300)


@pytest.fixture(scope="module")
def shared(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, int]:
    """A dataset of agency1 that agency2 holds a read grant for (fetched once, to prove it works)."""
    base = tmp_path_factory.mktemp("emergency")
    (base / "people.csv").write_text(PEOPLE)
    (base / "schema.json").write_text(json.dumps({"columns": [
        {"name": "citizen_id", "kind": "personal"}, {"name": "district", "kind": "string"},
        {"name": "age", "kind": "integer"}], "min_group": 5}))
    (base / "permit.cedar").write_text("permit (principal, action, resource);\n")
    published = cli_as(net, "agency1", "dataset", "publish", base / "people.csv", "--title", "People", "--policy",
                       base / "permit.cedar", "--schema", base / "schema.json")
    dataset_id = int(published["dataset_id"])
    wait_agencies_synced(net.info, "agency1", "agency2")  # agency2's node estimates the request's gas
    grant = cli_as(net, "agency2", "access", "request", dataset_id, "--action", "read", "--purpose", "ops test")
    assert grant["allowed"]
    proc = fetch(net, "agency2", dataset_id, base / "first.csv")
    assert proc.returncode == 0, proc.stderr
    return dataset_id, int(grant["grant_id"])


TIMES: dict[str, float] = {}
# Blocks from a proposal to the height it takes effect at. The votes (3 CLI runs) took 21-30 blocks on a
# quiet machine; every block left after the decision is slow (the validator whose key changes, or the revoked
# agency's, no longer votes or proposes: ~2 s a block), so the window is tight and grows only when needed.
WINDOW = 40
TOO_LATE = "activation height must be after this block"


def decide_in_window(net: Devnet, propose: Callable[[int], list[Any]]) -> tuple[Any, Any]:
    """A Governance decision that takes effect a window of blocks after its proposal: agency1 proposes
    (``propose(window)``: its CLI arguments), agencies 2 and 3 vote, the last vote executes it. When the
    votes took longer than the window (a loaded machine), the execution reverts, naming the height that
    passed, and nothing changes: the decision is proposed again with a window twice as long.
    The proposal and the executing vote (JSON)."""
    window = WINDOW
    for _ in range(4):
        before = net.head()
        proposed = cli_as(net, "agency1", *propose(window))
        pid = proposed["proposal_id"]
        cli_as(net, "agency2", "emergency", "vote", pid)
        proc = run_cli("emergency", "vote", pid, "--devnet", net.dir, "--as", "agency3", "--json", timeout=300)
        if proc.returncode == 0:
            done = cli_json(proc)
            assert done["executed"] is True, done
            TIMES[f"{propose(window)[1]}: blocks from proposal to execution (window {window})"] = \
                done["block"] - before
            return proposed, done
        assert proc.returncode == 1 and TOO_LATE in proc.stderr, proc.stderr
        window *= 2
    raise AssertionError(f"the votes did not fit in a window of {window // 2} blocks")


def test_owner_freezes_a_dataset_deliveries_refused_then_lifted(net: Devnet, shared: tuple[int, int],
                                                                tmp_path: Path) -> None:
    dataset_id, grant_id = shared
    started = time.monotonic()
    frozen = cli_as(net, "agency1", "emergency", "freeze-dataset", dataset_id, "--reason", "leak suspected")
    proc = fetch(net, "agency2", dataset_id, tmp_path / "x.csv", grant_id)
    TIMES["owner freeze: decision to refused delivery"] = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert f"dataset {dataset_id} is frozen by its owner 'agency1': leak suspected" in proc.stderr
    assert not (tmp_path / "x.csv").exists()
    proc = fetch(net, "agency2", dataset_id, tmp_path / "x.csv")  # without --grant: the reason is named too
    assert proc.returncode == 2 and "is frozen by its owner" in proc.stderr, proc.stderr
    shown = cli_as(net, "agency2", "access", "show", grant_id)
    assert shown["valid"] is False and "frozen" in shown["invalid_reason"]
    denied = cli_as(net, "agency3", "access", "request", dataset_id, "--action", "read", "--purpose", "p", code=1)
    assert denied["allowed"] is False and denied["errors"] == [
        f"dataset {dataset_id} is frozen by its owner 'agency1': leak suspected"]
    # only the owner (or Governance) may lift it
    assert "or the owner of dataset" in cli_as(net, "agency2", "emergency", "unfreeze-dataset", dataset_id, code=1)
    cli_as(net, "agency1", "emergency", "unfreeze-dataset", dataset_id)
    wait_agencies_synced(net.info, "agency1", "agency2")  # agency2's node checks the grant before fetching
    proc = fetch(net, "agency2", dataset_id, tmp_path / "y.csv")
    assert proc.returncode == 0, proc.stderr
    # every action is an on-chain event, in the dataset's audit trail (what the explorer indexes)
    events = [i["event"] for i in cli_as(net, "agency1", "audit", "--dataset", dataset_id)["items"]]
    assert "DatasetFrozen" in events and "DatasetUnfrozen" in events
    assert frozen["block"] > 0


def test_governance_pauses_all_sharing_and_resumes_it(net: Devnet, shared: tuple[int, int], tmp_path: Path) -> None:
    dataset_id, grant_id = shared
    started = time.monotonic()
    proposed = cli_as(net, "agency1", "emergency", "pause-sharing", "--reason", "incident 7")
    assert proposed["executed"] is False and proposed["required"] == 3
    pid = proposed["proposal_id"]
    assert cli_as(net, "agency2", "emergency", "vote", pid)["executed"] is False
    assert "has 2 of the 3 yes votes it needs" in cli_as(net, "agency2", "emergency", "execute", pid, code=2)
    done = cli_as(net, "agency3", "emergency", "vote", pid)
    assert done["executed"] is True
    wait_agencies_synced(net.info, "agency3", "agency1", "agency2")  # the fetch and the status read those nodes
    proc = fetch(net, "agency2", dataset_id, tmp_path / "x.csv", grant_id)
    TIMES["consortium pause (3 of 4 agencies): proposal to refused delivery"] = time.monotonic() - started
    assert proc.returncode == 2 and "all data sharing is paused by Governance: incident 7" in proc.stderr
    status = run_cli("emergency", "status", "--node", net.rpc_url, "--json")
    assert cli_json(status)["sharing_paused"] is True
    # a member alone cannot lift it
    proposed = cli_as(net, "agency1", "emergency", "resume-sharing")
    cli_as(net, "agency2", "emergency", "vote", proposed["proposal_id"])
    assert cli_as(net, "agency4", "emergency", "vote", proposed["proposal_id"])["executed"] is True
    wait_agencies_synced(net.info, "agency4", "agency1", "agency2")
    proc = fetch(net, "agency2", dataset_id, tmp_path / "y.csv")
    assert proc.returncode == 0, proc.stderr


def test_validator_bls_key_rotation_takes_effect_at_its_height(net: Devnet, tmp_path: Path) -> None:
    """A compromised BLS key is replaced by a Governance decision; the node restarted with the new key
    votes from the activation height on: with node4 stopped, blocks need node3's NEW key to be certified."""
    proc = run_cli("ca", "issue-node", "node3", "--agency", "agency3", "--ca-dir", net.dir / "ca", "--out",
                   tmp_path / "node3-new", "--dev", "--json")
    assert proc.returncode == 0, proc.stderr
    identity = tmp_path / "node3-new" / "node-identity.json"
    started = time.monotonic()
    proposed, _ = decide_in_window(net, lambda window: [
        "emergency", "rotate-validator", "node3", "--identity", identity, "--activate-after", window])
    TIMES["BLS key rotation (3 of 4 agencies): proposal to decision final"] = time.monotonic() - started
    activation = proposed["activation_height"]
    new_pk = json.loads(identity.read_text())["bls_public_key"]

    def node3_keys() -> list[str]:  # node1's view (the decision was final on node3's node first)
        sets = httpx.get(net.api_url + "/validators", timeout=10).json()
        return [v["bls_public_key"] for v in sets["epochs"][-1]["items"] if v["name"] == "node3"]

    wait_until(lambda: node3_keys() == [new_pk], 60, "node1 to see the rotated key")
    # the operator restarts node3 with the new BLS key (its TLS identity and vault stay)
    node3 = node_info(net, "node3")
    os.kill(node3["pid"], signal.SIGTERM)
    wait_until(lambda: not is_running(node3["pid"]), 30, "node3 to stop")
    shutil.copy(tmp_path / "node3-new" / "validator.json", net.dir / "nodes" / "node3" / "keys" / "validator.json")
    net.start(timeout=120)
    net.wait_for_head(activation + 3, timeout=240)
    node4 = node_info(net, "node4")
    os.kill(node4["pid"], signal.SIGTERM)  # 3 of 4 must sign now: node1, node2 and node3's new key
    wait_until(lambda: not is_running(node4["pid"]), 30, "node4 to stop")
    h = net.head()
    net.wait_for_head(h + 5, timeout=180)
    net.start(timeout=120)  # node4 back for the next test


def p2p_port(net: Devnet, name: str) -> int:
    return load_config(net.dir / "nodes" / name / "node.toml").p2p.listen_port


def old_identity_handshake(port: int, identity: TlsIdentity) -> str:
    """Dial a node's P2P port with ``identity``: "served" if the node accepts it and sends its hello,
    "refused" if the TLS handshake fails or the node closes the connection before any byte."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                build_client_context(identity).wrap_socket(raw) as tls:
            return "served" if tls.recv(4096) else "refused"
    except (ssl.SSLError, ConnectionError):
        return "refused"


class HandshakeProbe(threading.Thread):
    """Dials nodes with a (stolen) certificate every 0.2 s and notes when each first refuses it."""

    def __init__(self, ports: dict[str, int], identity: TlsIdentity) -> None:
        super().__init__(daemon=True)
        self.ports, self.identity = ports, identity
        self.refused_at: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and len(self.refused_at) < len(self.ports):
            for name, port in self.ports.items():
                if name not in self.refused_at and old_identity_handshake(port, self.identity) == "refused":
                    self.refused_at[name] = time.time()
            self.stopping.wait(0.2)


def test_validator_tls_rotation_old_certificate_refused_everywhere(net: Devnet, tmp_path: Path) -> None:
    """The second half of "validator key compromised" (after the BLS rotation above, same node): node3
    gets a new TLS certificate and its old one is revoked on chain. Every node then refuses the old
    certificate at the handshake (a thief's copy of it), drops node3's sessions that used it, and node3,
    restarted with the new certificate, rejoins: with node4 stopped, finality needs node3."""
    keys = net.dir / "nodes" / "node3" / "keys"
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copy(keys / "node.crt", stolen / "node.crt")
    shutil.copy(keys / "node.key", stolen / "node.key")
    thief = TlsIdentity(ca_cert=net.dir / "ca" / "ca.crt", cert=stolen / "node.crt", key=stolen / "node.key")
    others = {name: p2p_port(net, name) for name in ("node1", "node2", "node4")}
    for name, port in others.items():  # before the revocation, the stolen certificate passes the handshake
        assert old_identity_handshake(port, thief) == "served", name
    logs = {name: (net.dir / "nodes" / name / "node.log") for name in others}
    log_sizes = {name: path.stat().st_size for name, path in logs.items()}

    probe = HandshakeProbe(others, thief)  # (node3 itself refuses its own name anyway: self_connection)
    probe.start()
    try:
        rotated = cli_as(net, "agency3", "emergency", "rotate-tls", "node3")
        wait_until(lambda: len(probe.refused_at) == len(others), 60, "every node to refuse the old certificate")
    finally:
        probe.stopping.set()
        probe.join(30)
    old_fp = rotated["old_fingerprint"]
    assert old_fp == "0x" + compute_certificate_fingerprint((stolen / "node.crt").read_bytes()).hex()
    assert rotated["new_fingerprint"] != old_fp and rotated["restarted"] is True
    assert rotated["resealed"] == ["vault.key", "pseudonym.secret"]  # node3's vault, used by the sharing tests
    effect = {name: at - rotated["revocation_submitted_at"] for name, at in probe.refused_at.items()}
    TIMES["TLS revocation (the agency alone): submitted to final"] = rotated["revocation_seconds"]
    TIMES["TLS revocation: submitted to old certificate refused by every node"] = max(effect.values())
    TIMES["TLS rotation: restart with the new certificate"] = rotated["restart_seconds"]
    for name in others:  # refused from now on, at every node, and node3's sessions with it were dropped
        assert old_identity_handshake(others[name], thief) == "refused", name
        with logs[name].open("rb") as f:
            f.seek(log_sizes[name])
            tail = f.read().decode(errors="replace")
        assert any("p2p disconnected" in line and "revoked_certificate" in line and "node3" in line
                   for line in tail.splitlines()), f"{name} did not drop node3's old session"
    # the revocation is on chain for anyone (and the explorer) to see
    out = httpx.post(net.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{
        "to": net.contract_address("Membership"), "data": "0x" + encode_call(
            Membership(), "certificateRevocation", bytes.fromhex(old_fp[2:])).hex()}, "latest"]}, timeout=10)
    revoked, agency, node, height, _ = decode_return(Membership(), "certificateRevocation",
                                                     bytes.fromhex(out.json()["result"][2:]))
    assert (revoked, agency, node, height) == (True, "agency3", "node3", rotated["block"])

    # node3 rejoined with its new certificate: with node4 stopped, blocks need node3's votes
    node4 = node_info(net, "node4")
    os.kill(node4["pid"], signal.SIGTERM)
    wait_until(lambda: not is_running(node4["pid"]), 30, "node4 to stop")
    h = net.head()
    net.wait_for_head(h + 5, timeout=180)
    net.start(timeout=120)
    print(json.dumps({"tls_revocation_final_s": rotated["revocation_seconds"], "tls_restart_s":
                      rotated["restart_seconds"], "tls_effect_s": {k: round(v, 2) for k, v in sorted(effect.items())}}))


def test_certificate_commands_refuse_bad_input_with_precise_messages(net: Devnet, tmp_path: Path) -> None:
    assert "cannot read the certificate" in cli_as(net, "agency1", "emergency", "revoke-certificate",
                                                   tmp_path / "missing.crt", "--reason", "x", code=2)
    (tmp_path / "junk.crt").write_bytes(b"x" * 10_000)
    assert "larger than 8192 bytes" in cli_as(net, "agency1", "emergency", "revoke-certificate",
                                              tmp_path / "junk.crt", "--reason", "x", code=2)
    # another agency's node certificate: only its agency (or Governance) may revoke it; nothing changes
    other = net.dir / "nodes" / "node2" / "keys" / "node.crt"
    assert "only agency 'agency2' (the certificate's) or Governance may revoke" in cli_as(
        net, "agency1", "emergency", "revoke-certificate", other, "--reason", "x", code=1)
    assert "no node 'node9'" in cli_as(net, "agency1", "emergency", "rotate-tls", "node9", code=2)
    proc = run_cli("emergency", "rotate-tls", "node1", "--node", net.rpc_url, "--json")
    assert proc.returncode == 2 and "--config node.toml and --ca-dir DIR are required" in proc.stderr


def test_agency_compromise_is_one_decision_revoke_and_retire(net: Devnet, shared: tuple[int, int],
                                                            tmp_path: Path) -> None:
    dataset_id, _ = shared
    grant = cli_as(net, "agency4", "access", "request", dataset_id, "--action", "read", "--purpose", "before")
    started = time.monotonic()
    proposed, _ = decide_in_window(net, lambda window: [
        "emergency", "revoke-agency", "agency4", "--retire-after", window])
    assert proposed["retired_validators"] == ["node4"]
    TIMES["agency compromise (3 of 4 agencies): proposal to revocation final"] = time.monotonic() - started

    def latest_set() -> dict[str, Any]:
        sets: dict[str, Any] = httpx.get(net.api_url + "/validators", timeout=10).json()
        return dict(sets["epochs"][-1])

    # node1's view (the decision was final on node3's node first): its validator leaves the set,
    wait_until(lambda: [v["name"] for v in latest_set()["items"]] == ["node1", "node2", "node3"], 60,
               "node1 to see the set without node4")
    activation = latest_set()["activation_height"]
    # its grants are invalid, its account may no longer transact
    shown = cli_as(net, "agency1", "access", "show", grant["grant_id"])
    assert shown["valid"] is False and "agency 'agency4' is revoked" in shown["invalid_reason"]
    key4 = next(a["private_key"] for a in net.info["accounts"] if a["agency"] == "agency4")
    raw = sign_call(key4, net.chain_id, 1000, net.contract_address("Notary"), anchor_data(os.urandom(32)))
    with pytest.raises(RpcError) as refused:  # node1 refuses the revoked agency's account at admission
        net.send_raw(raw)
    assert "member" in refused.value.message, refused.value.message
    net.wait_for_head(activation + 5, timeout=180)  # the chain goes on with the three remaining validators
    # the revoked agency's node was cut off by its peers at once: it never saw the blocks that followed
    node4 = node_info(net, "node4")
    assert head_of(node4["rpc"]) < activation
    print(json.dumps({k: round(v, 2) for k, v in TIMES.items()}))
