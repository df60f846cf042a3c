"""Crash safety (issue item 10): SIGKILL the node while a client streams Notary.anchor transactions;
after a restart every receipt the node had returned is still there, unchanged, the chain verifies
from genesis, and the node accepts and finalizes new transactions with the nonces that follow."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx
import pytest
from netkit import Devnet, cli_json, run_cli, tx_hash_of, wait_until

from chainshare.bench import presign_anchors
from chainshare.devnet import is_running

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("crash")]


class AnchorLoad(threading.Thread):
    """Streams pre-signed anchors to eth_sendRawTransaction (httpx, batches) and polls their receipts,
    recording every receipt the node returns, until stopped or the node goes away."""

    def __init__(self, url: str, raws: list[bytes], first_nonce: int, batch: int = 25) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.raws = raws
        self.first_nonce = first_nonce
        self.batch = batch
        self.nonce_of = {tx_hash_of(r): first_nonce + i for i, r in enumerate(raws)}
        self.sent: list[str] = []
        self.refused: list[dict[str, Any]] = []
        self.receipts: dict[str, dict[str, Any]] = {}
        self.stopping = threading.Event()
        self.ended_by: Exception | None = None

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.stopping.is_set():
                try:
                    if i < len(self.raws):
                        chunk = self.raws[i:i + self.batch]
                        answers = client.post(self.url, json=[
                            {"jsonrpc": "2.0", "id": i + k, "method": "eth_sendRawTransaction",
                             "params": ["0x" + raw.hex()]} for k, raw in enumerate(chunk)]).json()
                        for a in sorted(answers, key=lambda a: a["id"]):
                            if "result" in a:
                                self.sent.append(a["result"])
                            else:
                                self.refused.append(a["error"])
                        i += len(chunk)
                    outstanding = [h for h in self.sent if h not in self.receipts][:500]
                    if outstanding:
                        answers = client.post(self.url, json=[
                            {"jsonrpc": "2.0", "id": k, "method": "eth_getTransactionReceipt", "params": [h]}
                            for k, h in enumerate(outstanding)]).json()
                        for a in answers:
                            if a.get("result"):
                                self.receipts[outstanding[a["id"]]] = a["result"]
                    time.sleep(0.01)
                except (httpx.HTTPError, ValueError) as exc:  # the node is gone
                    self.ended_by = exc
                    return


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, Any]]:
    """Every receipt any kill round saw before its SIGKILL (re-checked after every later restart)."""
    return {}


def kill_mid_load(net: Devnet, recorded: dict[str, dict[str, Any]], kill_when: Any, count: int = 3000) -> AnchorLoad:
    if not is_running(net.pid):
        net.start()  # an earlier round failed before its restart
    first = net.nonce(tag="pending")
    raws = presign_anchors(net.key_bytes, net.chain_id, first, count, os.urandom(16))
    load = AnchorLoad(net.rpc_url, raws, first)
    pid = net.pid
    load.start()
    try:
        wait_until(lambda: kill_when(load), 60, "the moment to kill the node", interval=0.005)
        net.kill()  # SIGKILL
    finally:
        load.stopping.set()
        load.join(30)
    assert not load.is_alive()
    assert load.refused == [], load.refused[:3]
    assert load.receipts, "no receipt was returned before the kill"
    recorded.update(load.receipts)

    net.start()  # start_devnet restarts the node that is not running
    assert net.pid != pid
    return load


def check_after_restart(net: Devnet, load: AnchorLoad, recorded: dict[str, dict[str, Any]]) -> None:
    # Every receipt any client saw before a crash is still served, identical.
    for tx_hash, before in recorded.items():
        after = net.receipt(tx_hash)
        assert after is not None, f"receipt of {tx_hash} (block {before['blockNumber']}) lost by the crash"
        assert after["blockHash"] == before["blockHash"] and after["status"] == before["status"] == "0x1"
        assert after == before

    # Consistency: exactly the sent transactions below the committed nonce are included.
    committed = net.nonce()
    seen = max(load.nonce_of[h] for h in load.receipts)
    print(f"round from nonce {load.first_nonce}: sent {len(load.sent)}, receipts seen {len(load.receipts)} "
          f"(up to nonce {seen}), committed after restart: nonce {committed}")
    assert committed >= seen + 1
    assert committed <= load.first_nonce + len(load.sent)
    batch = [{"jsonrpc": "2.0", "id": k, "method": "eth_getTransactionReceipt", "params": [h]}
             for k, h in enumerate(load.sent)]
    answers = {a["id"]: a["result"] for a in net.post(batch).json()}
    for k, h in enumerate(load.sent):
        included = answers[k] is not None
        assert included == (load.nonce_of[h] < committed), (h, load.nonce_of[h], committed)

    proc = run_cli("chain", "verify", "--node", net.rpc_url, "--json", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli_json(proc)["ok"] is True

    # The node takes new transactions, with the nonces that follow the committed ones.
    assert net.nonce(tag="pending") == committed
    raws = presign_anchors(net.key_bytes, net.chain_id, committed, 3, os.urandom(16))
    for raw in raws:
        net.send_raw(raw)
    receipts = [net.wait_receipt(tx_hash_of(raw)) for raw in raws]
    assert all(r["status"] == "0x1" for r in receipts)
    assert net.nonce() == committed + 3


def test_sigkill_under_steady_load_keeps_every_returned_receipt(devnet: Devnet,
                                                                 recorded: dict[str, dict[str, Any]]) -> None:
    load = kill_mid_load(devnet, recorded, lambda load: len(load.receipts) >= 60)
    check_after_restart(devnet, load, recorded)


def test_sigkill_right_after_a_block_commit_keeps_every_returned_receipt(devnet: Devnet,
                                                                          recorded: dict[str, dict[str, Any]]) -> None:
    # Kill at the first receipt of the round: blocks are being built while hundreds of txs are in flight.
    load = kill_mid_load(devnet, recorded, lambda load: len(load.receipts) >= 1 and len(load.sent) >= 100)
    check_after_restart(devnet, load, recorded)
