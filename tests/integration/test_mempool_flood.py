"""One member account cannot pin memory on every validator (issue 9, item 5), on a real 4-validator
devnet (``chainshare node run`` processes, mutual TLS on 127.0.0.1, LevelDB in tmp dirs), with the
default mempool settings.

The attacker is agency3's account. Through node1's JSON-RPC it sends transactions of ~128 KiB (the
largest admitted) with nonces ahead of its next one:

- a nonce 100,000 or 1,024 ahead is refused with JSON-RPC -32003 naming ``[mempool] max_nonce_gap``;
  of the 400, those past 8 MiB are refused with -32005 naming ``[mempool] max_sender_bytes``; the 64
  admitted wait, queued, on node1 and on no other node (a transaction not yet executable is not
  gossiped), and node1's resident memory grows by no more than a generous multiple of the byte cap
  (the code before took all 400 and grew every node by ~100 MB);
- while the flood waits, an honest agency's Notary.anchor and the owner node's ``recordDelivery``
  (a real delivery: dataset published by agency1, read grant to agency2, fetched over mutual TLS) are
  finalized;
- when the attacker fills its nonce gap (its furthest queued transaction makes room for it under the
  byte cap), its queued transactions become executable, are gossiped then, and are finalized;
- the multi-validator counters: ``chainshare_transactions_finalized_total`` equals the transactions
  in the chain's blocks on every node, and the nodes' ``chainshare_blocks_produced_total`` add up to
  at most the head height (before, each node reported the head height and 0 transactions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eth_abi
import httpx
import pytest
from eth_utils import keccak
from netkit import (
    DevnetPool,
    RpcError,
    anchor_data,
    cli_json,
    run_cli,
    sign_call,
    wait_agencies_synced,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from chainshare.devnet import read_devnet

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mempool-flood")]

NODES = 4
GOVERNANCE = "0x" + "00" * 18 + "c502"
NOTARY = "0x" + "00" * 18 + "c503"
ACCESS_CONTROL = "0x" + "00" * 18 + "c505"
PROPOSE = keccak(text="propose(address,bytes,string)")[:4]
BIG = 128 * 1024 - 600  # bytes argument: the signed transaction is just under the 128 KiB limit
FLOOD = 400
GAP = 1024  # [mempool] max_nonce_gap default
SENDER_BYTES = 8 * 1024 * 1024  # [mempool] max_sender_bytes default
POLICY = 'permit (principal == Agency::"agency2", action in [Action::"read"], resource);\n'


class Net:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.info: dict[str, Any] = read_devnet(directory)
        self.http = httpx.Client(timeout=30)

    def node(self, i: int) -> dict[str, Any]:
        return dict(self.info["nodes"][i])

    def call(self, i: int, method: str, *params: Any) -> Any:
        r = self.http.post(self.node(i)["rpc"], json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                      "params": list(params)})
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        if "error" in body:
            raise RpcError(body["error"]["code"], body["error"]["message"], body["error"].get("data"))
        return body["result"]

    def batch(self, i: int, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        body = [{"jsonrpc": "2.0", "id": k, "method": m, "params": p} for k, (m, p) in enumerate(calls)]
        r = self.http.post(self.node(i)["rpc"], json=body)
        assert r.status_code == 200, r.text[:300]
        return sorted(r.json(), key=lambda x: x["id"])

    def account(self, agency: str) -> tuple[bytes, str]:
        acct = next(a for a in self.info["accounts"] if a["agency"] == agency)
        return bytes.fromhex(acct["private_key"][2:]), str(acct["address"])

    def nonce(self, address: str, tag: str = "latest", i: int = 0) -> int:
        return int(self.call(i, "eth_getTransactionCount", address, tag), 16)

    def head(self, i: int = 0) -> int:
        return int(self.call(i, "eth_blockNumber"), 16)

    def receipt(self, tx_hash: str, i: int = 0, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: self.call(i, "eth_getTransactionReceipt", tx_hash), timeout,  # type: ignore[no-any-return]
                          f"a receipt for {tx_hash} on node{i + 1}", interval=0.2)

    def rss(self, i: int) -> int:
        """Resident memory of node ``i``'s process, in bytes (from /proc)."""
        for line in Path(f"/proc/{self.node(i)['pid']}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def metrics(self, i: int) -> dict[str, float]:
        url = self.node(i)["rpc"].rstrip("/") + "/metrics"
        text = self.http.get(url).text
        return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if not s.labels}

    def cli(self, agency: str, *args: Any) -> Any:
        proc = run_cli(*args, "--devnet", self.dir, "--as", agency, "--json")
        assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout!r} {proc.stderr!r}"
        return cli_json(proc)


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Iterator[Net]:
    n = Net(devnet_pool.start("flood", NODES))
    yield n
    n.http.close()


