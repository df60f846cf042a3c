"""Gray upgrade on a real 4-node devnet (real node processes over mutual TLS, LevelDB, web3.py).

The four validators start as the previous release: the only difference is the set of protocol versions they
support, gated at one place (``CHAINSHARE_SUPPORTED_VERSIONS=1``, test-only). Under light load (a stream of
Notary anchors) three are upgraded one by one (rolling restarts, each catching up before the next); node 4
stays old. Governance schedules ``upgrade(2, H)`` by an executed proposal. Then:
- the old node stops cleanly before block H: its process stays up, its log names the version it needs,
  its /healthz answers 503 ``upgrade_required`` with that version, it holds no block >= H;
- the three upgraded validators (n - f) keep finalizing past H, and from H on the same call is priced by
  v2's rules (stored words cost more), before H by v1's;
- restarted with the new release (rolling), the old node continues from where it stopped and catches up;
- every load transaction acknowledged gets a receipt (none lost), the four chains are identical, and
  `chainshare chain verify` over the upgraded node passes across the boundary, reporting v1 for blocks < H
  and v2 from H (tests/unit/test_forks.py shows it fails if old blocks are re-executed under v2).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from eth_account import Account
from netkit import (
    DevnetPool,
    RpcError,
    anchor_data,
    cli_json,
    load_artifact,
    run_cli,
    sign_call,
    tx_hash_of,
    wait_until,
)
from test_consensus_network import Network, launch

# ~2-2.5 min on a loaded 2-core machine (waiting for H and the catch-up): above the suite's 300 s default only under
# heavy load, hence the wider per-test timeout
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("gray_upgrade"), pytest.mark.timeout(600)]

OLD = 3  # the node that runs the previous release
LONG = "x" * 600  # a proposal description of ~19 words: its storage price differs between v1 and v2
DEADLINE = 180.0
SUPPORTED = "CHAINSHARE_SUPPORTED_VERSIONS"  # the test-only gate of chainshare.execution.forks


class Load:
    """Notary anchors from one account, every ~150 ms, until stopped; remembers every acknowledged
    transaction. A client of a rolling upgrade: when the node it talks to is down (restarting), it sends
    the same signed transaction to the next node; ``errors`` are transactions no node accepted."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.key = net.account(1)["private_key"]
        self.sent: dict[str, bytes] = {}  # hash -> raw, in nonce order
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        nonce = int(self.net.rpc(1, "eth_getTransactionCount", Account.from_key(self.key).address, "pending"), 16)
        notary = load_artifact("Notary")["address"]
        while not self._stop.is_set():
            raw = sign_call(self.key, self.net.chain_id, nonce, notary, anchor_data(os.urandom(32)))
            if self._send(raw):
                self.sent[tx_hash_of(raw)] = raw
                nonce += 1
            else:
                self.errors.append(f"no node accepted nonce {nonce}")
            self._stop.wait(0.15)

    def resend_unreceipted(self) -> int:
        """Send again, unchanged, what has no receipt yet (as a client does after a node it used went
        down: a SIGTERM can cut off a transaction its node admitted but had not yet gossiped)."""
        missing = [raw for tx, raw in self.sent.items() if not self.net.rpc(0, "eth_getTransactionReceipt", tx)]
        for raw in missing:
            self._send(raw)
        return len(missing)

    def _send(self, raw: bytes) -> bool:
        for i in (1, 2, 0, 3):
            try:
                self.net.rpc(i, "eth_sendRawTransaction", "0x" + raw.hex())
                return True
            except httpx.HTTPError:
                continue  # that node is restarting
            except RpcError as exc:
                if "already" in exc.message:
                    return True  # a node that went down after admitting it had gossiped it
                continue
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Agencies:
    """The devnet's agencies' accounts sending Governance calls (web3.py contract objects for encoding)."""

    def __init__(self, net: Network) -> None:
        from web3 import Web3

        self.net = net
        self.w3 = Web3()
        art = load_artifact("Governance")
        self.gov = self.w3.eth.contract(address=art["address"], abi=art["abi"])

    def send(self, agency: int, fn: Any, via: int = 0, gas: int = 600_000) -> dict[str, Any]:
        acct = self.net.account(agency)
        nonce = int(self.net.rpc(via, "eth_getTransactionCount", acct["address"], "pending"), 16)
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        raw = sign_call(acct["private_key"], self.net.chain_id, nonce, self.gov.address, data, gas=gas)
        tx = self.net.rpc(via, "eth_sendRawTransaction", "0x" + raw.hex())
        return wait_until(lambda: self.net.rpc(via, "eth_getTransactionReceipt", tx), 60,  # type: ignore[no-any-return]
                          f"a receipt for {tx}", interval=0.1)

    def schedule_upgrade(self, version: int, window: int) -> int:
        """Governance schedules protocol ``version`` from ``window`` blocks after the proposal on; the
        activation height. When the votes took longer than the window (a loaded machine), the execution
        reverts, naming the height that passed, and nothing is scheduled: proposed again, twice the window."""
        for _ in range(4):
            activation = self.net.wait_heads([0], lambda h: True, 30, "node 0 answers")[0] + window
            inner = bytes.fromhex(self.gov.encode_abi("upgrade", [version, activation])[2:])
            r = self.send(0, self.gov.functions.propose(self.gov.address, inner, f"protocol v{version} at {activation}"))
            assert r["status"] == "0x1", r
            pid = int(r["logs"][0]["topics"][1], 16)
            # 3 of 4 agencies (2/3 rounded up); agency 1's account is the load's, agency 3's node is the old one
            votes = [threading.Thread(target=self._vote, args=(a, pid)) for a in (0, 2, 3)]
            for t in votes:
                t.start()
            for t in votes:
                t.join(90)
            r = self.send(0, self.gov.functions.execute(pid))
            if r["status"] == "0x1":
                return activation
            assert "activation height must be after this block" in str(r.get("revertReason")), r
            window *= 2
        raise AssertionError(f"the votes did not fit in a window of {window // 2} blocks")

    def _vote(self, agency: int, pid: int) -> None:
        r = self.send(agency, self.gov.functions.vote(pid, True), via=agency % OLD)
        assert r["status"] == "0x1", r

    def propose_long(self) -> dict[str, Any]:
        """A proposal with a long description (its record takes many storage words), by agency 2."""
        r = self.send(2, self.gov.functions.propose(self.gov.address, b"", LONG), via=2)
        assert r["status"] == "0x1", r
        return r


