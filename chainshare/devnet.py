"""Local development networks: keys, genesis, configs and node processes on 127.0.0.1.

``create_devnet`` writes everything a network needs under one directory; ``start_devnet`` starts
every node that is not running (so ``up`` on an existing directory resumes on its data) and
returns once each node has produced a block; ``stop_devnet`` stops them (SIGTERM, then SIGKILL).
``DIR/devnet.json`` describes the network. The dev keys in it are plain hex FOR DEVELOPMENT ONLY.
Node i serves its API on ``base_port + i - 1``; with more than one node, node i also listens for
its peers (mutual TLS) on ``base_port + nodes + i - 1``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from chainshare.config import read_json_file
from chainshare.crypto.secp import to_checksum_address
from chainshare.errors import ChainshareError, ConfigError
from chainshare.execution.contracts import all_contracts
from chainshare.execution.genesis import compute_genesis_block, parse_genesis

DEVNET_FILE = "devnet.json"
DEV_WARNING = "DEVELOPMENT ONLY: these private keys are in plain text; never use them on a real network"


def _agency_name(i: int) -> str:
    return f"agency{i}"


def create_devnet(directory: Path, nodes: int, base_port: int, chain_id: int = 1337,
                  block_time_ms: int = 200, empty_block_interval_ms: int = 1000) -> dict[str, Any]:
    """Create CA, agencies, node identities, genesis and node configs for ``nodes`` validators."""
    from chainshare.crypto.ca import init_ca, issue_agency, issue_node
    from chainshare.crypto.keystore import decrypt_account_key

    if nodes < 1 or nodes > 16:
        raise ConfigError("--nodes must be between 1 and 16")
    if not 1024 <= base_port <= 65535 - 2 * nodes:
        raise ConfigError("--base-port must leave room for two ports per node below 65536")
    directory.mkdir(parents=True, exist_ok=True)
    ca_dir = directory / "ca"
    ca = init_ca(ca_dir, name="chainshare devnet CA", password=None)
    # No shared pseudonym key: each node's vault creates its own owner-only pseudonym secret.
    agencies, validators, accounts, node_entries = [], [], [], []
    for i in range(1, nodes + 1):
        name = _agency_name(i)
        ident = issue_agency(ca_dir, None, name, directory / "agencies" / name, key_password=None, kdf_light=True)
        keystore = json.loads((ident.directory / "account.json").read_text())
        key = decrypt_account_key(keystore, "")
        accounts.append({"agency": name, "address": ident.address, "private_key": "0x" + key.hex()})
        agencies.append({"name": name, "role": "member", "accounts": [ident.address],
                         "certificate": ident.cert_pem})
        node_name = f"node{i}"
        node_dir = directory / "nodes" / node_name
        nid = issue_node(ca_dir, None, name, node_name, node_dir / "keys", key_password=None, kdf_light=True)
        validators.append({"name": node_name, "agency": name, "bls_public_key": "0x" + nid.bls_public_key.hex(),
                           "bls_pop": "0x" + nid.bls_pop.hex()})
        port = base_port + i - 1
        p2p = ""
        sharing = (f'\n[sharing]\nvault_dir = "vault"\n'
                   f'account_keystore = "../../agencies/{name}/account.json"\n')
        if nodes > 1:
            peers = [f"node{j}@127.0.0.1:{base_port + nodes + j - 1}" for j in range(1, nodes + 1) if j != i]
            p2p = (f'\n[p2p]\nlisten_host = "127.0.0.1"\nlisten_port = {base_port + nodes + i - 1}\n'
                   f'peers = {json.dumps(peers)}\nca_cert = "../../ca/ca.crt"\n'
                   f'node_cert = "keys/node.crt"\nnode_key = "keys/node.key"\n')
        (node_dir / "node.toml").write_text(
            f'# devnet node {node_name} of {name} (dev_mode: keys have empty passwords)\n'
            f'[node]\nname = "{node_name}"\ndata_dir = "data"\ngenesis = "../../genesis.json"\ndev_mode = true\n\n'
            f'[validator]\nkey_file = "keys/validator.json"\n\n'
            f'[api]\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[block]\nblock_time_ms = {block_time_ms}\nempty_block_interval_ms = {empty_block_interval_ms}\n'
            + p2p + sharing)
        node_entries.append({"name": node_name, "agency": name, "rpc": f"http://127.0.0.1:{port}",
                             "api": f"http://127.0.0.1:{port}/api/v1", "pid": None,
                             "data_dir": str((node_dir / "data").resolve())})
    genesis_doc = {"format": 1, "chain_id": chain_id, "timestamp_ms": int(time.time() * 1000),
                   "ca_certificate": ca.cert_pem, "agencies": agencies, "validators": validators,
                   "params": {"block_gas_limit": 60_000_000, "max_block_txs": 2_000,
                              "governance_threshold": [2, 3], "voting_period_blocks": 100_000}}
    genesis = parse_genesis(genesis_doc)
    (directory / "genesis.json").write_text(json.dumps(genesis_doc, indent=2))
    block0, _, _ = compute_genesis_block(genesis)
    info = {
        "chain_id": chain_id,
        "nodes": node_entries,
        "accounts": accounts,
        "contracts": {c.NAME: to_checksum_address(c.ADDRESS) for c in all_contracts()},
        "genesis_hash": "0x" + block0.hash.hex(),
        "warning": DEV_WARNING,
    }
    write_devnet(directory, info)
    return info


def read_devnet(directory: Path) -> dict[str, Any]:
    path = directory / DEVNET_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run `chainshare devnet up --dir {directory}` first")
    return dict(read_json_file(path, "devnet description"))


def write_devnet(directory: Path, info: dict[str, Any]) -> None:
    tmp = directory / (DEVNET_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(directory / DEVNET_FILE)


def is_running(pid: int | None, config_path: Path | None = None) -> bool:
    """True iff ``pid`` is a live (not zombie) chainshare node process — and, with
    ``config_path``, one running exactly that node's configuration (a stale pid reused by another
    process, or by a node of another network, is not ours)."""
    if not pid:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = p.cmdline()
    except Exception:
        return False
    if not cmd:
        return True  # a process exec()ing right now has no command line yet: it is starting, so running
    if config_path is not None:
        return str(config_path.resolve()) in cmd
    return any("chainshare" in part for part in cmd)


def node_config_path(directory: Path, node: dict[str, Any]) -> Path:
    return (directory / "nodes" / str(node["name"]) / "node.toml").resolve()


def start_node_process(directory: Path, node: dict[str, Any]) -> int:
    node_dir = directory / "nodes" / node["name"]
    log = open(node_dir / "node.log", "ab")  # noqa: SIM115 (handed to the child)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainshare", "node", "run", "--config", str(node_config_path(directory, node))],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=node_dir, env=env, start_new_session=True)
    log.close()
    return proc.pid


def wait_for_blocks(url: str, pid: int, timeout: float, log_path: Path, genesis_hash: str | None = None) -> int:
    """Wait until OUR node answers at ``url`` (same genesis) with a head >= 1; fail fast if its
    process exits (e.g. its port was taken by another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise ChainshareError(f"node process {pid} exited during start-up; last log lines:\n{tail}")
        try:
            st = httpx.get(url.rstrip("/") + "/api/v1/status", timeout=2).json()
            if genesis_hash is not None and st.get("genesis_hash") != genesis_hash:
                for _ in range(50):  # our node, unable to bind, is about to exit: report its own words
                    if not is_running(pid):
                        break
                    time.sleep(0.1)
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise ChainshareError(f"another network answers at {url} (genesis {st.get('genesis_hash')}): "
                                      f"its port is taken; stop that process or choose --base-port. "
                                      f"Last log lines of this node:\n{tail}")
            head = int(st["head"]["height"])
            if head >= 1:
                return head
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.1)
    raise ChainshareError(f"node at {url} produced no block within {timeout:.0f}s (see {log_path})")