def big_tx(key: bytes, chain_id: int, nonce: int) -> bytes:
    """A ~128 KiB Governance.propose (it would revert cheaply: the target is not a system contract)."""
    data = PROPOSE + eth_abi.encode(["address", "bytes", "string"], ["0x" + "01" * 20, b"\xab" * BIG, ""])
    return sign_call(key, chain_id, nonce, GOVERNANCE, data, gas=5_000_000)


def send(net: Net, i: int, raws: list[bytes]) -> list[dict[str, Any]]:
    """Send raw transactions to node ``i`` in JSON-RPC batches of 3 (a request body is at most 1 MiB);
    each response (result or error)."""
    out: list[dict[str, Any]] = []
    for k in range(0, len(raws), 3):
        out += net.batch(i, [("eth_sendRawTransaction", ["0x" + r.hex()]) for r in raws[k:k + 3]])
    return out


@pytest.fixture(scope="module")
def flood(net: Net) -> dict[str, Any]:
    """The attack: agency3's account sends FLOOD ~128 KiB transactions ahead of its next nonce to node1."""
    key, address = net.account("agency3")
    chain_id = int(net.info["chain_id"])
    base = net.nonce(address)
    rss_before = [net.rss(i) for i in range(NODES)]
    far = send(net, 0, [big_tx(key, chain_id, base + 100_000), big_tx(key, chain_id, base + GAP)])
    raws = [big_tx(key, chain_id, base + k) for k in range(1, FLOOD + 1)]
    assert all(len(r) <= 128 * 1024 for r in raws) and len(raws[0]) > 127 * 1024
    answers = send(net, 0, raws)
    return {"key": key, "address": address, "base": base, "far": far, "raws": raws, "answers": answers,
            "rss_before": rss_before, "rss_after": [net.rss(i) for i in range(NODES)]}