def healthz(net: Network, i: int) -> tuple[int, dict[str, Any]]:
    r = net.http.get(net.rpc_url(i).rstrip("/") + "/healthz")
    return r.status_code, r.json()


def restart(net: Network, i: int, supported: str | None = None) -> None:
    """Stop node i cleanly (SIGTERM) and start it again on its data, running the protocol versions
    ``supported`` (None: all this release implements)."""
    net.stop(i, signal.SIGTERM)
    with mock.patch.dict(os.environ):
        os.environ.pop(SUPPORTED, None)
        if supported is not None:
            os.environ[SUPPORTED] = supported
        net.start_one(i)


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Iterator[Network]:
    with mock.patch.dict(os.environ, {SUPPORTED: "1"}):
        network = launch(devnet_pool, "gray")  # four nodes of "the previous release"
    try:
        yield network
    finally:
        network.close()


def test_gray_upgrade_old_node_halts_cleanly_the_rest_finalize_and_it_rejoins_upgraded(net: Network) -> None:
    load = Load(net)
    load.start()
    agencies = Agencies(net)
    try:
        # Rolling upgrade of three validators under load, one at a time: each catches up before the next.
        for i in range(OLD):
            restart(net, i)
            top = max(h for h in net.heads([j for j in range(net.n) if j != i]).values() if h is not None)
            net.wait_heads([i], lambda hs, top=top: hs[0] >= top, DEADLINE, f"{net.name(i)} to catch up")
        assert healthz(net, OLD)[0] == 200  # nothing needs v2 yet: the old node is healthy
        h0 = net.wait_heads([0], lambda h: True, 30, "node 0 answers")[0]
        time.sleep(3)
        h1 = net.wait_heads([0], lambda h: True, 30, "node 0 answers")[0]
        rate = max(1.0, (h1 - h0) / 3)
        activation = agencies.schedule_upgrade(2, max(20, int(rate * 15)))  # ~15 s: the votes take ~3 s
        before = agencies.propose_long()  # priced by v1 (the same call as `after`: both find the count set)
        head = net.wait_heads([0], lambda h: True, 30, "node 0 answers")[0]
        assert head < activation - 1, f"the upgrade was executed at {head}, too late for activation {activation}"

        # The old node stops before block H, stays up, and says what it needs.
        _, body = wait_until(lambda: (s := healthz(net, OLD))[0] == 503 and s, DEADLINE,
                                  "the old node to report upgrade_required", interval=0.5)
        assert body["status"] == "upgrade_required" and body["version"] == 2
        assert body["activation_height"] == activation and body["supported_versions"] == [1]
        assert net.running(OLD)
        halted = [r for r in net.log_lines(OLD) if str(r.get("msg", "")).startswith("protocol upgrade required")]
        assert halted and halted[0]["version"] == 2 and halted[0]["activation_height"] == activation, halted

        # The three upgraded validators keep finalizing past H under load; the old node holds nothing >= H.
        net.wait_heads([0, 1, 2], lambda hs: min(hs) >= activation + 15, DEADLINE, "finality past H without node 3")
        net.wait_heads([OLD], lambda hs: hs[0] == activation - 1, 60, "the old node to hold every block below H")
        assert net.rpc(OLD, "eth_getBlockByNumber", hex(activation), False) is None
        assert net.running(OLD) and healthz(net, OLD)[0] == 503
        after = agencies.propose_long()  # priced by v2
        extra = int(after["gasUsed"], 16) - int(before["gasUsed"], 16)
        assert int(after["blockNumber"], 16) >= activation > int(before["blockNumber"], 16)
        assert extra > 0 and extra % (2_500 - 3) == 0, (before["gasUsed"], after["gasUsed"])

        # Rolling upgrade: the old node restarts with the new release and continues from where it stopped.
        restart(net, OLD)
        target = net.wait_heads([0], lambda h: True, 30, "node 0 answers")[0]
        net.wait_heads([OLD], lambda hs: hs[0] >= target, DEADLINE, "the upgraded node to catch up")
        assert healthz(net, OLD)[0] == 200
    finally:
        load.stop()

    # Nothing acknowledged is lost, no fork, and the chain verifies across the boundary.
    assert load.sent and not load.errors, load.errors[:3]
    resent = load.resend_unreceipted()
    for tx in load.sent:
        wait_until(lambda tx=tx: net.rpc(0, "eth_getTransactionReceipt", tx), 60, f"a receipt for {tx} ({resent} resent)")
    final = max(int(net.rpc(0, "eth_getTransactionReceipt", tx)["blockNumber"], 16) for tx in load.sent)
    net.wait_heads(list(range(4)), lambda hs: min(hs) >= final, DEADLINE, "all nodes past the last load block")
    net.assert_same_chain(list(range(4)))
    proc = run_cli("chain", "verify", "--node", net.rpc_url(OLD), "--json", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = cli_json(proc)
    versions = report["protocol_versions"]
    assert versions[0] == {"version": 1, "first_height": 0, "last_height": activation - 1}, versions
    assert versions[1]["version"] == 2 and versions[1]["first_height"] == activation, versions