def start_devnet(directory: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Start every node of the devnet that is not running; returns the updated devnet.json."""
    info = read_devnet(directory)
    for node in info["nodes"]:
        if not is_running(node.get("pid"), node_config_path(directory, node)):
            node["pid"] = start_node_process(directory, node)
    write_devnet(directory, info)
    for node in info["nodes"]:
        wait_for_blocks(node["rpc"], node["pid"], timeout, directory / "nodes" / node["name"] / "node.log",
                        info.get("genesis_hash"))
    return info


def stop_devnet(directory: Path, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Stop every running node (SIGTERM, then SIGKILL after ``timeout``)."""
    info = read_devnet(directory)
    result = []
    for node in info["nodes"]:
        pid = node.get("pid")
        cfg_path = node_config_path(directory, node)
        if not is_running(pid, cfg_path):
            result.append({"name": node["name"], "stopped": False, "reason": "not running"})
            continue
        killed = stop_node_process(pid, cfg_path, timeout)
        result.append({"name": node["name"], "stopped": True, "killed": killed})
    return result


def stop_node_process(pid: int, config_path: Path, timeout: float) -> bool:
    """Stop the node process ``pid`` (SIGTERM, SIGKILL after ``timeout``); True if it had to be killed."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(pid, config_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(pid, config_path):
        os.kill(pid, signal.SIGKILL)
        return True
    return False


def restart_node(directory: Path, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """Stop devnet node ``name`` if it runs, start it again (it reads its keys anew) and wait until it
    serves blocks; returns its devnet.json entry."""
    info = read_devnet(directory)
    node = next((n for n in info["nodes"] if n["name"] == name), None)
    if node is None:
        raise ConfigError(f"no node {name!r} in {directory} (one of: {', '.join(n['name'] for n in info['nodes'])})")
    if is_running(node.get("pid"), node_config_path(directory, node)):
        stop_node_process(node["pid"], node_config_path(directory, node), 15.0)
    start_devnet(directory, timeout)
    return dict(next(n for n in read_devnet(directory)["nodes"] if n["name"] == name))


def devnet_status(directory: Path) -> list[dict[str, Any]]:
    info = read_devnet(directory)
    out = []
    for node in info["nodes"]:
        entry: dict[str, Any] = {"name": node["name"], "agency": node["agency"], "rpc": node["rpc"],
                                 "pid": node.get("pid"),
                                 "running": is_running(node.get("pid"), node_config_path(directory, node))}
        if entry["running"]:
            try:
                st = httpx.get(node["api"] + "/status", timeout=2).json()
                entry.update({"head": st["head"]["height"], "mempool": st["mempool"]})
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                entry["error"] = f"API not answering: {exc}"
        out.append(entry)
    return out