def test_future_nonces_past_the_window_or_the_byte_cap_are_refused_with_the_limit_named(
        flood: dict[str, Any]) -> None:
    for answer, ahead in zip(flood["far"], (100_000, GAP), strict=True):
        assert answer.get("error", {}).get("code") == -32003, answer
        assert f"nonce {flood['base'] + ahead} is {ahead} ahead" in answer["error"]["message"]
        assert "[mempool] max_nonce_gap" in answer["error"]["message"]
    answers = flood["answers"]
    accepted = [k + 1 for k, a in enumerate(answers) if "result" in a]
    size = len(flood["raws"][0])
    assert accepted == list(range(1, SENDER_BYTES // size + 1)), f"accepted offsets {accepted[:3]}..{accepted[-3:]}"
    for k, a in enumerate(answers[len(accepted):], start=len(accepted) + 1):
        assert a["error"]["code"] == -32005 and "[mempool] max_sender_bytes" in a["error"]["message"], (k, a)


def test_queued_flood_stays_on_the_node_it_was_sent_to_and_memory_stays_bounded(net: Net,
                                                                              flood: dict[str, Any]) -> None:
    hashes = ["0x" + keccak(r).hex() for r in flood["raws"][:2]]
    assert net.call(0, "eth_getTransactionByHash", hashes[0]) is not None  # pending on node1
    for i in range(1, NODES):
        assert [net.call(i, "eth_getTransactionByHash", h) for h in hashes] == [None, None], \
            f"a not-yet-executable transaction reached node{i + 1}"
    # node1 holds at most max_sender_bytes of them; allow 8x for request parsing, decoding copies and
    # allocator slack (the code before grew by ~100 MB on every node for this flood).
    grown = [after - before for before, after in zip(flood["rss_before"], flood["rss_after"], strict=True)]
    print(f"RSS growth per node under the flood (MiB): {[round(g / 2**20, 1) for g in grown]}")
    assert grown[0] < 8 * SENDER_BYTES, f"node1 RSS grew by {grown[0] / 2**20:.0f} MiB"
    for i in range(1, NODES):
        assert grown[i] < 4 * SENDER_BYTES, f"node{i + 1} RSS grew by {grown[i] / 2**20:.0f} MiB holding nothing"


def test_honest_transactions_and_system_records_are_finalized_under_the_flood(
        net: Net, flood: dict[str, Any], tmp_path: Path) -> None:
    chain_id = int(net.info["chain_id"])
    key2, addr2 = net.account("agency2")
    honest = sign_call(key2, chain_id, net.nonce(addr2, "pending"), NOTARY, anchor_data(b"\x42" * 32))
    (sent,) = send(net, 0, [honest])
    assert "result" in sent, sent
    # a real delivery: node1 (agency1, the owner) signs and submits recordDelivery to its own mempool
    policy = tmp_path / "agency2.cedar"
    policy.write_text(POLICY)
    data = tmp_path / "counts.csv"
    data.write_text("district,count\n" + "".join(f"d{i},{i}\n" for i in range(20)))
    ds = net.cli("agency1", "dataset", "publish", data, "--title", "Counts", "--policy", policy)["dataset_id"]
    wait_agencies_synced(net.info, "agency1", "agency2")  # agency2's node estimates the request's gas
    grant = net.cli("agency2", "access", "request", ds, "--action", "read", "--purpose", "flood test")
    assert grant["allowed"] is True
    fetched = net.cli("agency2", "dataset", "fetch", ds, "--out", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == data.read_text()
    assert net.receipt(sent["result"])["status"] == "0x1"
    record = net.receipt(fetched["record_tx"])
    assert record["status"] == "0x1" and record["to"].lower() == ACCESS_CONTROL
    # the flood is still waiting on node1, untouched
    assert net.call(0, "eth_getTransactionByHash", "0x" + keccak(flood["raws"][0]).hex()) is not None


def test_filling_the_gap_makes_the_flood_executable_gossiped_and_finalized(net: Net, flood: dict[str, Any]) -> None:
    key, address, base = flood["key"], flood["address"], flood["base"]
    chain_id = int(net.info["chain_id"])
    (gap,) = send(net, 0, [big_tx(key, chain_id, base)])
    assert "result" in gap, gap
    # under the byte cap the gap transaction took the room of the furthest queued one (nonce base + 64)
    kept = SENDER_BYTES // len(flood["raws"][0]) - 1
    last = "0x" + keccak(flood["raws"][kept - 1]).hex()  # nonce base + kept
    assert net.receipt(last, i=2, timeout=120)["blockNumber"]  # finalized, as seen from node3
    wait_until(lambda: net.nonce(address, i=3) == base + kept + 1, 60, "node4 to finalize the flood", interval=0.2)
    assert net.call(0, "eth_getTransactionByHash", "0x" + keccak(flood["raws"][kept]).hex()) is None


def test_multi_validator_counters_count_finalized_transactions_and_own_blocks(net: Net) -> None:
    produced = 0
    for i in range(NODES):
        m = net.metrics(i)
        head = net.head(i)
        counts = net.batch(i, [("eth_getBlockTransactionCountByNumber", [hex(h)]) for h in range(1, head + 1)])
        in_chain = sum(int(c["result"], 16) for c in counts)
        assert m["chainshare_transactions_finalized_total"] == in_chain > 0, (i, m, in_chain)
        assert 0 < m["chainshare_blocks_produced_total"] < head, (i, m["chainshare_blocks_produced_total"], head)
        produced += int(m["chainshare_blocks_produced_total"])
    assert produced <= max(net.head(i) for i in range(NODES))
