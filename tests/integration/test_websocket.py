"""Websocket JSON-RPC (``ws://host:port/``) against a real 4-validator devnet (node processes, mutual TLS,
LevelDB in tmp dirs), with the clients users use:

- web3.py ``AsyncWeb3(WebSocketProvider)`` subscribes ``newHeads`` and ``logs`` (Notary ``Anchored`` events
  filtered by address and topics), gets every head in order and exactly the matching log, both identical
  to ``eth_getBlockByNumber``/``eth_getLogs`` answers, and unsubscribes; ordinary methods work on the
  same socket;
- ethers v6 ``WebSocketProvider`` (tests/ethers/ws_check.mjs) receives ``block`` events without gaps and
  a contract event filter's event, and sends its transaction over the websocket;
- subscribed on each of the four nodes, notifications cover only finalized blocks (every node holds the
  same hash at that height, with its QC), in height order, none skipped or repeated;
- bad frames and params get precise JSON-RPC errors on an open connection; a frame over the limit closes
  it with 1009; the subscription and connection limits answer -32005 and HTTP 503;
- a subscriber that stops reading is cut off with close 1008 and a reason, others keep their feed;
- a node stopped with SIGTERM closes its websockets (1012) and exits, even with a stalled client.

Limits are lowered for this devnet (environment overrides) so that they are reached quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from netkit import ANCHORED_TOPIC, Devnet, DevnetPool, anchor_data, sign_call, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chainshare.devnet import is_running

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("websocket")]

ETHERS_DIR = Path(__file__).resolve().parents[1] / "ethers"
NOTARY_ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "Notary.json"
LIMITS = {"WS_MAX_CONNECTIONS": "8", "WS_MAX_SUBSCRIPTIONS": "16", "WS_MAX_FRAME_BYTES": "65536",
          "WS_SEND_QUEUE_BYTES": "65536"}


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Iterator[Devnet]:
    """A 4-validator devnet whose nodes run with the lowered websocket limits."""
    saved = {k: os.environ.get(f"CHAINSHARE_API_{k}") for k in LIMITS}
    os.environ.update({f"CHAINSHARE_API_{k}": v for k, v in LIMITS.items()})
    try:
        net = devnet_pool.launch("ws4", nodes=4)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(f"CHAINSHARE_API_{k}", None)
            else:
                os.environ[f"CHAINSHARE_API_{k}"] = v
    yield net


def ws_url(rpc_url: str) -> str:
    return rpc_url.replace("http://", "ws://", 1) + "/"


def rpc(url: str, method: str, *params: Any) -> Any:
    body = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                      timeout=30).json()
    assert "error" not in body, body
    return body["result"]


def request(ws: ClientConnection, payload: Any) -> Any:
    """Send one frame and return the next frame that is not a subscription notification."""
    ws.send(payload if isinstance(payload, (str, bytes)) else json.dumps(payload))
    while True:
        msg = json.loads(ws.recv(timeout=30))
        if not (isinstance(msg, dict) and msg.get("method") == "eth_subscription"):
            return msg


def call(ws: ClientConnection, method: str, *params: Any, rid: int = 1) -> Any:
    return request(ws, {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)})


def metric(rpc_url: str, name: str) -> float:
    for line in httpx.get(rpc_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


# -- web3.py ---------------------------------------------------------------------------------------

def test_web3_websocket_provider_subscribes_heads_and_logs_and_unsubscribes(net: Devnet) -> None:
    from web3 import AsyncWeb3, WebSocketProvider

    notary_addr = net.contract_address("Notary")
    art = json.loads(NOTARY_ARTIFACT.read_text())
    acct = Account.from_key(net.private_key)
    digest = os.urandom(32)

    async def run() -> dict[str, Any]:
        async with AsyncWeb3(WebSocketProvider(ws_url(net.rpc_url), request_timeout=60)) as w3:
            assert await w3.eth.chain_id == net.chain_id  # an ordinary method over the socket
            heads = await w3.eth.subscribe("newHeads")
            mine = await w3.eth.subscribe("logs", {"address": notary_addr,
                                                   "topics": [ANCHORED_TOPIC, "0x" + digest.hex()]})
            others = await w3.eth.subscribe("logs", {"address": notary_addr,
                                                     "topics": [None, "0x" + os.urandom(32).hex()]})
            wrong_address = await w3.eth.subscribe("logs", {"address": "0x" + "11" * 20})
            start = await w3.eth.block_number
            notary = w3.eth.contract(address=notary_addr, abi=art["abi"])
            tx = await notary.functions.anchor(digest).build_transaction({
                "from": acct.address, "chainId": net.chain_id, "gas": 200_000, "gasPrice": 0,
                "nonce": await w3.eth.get_transaction_count(acct.address, "pending")})
            tx_hash = await w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
            got: dict[str, list[Any]] = {heads: [], mine: [], others: [], wrong_address: []}
            receipt = None

            async def collect() -> None:
                nonlocal receipt
                async for msg in w3.socket.process_subscriptions():
                    got[msg["subscription"]].append(msg["result"])
                    if receipt is None and got[mine]:
                        receipt = await w3.eth.get_transaction_receipt(tx_hash)
                    if receipt is not None and got[heads] and got[heads][-1]["number"] >= receipt["blockNumber"] + 2:
                        return

            await asyncio.wait_for(collect(), 120)
            assert receipt is not None
            blocks = {h["number"]: await w3.eth.get_block(h["number"]) for h in got[heads]}
            logs = await w3.eth.get_logs({"blockHash": receipt["blockHash"], "address": notary_addr})
            assert await w3.eth.unsubscribe(heads) is True
            unknown = await w3.provider.make_request("eth_unsubscribe", [heads])  # raw: web3 forgot it
            return {"start": start, "got": got, "ids": (heads, mine, others, wrong_address), "blocks": blocks,
                    "receipt": receipt, "logs": logs, "unknown": unknown}

    r = asyncio.run(run())
    heads, mine, others, wrong_address = r["ids"]
    numbers = [h["number"] for h in r["got"][heads]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers  # in order, no gap, once
    assert numbers[0] <= r["start"] + 1
    for head in r["got"][heads]:  # web3 formatted it as a block: the same values as eth_getBlockByNumber
        block = r["blocks"][head["number"]]
        assert head["hash"] == block["hash"] and head["parentHash"] == block["parentHash"]
        assert {k: block[k] for k in head} == dict(head)
    (log,) = r["got"][mine]
    assert dict(log) == dict(r["logs"][0]) and log["removed"] is False
    assert log["transactionHash"] == r["receipt"]["transactionHash"]
    assert log["topics"][1] == digest and log["blockNumber"] == r["receipt"]["blockNumber"]
    assert r["got"][others] == [] and r["got"][wrong_address] == []
    assert r["unknown"]["result"] is False


# -- ethers ------------------------------------------------------------------------------------------

def test_ethers_websocket_provider_gets_block_events_and_a_contract_event(net: Devnet) -> None:
    node = shutil.which("node")
    assert node is not None, "node (Node.js) is not installed: `make test` installs it with the nodejs package"
    assert (ETHERS_DIR / "node_modules" / "ethers").is_dir(), (
        "ethers is not installed: run `npm ci --prefix tests/ethers` (`make test` does)")
    proc = subprocess.run([node, str(ETHERS_DIR / "ws_check.mjs"), ws_url(net.rpc_url), net.private_key,
                           str(NOTARY_ARTIFACT)], capture_output=True, text=True, timeout=240, cwd=ETHERS_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["chainId"] == net.chain_id
    blocks = r["blocks"]
    assert blocks == list(range(blocks[0], blocks[0] + len(blocks))), blocks
    assert r["receipt"]["blockNumber"] in blocks
    (event,) = r["events"]
    assert event["blockNumber"] == r["receipt"]["blockNumber"] and event["blockHash"] == r["receipt"]["blockHash"]
    assert event["transactionHash"] == r["receipt"]["hash"] and event["index"] == r["receipt"]["index"]
    assert event["by"] == r["wallet"] and event["removed"] is False
    assert r["others"] == 0 and r["unknownUnsubscribe"] is False
    block = rpc(net.rpc_url, "eth_getBlockByNumber", hex(event["blockNumber"]), False)
    assert block["hash"] == event["blockHash"] and event["transactionHash"] in block["transactions"]


# -- finality on four nodes -------------------------------------------------------------------------------

def test_each_node_notifies_only_finalized_blocks_in_order(net: Devnet) -> None:
    urls = [n["rpc"] for n in net.info["nodes"]]
    seen: list[list[tuple[dict[str, Any], int]]] = []
    sockets = [connect(ws_url(u), open_timeout=30) for u in urls]
    try:
        for ws in sockets:
            assert call(ws, "eth_subscribe", "newHeads")["result"].startswith("0x")
        for ws, url in zip(sockets, urls, strict=True):
            heads = []
            while len(heads) < 3:
                msg = json.loads(ws.recv(timeout=60))
                head = msg["params"]["result"]
                # at delivery the node's finalized head is at least this block
                heads.append((head, int(rpc(url, "eth_blockNumber"), 16)))
            seen.append(heads)
    finally:
        for ws in sockets:
            ws.close()
    for heads in seen:
        numbers = [int(h["number"], 16) for h, _ in heads]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        for head, finalized_head in heads:
            height = int(head["number"], 16)
            assert height <= finalized_head
            for url in urls:  # every validator holds this very block as final, with its QC
                wait_until(lambda u=url, h=height: int(rpc(u, "eth_blockNumber"), 16) >= h, 60, f"{url} at {height}")
                assert rpc(url, "eth_getBlockByNumber", head["number"], False)["hash"] == head["hash"]
            qc = httpx.get(f"{net.api_url}/blocks/{height}", timeout=30).json()["qc"]
            assert qc["blockHash"] == head["hash"]


# -- bad input and limits -----------------------------------------------------------------------------------

def test_bad_frames_and_params_get_precise_errors_and_the_connection_stays_open(net: Devnet) -> None:
    with connect(ws_url(net.rpc_url), open_timeout=30) as ws:
        assert request(ws, "not json")["error"]["code"] == -32700
        assert request(ws, b"\xff\xfe")["error"]["code"] == -32700  # binary frame, not UTF-8 JSON
        assert request(ws, "{}")["error"]["code"] == -32600
        assert request(ws, "[]")["error"]["code"] == -32600
        assert request(ws, {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": "newHeads"}
                       )["error"]["code"] == -32602
        for params in (["newPendingTransactions"], [], [7], ["newHeads", {}], ["logs", {"address": "0x12"}],
                       ["logs", {"topics": ["0x" + "00" * 31]}], ["logs", {"fromBlock": "0x0"}], ["logs", "x"]):
            err = call(ws, "eth_subscribe", *params)["error"]
            assert err["code"] == -32602, (params, err)
        assert "newHeads" in call(ws, "eth_subscribe", "syncing")["error"]["message"]
        assert call(ws, "eth_unsubscribe", 5)["error"]["code"] == -32602
        assert call(ws, "eth_unsubscribe", "0x1234")["result"] is False
        assert call(ws, "eth_nope")["error"]["code"] == -32601
        batch = request(ws, [{"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["bogus"]},
                             {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId", "params": []}])
        assert batch[0]["error"]["code"] == -32602 and batch[1]["result"] == hex(net.chain_id)
        # a JSON-RPC notification (no id) gets no answer: the next answer is the next request's
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "eth_subscribe", "params": ["newHeads"]}))
        assert call(ws, "eth_chainId", rid=9) == {"jsonrpc": "2.0", "id": 9, "result": hex(net.chain_id)}

        ids = [call(ws, "eth_subscribe", "logs", {"address": net.contract_address("Notary")}, rid=i)["result"]
               for i in range(15)]  # the notification above made one: 16 is the limit
        assert len(set(ids)) == 15
        over = call(ws, "eth_subscribe", "newHeads")["error"]
        assert over["code"] == -32005 and "16 subscriptions" in over["message"]
        assert call(ws, "eth_unsubscribe", ids[0])["result"] is True
        assert call(ws, "eth_subscribe", "newHeads")["result"].startswith("0x")

        ws.send("x" * 70_000)  # over ws_max_frame_bytes (65536)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
    body = httpx.post(net.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                         "params": ["newHeads"]}, timeout=30).json()
    assert body["error"]["code"] == -32601 and "websocket" in body["error"]["message"]
    with pytest.raises(InvalidStatus) as exc:
        connect(ws_url(net.rpc_url) + "ws", open_timeout=30)
    assert exc.value.response.status_code == 404


def test_connections_over_the_limit_are_refused_with_503(net: Devnet) -> None:
    url = ws_url(net.rpc_url)
    wait_until(lambda: metric(net.rpc_url, "chainshare_ws_connections") == 0, 30, "earlier connections to end")
    held = [connect(url, open_timeout=30) for _ in range(8)]
    try:
        with pytest.raises(InvalidStatus) as exc:
            connect(url, open_timeout=30)
        assert exc.value.response.status_code == 503
        assert b"too many websocket connections (limit 8)" in exc.value.response.body
        assert call(held[-1], "eth_chainId")["result"] == hex(net.chain_id)  # the others are unaffected
        held.pop().close()

        def reconnects() -> ClientConnection | None:
            try:
                return connect(url, open_timeout=30)
            except InvalidStatus:
                return None

        held.append(wait_until(reconnects, 30, "a freed slot", interval=0.2))
    finally:
        for ws in held:
            ws.close()


def stalled_subscriber(url: str, subscriptions: int, *params: Any) -> ClientConnection:
    """A client that subscribes and then reads nothing: a 4 KiB receive buffer, a one-message queue,
    and no keepalive pings (whose unanswered pongs would make the client give up first)."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    ws = connect(url, sock=sock, max_queue=1, open_timeout=30, ping_interval=None)
    for i in range(subscriptions):
        assert call(ws, "eth_subscribe", *params, rid=i)["result"].startswith("0x")
    return ws


