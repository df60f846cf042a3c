"""The JSON-RPC abuse of issue 9 item 4, against real node processes (a 4-validator devnet).

A client sends, in a loop, the batches that stalled the node: 1000 x ``eth_feeHistory(0x400)`` and
1000 x ``eth_getLogs(0..latest)`` (each ~100 KB). Before the fix a node answered them in full on the
event loop that runs consensus (seconds of stall, replies of many MB); now every batch is cut at
its work budget with -32005 entries naming the limit, the client is throttled with HTTP 429 once
it has used its share of the API's CPU time, and meanwhile /healthz answers, consensus keeps
finalizing blocks and an honest client's transaction is finalized. No timing is asserted here:
latency figures belong to ``chainshare bench abuse``.

The nodes trust 127.0.0.1 as a reverse proxy, so the attacker and the honest client are told apart
by X-Forwarded-For as they would be behind a real proxy; the per-client CPU share is lowered so
the throttle is reached within the test.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_utils import keccak
from netkit import Devnet, DevnetPool, anchor_data, sign_call, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("rpc_abuse")]

ATTACKER = {"x-forwarded-for": "203.0.113.66", "content-type": "application/json"}
HONEST = {"x-forwarded-for": "203.0.113.7"}
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # the default [api] max_response_bytes
ENV = {"CHAINSHARE_API_TRUSTED_PROXIES": "127.0.0.1", "CHAINSHARE_API_RATE_LIMIT_CPU_MS": "100",
       "CHAINSHARE_API_RATE_LIMIT_BURST_MS": "500"}


def _batch(method: str, params: list[Any], n: int = 1000) -> bytes:
    return json.dumps([{"jsonrpc": "2.0", "id": i, "method": method, "params": params} for i in range(n)]).encode()


FEE_HISTORY = _batch("eth_feeHistory", ["0x400", "latest", []])
GET_LOGS = _batch("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Iterator[Devnet]:
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # inherited by the node processes
    try:
        net = devnet_pool.launch("abuse", nodes=4)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # A chain with logs: 400 Notary.anchor transactions, one log each.
    key = net.key_bytes
    raws = [sign_call(key, net.chain_id, i, net.contract_address("Notary"), anchor_data(keccak(b"abuse%d" % i)))
            for i in range(400)]
    body = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
            for i, r in enumerate(raws)]
    r = net.http.post(net.rpc_url, json=body, headers=HONEST, timeout=120)
    assert all("result" in item for item in r.json()), r.text[:500]
    net.wait_receipt("0x" + keccak(raws[-1]).hex(), timeout=120)
    yield net


def _rpc(net: Devnet, url: str, method: str, *params: Any) -> Any:
    r = net.http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                      headers=HONEST, timeout=60)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert "error" not in body, body
    return body["result"]


def test_heavy_batches_in_a_loop_are_cut_at_their_budgets_and_consensus_goes_on(net: Devnet) -> None:
    urls = [n["rpc"] for n in net.info["nodes"]]
    stop = threading.Event()
    seen: dict[str, Any] = {"batches": 0, "served": 0, "limits": set(), "http_429": 0, "bad": [],
                            "max_bytes": 0, "retry_after": set()}

    def attack() -> None:
        with httpx.Client(timeout=120) as c:
            i = 0
            while not stop.is_set():
                url, body = urls[i % len(urls)], (FEE_HISTORY, GET_LOGS)[i % 2]
                i += 1
                r = c.post(url, content=body, headers=ATTACKER)
                seen["batches"] += 1
                seen["max_bytes"] = max(seen["max_bytes"], len(r.content))
                if r.status_code == 429:
                    seen["http_429"] += 1
                    seen["retry_after"].add(r.headers.get("retry-after"))
                    err = r.json()["error"]
                    if err["code"] != -32005 or "rate limit exceeded" not in err["message"]:
                        seen["bad"].append(err)
                    time.sleep(0.05)
                    continue
                if r.status_code != 200:
                    seen["bad"].append((r.status_code, r.text[:200]))
                    continue
                for item in r.json():
                    if "result" in item:
                        seen["served"] += 1
                    elif item["error"]["code"] == -32005 and item["error"]["message"].startswith("limit exceeded"):
                        seen["limits"].add(item["error"]["data"]["limit"])
                    else:
                        seen["bad"].append(item["error"])

    attacker = threading.Thread(target=attack, daemon=True)
    head0 = net.head()
    attacker.start()
    try:
        # While the attack runs: every node answers /healthz, blocks keep being finalized and an
        # honest client's transaction (sent to the attacked node) is finalized.
        wait_until(lambda: seen["batches"] >= 4, 120, "the attacker's first batches to be answered")
        for url in urls:
            assert httpx.get(url + "/healthz", timeout=30).json()["status"] == "ok"
        raw = sign_call(net.key_bytes, net.chain_id, 400, net.contract_address("Notary"), anchor_data(keccak(b"x")))
        tx_hash = _rpc(net, urls[0], "eth_sendRawTransaction", "0x" + raw.hex())
        receipt = wait_until(lambda: _rpc(net, urls[0], "eth_getTransactionReceipt", tx_hash), 120,
                             "the honest transaction's receipt during the attack")
        assert receipt["status"] == "0x1"
        wait_until(lambda: int(_rpc(net, urls[1], "eth_blockNumber"), 16) >= head0 + 5, 120,
                   "five more finalized blocks during the attack")
        wait_until(lambda: seen["http_429"] > 0, 120, "the attacker to be throttled")
        assert attacker.is_alive()  # the attack was still going on all along
    finally:
        stop.set()
        attacker.join(180)
    assert not seen["bad"], seen["bad"][:3]
    # Cut at the budgets (before the fix: every one of the 1000 entries answered, in full).
    assert {"max_batch_blocks", "max_batch_logs"} <= seen["limits"], seen["limits"]
    assert seen["served"] > 0
    assert seen["max_bytes"] <= MAX_RESPONSE_BYTES
    assert seen["retry_after"] and all(v and int(v) >= 1 for v in seen["retry_after"])


def test_a_throttled_client_is_refused_on_rest_too_and_served_again_later(net: Devnet) -> None:
    url = net.rpc_url
    with httpx.Client(timeout=120) as c:
        r = None
        for _ in range(100):  # spend the attacker's share
            r = c.post(url, content=GET_LOGS, headers=ATTACKER)
            if r.status_code == 429:
                break
        assert r is not None and r.status_code == 429
        rest = c.get(net.api_url + "/events", headers=ATTACKER)
        assert rest.status_code == 429
        assert rest.json()["error"]["type"] == "RateLimited" and int(rest.headers["retry-after"]) >= 1
        # The honest client is not affected, on either API.
        assert c.get(net.api_url + "/events", params={"limit": 5}, headers=HONEST).status_code == 200
        assert _rpc(net, url, "eth_chainId") == hex(net.chain_id)
        wait = float(r.json()["error"]["data"]["retryAfter"])
        time.sleep(wait + 0.5)
        again = c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
                       headers=ATTACKER)
        assert again.status_code == 200 and "result" in again.json()


def test_single_requests_over_budget_get_a_precise_error(net: Devnet) -> None:
    membership = net.contract_address("Membership")
    governance = net.contract_address("Governance")
    r = net.http.post(net.rpc_url, headers=HONEST, json={"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs",
                                                         "params": [{"fromBlock": "0x0", "toBlock": "0x5f5e100"}]})
    # The range is cut at the head: an unfiltered range the chain does not reach is fine...
    assert r.status_code == 200 and isinstance(r.json()["result"], list)
    # ...a call "from" a system contract is not (no key signs for one).
    data = "0x" + keccak(text="validatorsAt(uint256)")[:4].hex() + "00" * 31 + "01"
    r = net.http.post(net.rpc_url, headers=HONEST, json={"jsonrpc": "2.0", "id": 8, "method": "eth_call", "params": [
        {"from": governance, "to": membership, "data": data, "gas": hex(10**18)}, "latest"]})
    err = r.json()["error"]
    assert err["code"] == -32602 and "Governance system contract" in err["message"]
    # Any gas is accepted and capped at the block gas limit.
    r = net.http.post(net.rpc_url, headers=HONEST, json={"jsonrpc": "2.0", "id": 9, "method": "eth_call", "params": [
        {"to": membership, "data": data, "gas": hex(10**18)}, "latest"]})
    assert "result" in r.json(), r.text
    # An oversized batch is refused whole, with the limit named.
    r = net.http.post(net.rpc_url, headers=HONEST, content=_batch("eth_chainId", [], 1001),
                      )
    err = r.json()["error"]
    assert err["code"] == -32005 and "api.max_batch = 1000" in err["message"]


def test_websocket_frames_are_charged_and_throttled_like_http_bodies(net: Devnet) -> None:
    """The same heavy batches sent as websocket frames are cut at their budgets and, once the client
    has spent its share, each request of a frame gets -32005 by its id (a websocket has no HTTP 429);
    the honest client is unaffected and the throttled one is served again after ``retryAfter``."""
    from websockets.sync.client import connect

    ws_url = net.rpc_url.replace("http://", "ws://", 1) + "/"
    attacker = {"x-forwarded-for": "203.0.113.99"}  # a client of its own: its bucket starts full
    with connect(ws_url, additional_headers=attacker, max_size=64 * 1024 * 1024, open_timeout=30) as ws:
        answer: Any = None
        for _ in range(100):
            ws.send(GET_LOGS)
            answer = json.loads(ws.recv(timeout=120))
            assert isinstance(answer, list) and [a["id"] for a in answer] == list(range(1000))
            if all(a.get("error", {}).get("code") == -32005 and "retryAfter" in a["error"].get("data", {})
                   for a in answer):
                break
            assert any(a.get("error", {}).get("code") == -32005 for a in answer), "no budget cut over the websocket"
        else:
            raise AssertionError(f"the websocket client was never throttled: {str(answer)[:300]}")
        assert _rpc(net, net.rpc_url, "eth_chainId") == hex(net.chain_id)  # the honest client is served
        time.sleep(float(answer[0]["error"]["data"]["retryAfter"]) + 0.5)
        ws.send(json.dumps({"jsonrpc": "2.0", "id": "again", "method": "eth_blockNumber", "params": []}))
        again = json.loads(ws.recv(timeout=60))
        assert again["id"] == "again" and "result" in again, again
