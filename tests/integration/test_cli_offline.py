"""The ``chainshare`` command as a subprocess on a STOPPED devnet: ``devnet down``, ``chain verify
--data-dir`` (and on tampered copies of the LevelDB), ``devnet up`` resuming on its data, and
``node run`` refusing bad configurations and data directories of another chain."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import plyvel
import psutil
import pytest
from netkit import Devnet, DevnetPool, anchor_data, cli_command, cli_json, run_cli, sign_call

from chainshare import codec
from chainshare.bench import free_port_block
from chainshare.devnet import create_devnet, is_running
from chainshare.ledger.chain import P_BLOCK, P_RECEIPTS, unpack_stored
from chainshare.ledger.types import Block, Header

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cli-offline")]

ANCHORS = 3


class StoppedDevnet:
    def __init__(self, net: Devnet, receipts: list[dict[str, Any]], head: int, down: dict[str, Any],
                 pid: int) -> None:
        self.net = net
        self.receipts = receipts
        self.head = head  # head height seen just before `devnet down`
        self.down = down  # what `devnet down --json` printed
        self.old_pid = pid


@pytest.fixture(scope="module")
def stopped(devnet_pool: DevnetPool) -> StoppedDevnet:
    """A devnet started with `chainshare devnet up`, given a few anchors, then stopped with `devnet down`."""
    last = ""
    for attempt in range(3):
        d = devnet_pool.base / f"cli-net{attempt}"
        devnet_pool.register(d)
        up = run_cli("devnet", "up", "--dir", d, "--base-port", free_port_block(1), "--json")
        if up.returncode == 0:
            break
        last = up.stderr
    else:
        raise AssertionError(f"`chainshare devnet up` failed 3 times: {last}")
    net = Devnet(d)
    devnet_pool.nets.append(net)
    net.check_identity()
    receipts = [net.anchor() for _ in range(ANCHORS)]
    head = net.head()
    pid = net.pid
    down = run_cli("devnet", "down", "--dir", d, "--json")
    assert down.returncode == 0, down.stderr
    return StoppedDevnet(net, receipts, head, cli_json(down), pid)


def test_devnet_down_stops_the_node_cleanly(stopped: StoppedDevnet) -> None:
    assert stopped.down == {"nodes": [{"name": "node1", "stopped": True, "killed": False}]}
    assert not is_running(stopped.old_pid)
    status = run_cli("devnet", "status", "--dir", stopped.net.dir, "--json")
    assert status.returncode == 0
    (node,) = cli_json(status)["nodes"]
    assert node["running"] is False and "head" not in node
    again = run_cli("devnet", "down", "--dir", stopped.net.dir, "--json")
    assert again.returncode == 0
    assert cli_json(again) == {"nodes": [{"name": "node1", "stopped": False, "reason": "not running"}]}


def test_node_logs_its_clean_stop(stopped: StoppedDevnet) -> None:
    lines = stopped.net.log_path.read_text().splitlines()
    assert any('"node stopped"' in ln for ln in lines[-3:]), lines[-3:]


def verify_data_dir(path: Path, *json_flag: str) -> subprocess.CompletedProcess[str]:
    return run_cli("chain", "verify", "--data-dir", path, *json_flag)


def test_chain_verify_data_dir_of_the_stopped_node_passes(stopped: StoppedDevnet) -> None:
    proc = verify_data_dir(stopped.net.data_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    report = cli_json(proc)
    assert report["ok"] is True and report["chain_id"] == 1337
    assert report["genesis_hash"] == stopped.net.info["genesis_hash"]
    assert report["blocks"] >= stopped.head + 1
    assert report["transactions"] == len(stopped.receipts)


def test_chain_verify_data_dir_that_is_not_a_ledger_exits_2(tmp_path: Path) -> None:
    proc = verify_data_dir(tmp_path)
    assert proc.returncode == 2 and "not a chainshare data directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def tamper(data_dir: Path, height: int, kind: str) -> None:
    """Rewrite one stored value of block ``height`` in a (copied) LevelDB, with plyvel."""
    db = plyvel.DB(str(data_dir), create_if_missing=False)
    try:
        key_b, key_r = P_BLOCK + height.to_bytes(8, "big"), P_RECEIPTS + height.to_bytes(8, "big")
        block = Block.decode(unpack_stored(db.get(key_b)))
        if kind == "receipt-gas":
            receipts = codec.decode(unpack_stored(db.get(key_r)))
            receipts[0][2] += 1
            db.put(key_r, codec.encode(receipts))
        elif kind == "receipt-status":
            receipts = codec.decode(unpack_stored(db.get(key_r)))
            receipts[0][0] = 0
            db.put(key_r, codec.encode(receipts))
        elif kind == "block-signature":
            sig = bytearray(block.signature)
            sig[-1] ^= 0x01
            db.put(key_b, Block(block.header, block.transactions, block.justify, block.timeout_cert,
                                bytes(sig)).encode())
        elif kind == "block-timestamp":
            h = block.header
            header = Header(*[v + 1 if i == 3 else v for i, v in enumerate(
                [h.parent_hash, h.height, h.round, h.timestamp_ms, h.proposer, h.tx_root, h.receipts_root,
                 h.state_root, h.logs_bloom, h.validator_set_hash, h.gas_limit, h.gas_used, h.justify_hash])])
            db.put(key_b, Block(header, block.transactions, block.justify, block.timeout_cert,
                                block.signature).encode())
        elif kind == "block-transaction":
            # Another valid, signed transaction of the same sender in place of the stored one.
            other = sign_call(bytes(32 - 1) + b"\x01", 1337, 0, "0x" + "00" * 19 + "c5", anchor_data(bytes(32)))
            db.put(key_b, Block(block.header, (other,) + block.transactions[1:], block.justify,
                                block.timeout_cert, block.signature).encode())
        else:
            raise AssertionError(kind)
    finally:
        db.close()


@pytest.mark.parametrize("kind", [
    "receipt-gas", "receipt-status", "block-signature", "block-timestamp",
    "block-transaction",
])
def test_chain_verify_names_the_tampered_block(stopped: StoppedDevnet, tmp_path: Path, kind: str) -> None:
    height = int(stopped.receipts[1]["blockNumber"], 16)
    copy = tmp_path / "data"
    shutil.copytree(stopped.net.data_dir, copy)
    tamper(copy, height, kind)
    proc = verify_data_dir(copy, "--json")
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    report = cli_json(proc)
    assert report["ok"] is False
    assert re.search(rf"\bblock {height}\b", report["error"]), report


def test_chain_verify_failure_is_explained_without_json_too(stopped: StoppedDevnet, tmp_path: Path) -> None:
    height = int(stopped.receipts[0]["blockNumber"], 16)
    copy = tmp_path / "data"
    shutil.copytree(stopped.net.data_dir, copy)
    tamper(copy, height, "receipt-gas")
    proc = verify_data_dir(copy)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(rf"verification FAILED: block {height}\b", proc.stdout + proc.stderr)


def write_config(net: Devnet, name: str, text: str) -> Path:
    path = net.dir / "nodes" / "node1" / name
    path.write_text(text)
    return path


def run_node(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`chainshare node run --config` expected to refuse; a node that starts anyway is killed (and fails)."""
    proc = subprocess.Popen(cli_command() + ["node", "run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"node started with {config} instead of refusing: {err[-500:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def good_config(net: Devnet) -> str:
    return (net.dir / "nodes" / "node1" / "node.toml").read_text()


BAD_CONFIGS = {
    "unknown-key": (lambda t: t.replace("[block]\n", "[block]\nblock_speed = 3\n"), r"\[block\] block_speed: unknown"),
    "unknown-section": (lambda t: t + "\n[consensus]\nx = 1\n", r"\[consensus\].*unknown section"),
    "missing-key-file": (lambda t: t.replace("keys/validator.json", "keys/nope.json"), r"nope\.json does not exist"),
    "invalid-toml": (lambda t: t.replace("[api]", "[api"), r"not valid TOML"),
    "wrong-type": (lambda t: re.sub(r"port = \d+", 'port = "http"', t), r"\[api\] port: expected an integer"),
    "out-of-range": (lambda t: re.sub(r"port = \d+", "port = 70000", t), r"port 70000 must be"),
    "missing-genesis": (lambda t: t.replace("../../genesis.json", "../../nope.json"), r"nope\.json"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_node_run_with_a_bad_config_exits_with_a_one_line_error(stopped: StoppedDevnet, case: str) -> None:
    edit, message = BAD_CONFIGS[case]
    config = write_config(stopped.net, f"bad-{case}.toml", edit(good_config(stopped.net)))
    proc = run_node(config)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert re.search(message, lines[0]), lines[0]


def test_node_run_with_a_missing_config_file_exits_with_a_one_line_error(stopped: StoppedDevnet) -> None:
    proc = run_node(stopped.net.dir / "nodes" / "node1" / "absent.toml")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "absent.toml does not exist" in proc.stderr


@pytest.mark.parametrize("chain_id, message", [(4242, r"chain id 1337.*4242"), (1337, r"different genesis")])
def test_node_refuses_the_data_dir_of_another_chain(stopped: StoppedDevnet, tmp_path: Path, chain_id: int,
                                                    message: str) -> None:
    other = tmp_path / "other"
    create_devnet(other, 1, free_port_block(1), chain_id=chain_id)  # created, never started
    data = tmp_path / "borrowed-data"
    shutil.copytree(stopped.net.data_dir, data)
    config = other / "nodes" / "node1" / "node.toml"
    config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{data}"'))
    proc = run_node(config)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1, proc.stderr
    assert verify_data_dir(data).returncode == 0  # refused without touching it


def test_node_run_on_a_port_in_use_exits_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        create_devnet(tmp_path / "net", 1, port)  # created, never started: its node would use `port`
        proc = run_node(tmp_path / "net" / "nodes" / "node1" / "node.toml")
    assert proc.returncode != 0
    assert "address already in use" in proc.stderr and "Traceback" not in proc.stderr


def test_devnet_up_again_resumes_on_its_data(stopped: StoppedDevnet) -> None:
    net = stopped.net
    try:
        up = run_cli("devnet", "up", "--dir", net.dir, "--json")
        assert up.returncode == 0, up.stderr
        printed = cli_json(up)
        net.reload()
        assert printed == net.info
        new_pid = net.pid
        assert new_pid != stopped.old_pid and psutil.pid_exists(new_pid) and is_running(new_pid)
        net.check_identity()
        head = net.head()
        assert head >= stopped.head  # the chain continues from its data, not from a new genesis
        net.wait_for_head(head + 1)
        for receipt in stopped.receipts:
            assert net.receipt(receipt["transactionHash"]) == receipt
        sent = len(stopped.receipts)
        assert net.nonce() == sent
        receipt = net.anchor()
        assert receipt["status"] == "0x1"
        stopped.receipts.append(receipt)
        assert net.nonce() == sent + 1
    finally:
        down = run_cli("devnet", "down", "--dir", net.dir, "--json")
        assert down.returncode == 0, down.stderr
    assert verify_data_dir(net.data_dir).returncode == 0