def send_anchors(net: Devnet, count: int) -> None:
    """``count`` Notary.anchor transactions (one Anchored log each), sent in JSON-RPC batches."""
    acct = Account.from_key(net.private_key)
    nonce = net.nonce(acct.address, "pending")
    raws = [sign_call(acct.key, net.chain_id, nonce + i, net.contract_address("Notary"), anchor_data(os.urandom(32)))
            for i in range(count)]
    for start in range(0, count, 100):
        answers = net.post([{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
                            for i, r in enumerate(raws[start:start + 100])]).json()
        assert all("result" in a for a in answers), answers[:3]


def test_a_subscriber_that_stops_reading_is_cut_off_with_a_reason(net: Devnet) -> None:
    url = ws_url(net.rpc_url)
    before = metric(net.rpc_url, "chainshare_ws_slow_consumers_total")
    with connect(url, open_timeout=30) as reader:
        call(reader, "eth_subscribe", "newHeads")
        slow = stalled_subscriber(url, 16, "logs", {"address": net.contract_address("Notary")})
        try:
            # 16 notifications of ~0.6 KiB per anchor: the kernel buffers fill (~1-3 MiB here), then the
            # node's 64 KiB queue overflows
            sent = 0
            while metric(net.rpc_url, "chainshare_ws_slow_consumers_total") <= before:
                assert sent < 3_000, f"{sent} anchors (~{sent * 10} KiB to the stalled client) and still connected"
                send_anchors(net, 100)
                sent += 100
                time.sleep(1)
            with pytest.raises(ConnectionClosed):  # reading now: what was on the wire, then the close
                while True:
                    slow.recv(timeout=30)
            close = slow.protocol.close_rcvd
            assert close is not None and close.code == 1008
            assert close.reason == "subscriber too slow: send queue over 65536 bytes"
        finally:
            slow.close()
        # the reader that keeps up still gets every head
        numbers = [int(json.loads(reader.recv(timeout=60))["params"]["result"]["number"], 16) for _ in range(3)]
        assert numbers == list(range(numbers[0], numbers[0] + 3))


def test_sigterm_closes_websockets_and_the_node_exits_despite_a_stalled_client(net: Devnet) -> None:
    node = net.info["nodes"][3]  # the last test: three validators still finalize without it
    url = ws_url(node["rpc"])
    log_path = net.dir / "nodes" / node["name"] / "node.log"
    reader = connect(url, open_timeout=30)
    stalled = stalled_subscriber(url, 4, "newHeads")
    try:
        call(reader, "eth_subscribe", "newHeads")
        reader.recv(timeout=60)
        os.kill(node["pid"], signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                reader.recv(timeout=60)
        assert reader.protocol.close_rcvd is not None and reader.protocol.close_rcvd.code == 1012
        wait_until(lambda: not is_running(node["pid"]), 60, "the node to exit")
        assert "node stopped" in log_path.read_text()
    finally:
        reader.close()
        stalled.close()
