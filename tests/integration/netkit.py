"""Helpers of the integration suite: real devnets (node processes on 127.0.0.1, LevelDB in tmp dirs),
a thin JSON-RPC/REST client over httpx, the CLI as a subprocess, and raw-transaction builders.

Everything here talks to nodes the way users do: HTTP, signed raw transactions, the ``chainshare``
command. The only library calls into chainshare are the devnet launcher (``create_devnet``,
``start_devnet``, ``stop_devnet``), ``free_port_block`` and ``presign_anchors``, as the brief allows.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import rlp
from eth_account import Account
from eth_utils import keccak

from chainshare.bench import free_port_block
from chainshare.devnet import create_devnet, is_running, read_devnet, start_devnet, stop_devnet

REPO = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO / "contracts"
ANCHOR_SELECTOR = keccak(text="anchor(bytes32)")[:4]
ANCHORED_TOPIC = "0x" + keccak(text="Anchored(bytes32,address)").hex()
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F

# Devnet directories started by this process: stopped at teardown, and killed at exit if a worker dies.
_LIVE: set[Path] = set()


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def load_artifact(name: str) -> dict[str, Any]:
    return dict(json.loads((CONTRACTS_DIR / f"{name}.json").read_text()))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _rpc_head(url: str) -> int:
    r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=30)
    return int(r.json()["result"], 16)


def wait_agencies_synced(info: dict[str, Any], writer: str, *readers: str, timeout: float = 60) -> int:
    """Wait until the nodes of agencies ``readers`` hold every block the node of agency ``writer`` holds; its
    head height. A command acting through one agency's node answers once ITS node has the block final; the
    others commit that block when they see the certificate, with the next proposal (up to ``idle_block_ms``
    later on an idle chain), so a test that then reads another node must wait for it (read-your-writes)."""
    nodes = {n["agency"]: n for n in info["nodes"]}
    height = _rpc_head(nodes[writer]["rpc"])
    for reader in readers:
        wait_until(lambda: _rpc_head(nodes[reader]["rpc"]) >= height, timeout,  # noqa: B023 (called at once)
                   f"{reader}'s node at block {height} of {writer}'s")
    return height


# -- the CLI -----------------------------------------------------------------------------------

def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("chainshare")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chainshare"]


def run_cli(*args: object, timeout: float = 120, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``chainshare ARGS...`` as a subprocess; never raises on a non-zero exit."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.update(env or {})
    return subprocess.run(cli_command() + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL)


def run_bench(cwd: Path, *args: object, timeout: float = 300) -> dict[str, Any]:
    """Run ``chainshare bench ARGS...`` in ``cwd`` as README's figures were taken; its JSON result, once it
    exited 0 and saved that JSON under ``cwd`` (bench-results/, relative to the directory it ran in)."""
    proc = run_cli("bench", *args, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert (cwd / result["saved_to"]).is_file()
    return result


def cli_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document a ``--json`` command printed (its last non-empty stdout line)."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no JSON on stdout (exit {proc.returncode}); stderr: {proc.stderr!r}"
    return json.loads(lines[-1])


# -- devnets -----------------------------------------------------------------------------------

class Devnet:
    """A running (or stopped) one-node devnet described by DIR/devnet.json."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.info: dict[str, Any] = read_devnet(directory)
        self.http = httpx.Client(timeout=30)

    def reload(self) -> None:
        self.info = read_devnet(self.dir)

    def close(self) -> None:
        self.http.close()

    # -- description ------------------------------------------------------------------------
    @property
    def node(self) -> dict[str, Any]:
        return dict(self.info["nodes"][0])

    @property
    def rpc_url(self) -> str:
        return str(self.node["rpc"])

    @property
    def api_url(self) -> str:
        return str(self.node["api"])

    @property
    def pid(self) -> int:
        return int(self.node["pid"])

    @property
    def chain_id(self) -> int:
        return int(self.info["chain_id"])

    @property
    def private_key(self) -> str:
        return str(self.info["accounts"][0]["private_key"])

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.private_key[2:])

    @property
    def address(self) -> str:
        return str(self.info["accounts"][0]["address"])

    @property
    def account(self) -> Any:
        return Account.from_key(self.private_key)

    @property
    def data_dir(self) -> Path:
        return Path(self.node["data_dir"])

    @property
    def log_path(self) -> Path:
        return self.dir / "nodes" / self.node["name"] / "node.log"

    def contract_address(self, name: str) -> str:
        return str(self.info["contracts"][name])

    # -- transport --------------------------------------------------------------------------
    def post(self, body: Any = None, *, content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return self.http.post(self.rpc_url, content=content, headers={"content-type": "application/json"})
        return self.http.post(self.rpc_url, json=body)

    def call(self, method: str, *params: Any) -> dict[str, Any]:
        """One JSON-RPC request; the whole response object (result or error)."""
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        assert r.status_code == 200, f"{method}: HTTP {r.status_code}: {r.text[:300]}"
        body = r.json()
        assert body.get("jsonrpc") == "2.0" and body.get("id") == 1, body
        return dict(body)

    def rpc(self, method: str, *params: Any) -> Any:
        body = self.call(method, *params)
        if "error" in body:
            err = body["error"]
            raise RpcError(err["code"], err["message"], err.get("data"))
        return body["result"]

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(self.api_url + path, params=params or None)

    # -- chain reads ------------------------------------------------------------------------
    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def nonce(self, address: str | None = None, tag: str = "latest") -> int:
        return int(self.rpc("eth_getTransactionCount", address or self.address, tag), 16)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.rpc("eth_getTransactionReceipt", tx_hash)  # type: ignore[no-any-return]

    def wait_receipt(self, tx_hash: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: self.receipt(tx_hash), timeout, f"a receipt for {tx_hash}")  # type: ignore[no-any-return]

    def wait_for_head(self, height: int, timeout: float = 20) -> int:
        return wait_until(lambda: (h := self.head()) >= height and h, timeout, f"head >= {height}")  # type: ignore[no-any-return]

    def send_raw(self, raw: bytes) -> str:
        tx_hash: str = self.rpc("eth_sendRawTransaction", "0x" + raw.hex())
        return tx_hash

    def anchor(self, digest: bytes | None = None, key: str | None = None) -> dict[str, Any]:
        """Sign (eth_account), send and wait for a Notary.anchor(digest) transaction."""
        acct = Account.from_key(key or self.private_key)
        nonce = self.nonce(acct.address, "pending")
        raw = sign_call(acct.key, self.chain_id, nonce, self.contract_address("Notary"),
                        anchor_data(digest or os.urandom(32)))
        return self.wait_receipt(self.send_raw(raw))

    def web3(self) -> Any:
        from web3 import Web3

        return Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))

    # -- process control -------------------------------------------------------------------
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node process and wait until it is gone."""
        pid = self.pid
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        wait_until(lambda: not is_running(pid), 20, f"node process {pid} to exit")

    def start(self, timeout: float = 60) -> None:
        """Start the node again if it is not running (``start_devnet``) and check it is ours."""
        start_devnet(self.dir, timeout=timeout)
        self.reload()
        self.check_identity()

    def check_identity(self) -> None:
        """The process answering on our port serves our genesis (not another devnet's)."""
        status = self.get("/status").json()
        assert status["genesis_hash"] == self.info["genesis_hash"], (
            f"{self.api_url} serves another network ({status['genesis_hash']})")


def register_devnet(directory: Path) -> None:
    """Make sure the nodes of a devnet created elsewhere (e.g. by the CLI) are stopped at the end."""
    _LIVE.add(directory)


def shutdown_devnet(directory: Path) -> None:
    """Stop every node of the devnet (SIGTERM, then SIGKILL) and forget it."""
    try:
        if (directory / "devnet.json").exists():
            stop_devnet(directory, timeout=10)
    finally:
        _kill_leftovers(directory)
        _LIVE.discard(directory)


def _kill_leftovers(directory: Path) -> None:
    try:
        info = read_devnet(directory)
    except Exception:
        return
    for node in info["nodes"]:
        pid = node.get("pid")
        if is_running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_all_live() -> None:
    for d in list(_LIVE):
        _kill_leftovers(d)


atexit.register(kill_all_live)


class DevnetPool:
    """Devnets of one scope: launched or registered here, all stopped when the scope ends."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nets: list[Devnet] = []
        self.dirs: list[Path] = []

    def start(self, name: str = "devnet", nodes: int = 1, *, chain_id: int = 1337,
              prepare: Callable[[Path], None] | None = None, timeout: float = 60, attempts: int = 3,
              block_time_ms: int = 200, empty_block_interval_ms: int = 1000) -> Path:
        """Create a devnet of ``nodes`` validators on free ports under BASE/NAME, let ``prepare(directory)``
        edit it, and start it; the directory of the running devnet, whose every node serves its genesis.
        An attempt that fails (a port taken between the probe and the bind, most likely) is stopped and
        another made on other ports. The devnet is stopped when the pool closes."""
        last: Exception | None = None
        for attempt in range(attempts):
            d = self.base / name / f"net{attempt}"
            create_devnet(d, nodes, free_port_block(1 if nodes == 1 else 2 * nodes), chain_id=chain_id,
                          block_time_ms=block_time_ms, empty_block_interval_ms=empty_block_interval_ms)
            self.register(d)
            try:
                if prepare is not None:
                    prepare(d)
                info = start_devnet(d, timeout=timeout)
                for node in info["nodes"]:
                    status = httpx.get(node["api"] + "/status", timeout=10).json()
                    assert status["genesis_hash"] == info["genesis_hash"], (
                        f"{node['api']} serves another network ({status['genesis_hash']})")
                return d
            except Exception as exc:
                last = exc
                shutdown_devnet(d)
        raise AssertionError(f"could not start a {nodes}-node devnet in {attempts} attempts: {last}")

    def launch(self, name: str = "devnet", nodes: int = 1, **start: Any) -> Devnet:
        """``start`` a devnet (same arguments) and open a client on it (closed when the pool closes)."""
        net = Devnet(self.start(name, nodes, **start))
        self.nets.append(net)
        return net

    def register(self, directory: Path) -> None:
        register_devnet(directory)
        self.dirs.append(directory)

    def close(self) -> None:
        """Stop every devnet of the pool, even when stopping one of them fails."""
        for net in self.nets:
            net.close()
        errors = []
        for d in self.dirs:
            try:
                shutdown_devnet(d)
            except Exception as exc:
                errors.append(f"{d}: {exc!r}")
        assert not errors, f"could not stop every devnet: {errors}"


# -- transactions ------------------------------------------------------------------------------

def anchor_data(digest: bytes) -> bytes:
    assert len(digest) == 32
    return ANCHOR_SELECTOR + digest


def sign_call(key: bytes | str, chain_id: int, nonce: int, to: str | None, data: bytes, *, gas: int = 100_000,
              value: int = 0, **extra: Any) -> bytes:
    """A raw EIP-1559 transaction signed by eth_account (fees 0: the network charges none)."""
    tx: dict[str, Any] = {"type": 2, "chainId": chain_id, "nonce": nonce, "maxFeePerGas": 0,
                          "maxPriorityFeePerGas": 0, "gas": gas, "value": value, "data": data}
    if to is not None:
        tx["to"] = to
    tx.update(extra)
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def replace_fields(raw: bytes, **changes: int) -> bytes:
    """Re-encode a type-2 transaction with some of yParity/r/s replaced (breaking its signature)."""
    assert raw[0] == 2
    fields = rlp.decode(raw[1:])
    index = {"y": 9, "r": 10, "s": 11}
    for name, value in changes.items():
        fields[index[name]] = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return b"\x02" + rlp.encode(fields)


def signature_of(raw: bytes) -> tuple[int, int, int]:
    fields = rlp.decode(raw[1:])
    return tuple(int.from_bytes(fields[i], "big") for i in (9, 10, 11))  # type: ignore[return-value]


def x_not_on_curve(start: int = 7) -> int:
    """The smallest r >= start that is no point's x coordinate on secp256k1 (recovery must fail)."""
    r = start
    while pow((r ** 3 + 7) % SECP256K1_P, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1:
        r += 1
    return r


def tx_hash_of(raw: bytes) -> str:
    return "0x" + keccak(raw).hex()
