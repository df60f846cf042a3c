"""Websocket subscriptions (chainshare/api/subscriptions.py) over an in-memory chain: parsing of
eth_subscribe params, log filters, and the publisher's guarantees (finalized blocks in order, no gap,
no duplicate; logs in log-index order; a result encoded once per block; a slow subscriber cut off)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare.api import subscriptions as subs
from chainshare.api.jsonrpc import JsonRpc
from chainshare.api.subscriptions import (
    HEAD_FIELDS,
    LogFilter,
    NewHeads,
    SubscriptionHub,
    WsConnection,
    WsLimits,
    parse_subscription,
)
from chainshare.api.views import view_block, view_log
from chainshare.crypto.hashing import keccak256
from chainshare.errors import InvalidInput

ALICE, BOB = account("alice"), account("bob")
VAL = validator("v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [VAL])
ANCHORED = keccak256(b"Anchored(bytes32,address)")
LIMITS = WsLimits(max_connections=4, max_subscriptions=3, send_queue_bytes=64 * 1024)


def anchor(acct: Any, nonce: int, byte: int) -> bytes:
    return sign_call(acct, NOTARY, call_data("anchor(bytes32)", bytes([byte]) * 32), nonce)


def frames(conn: WsConnection) -> list[dict[str, Any]]:
    out = [orjson.loads(f) for f in conn._queue]
    conn._queue.clear()
    conn._queued = 0
    return out


@pytest.fixture
def chain() -> Chain:
    return Chain(GENESIS, VAL)


def hub_with_connection(chain: Chain, limits: WsLimits = LIMITS) -> tuple[SubscriptionHub, WsConnection]:
    hub = SubscriptionHub(chain.chain, GENESIS.chain_id, limits)
    conn = WsConnection(hub, limits)
    hub.connections.add(conn)
    return hub, conn


# -- parameters ----------------------------------------------------------------------------------

def test_subscription_params_are_parsed_or_refused_precisely() -> None:
    assert parse_subscription(["newHeads"]) == NewHeads()
    assert parse_subscription(["logs"]) == LogFilter(frozenset(), ())
    f = parse_subscription(["logs", {"address": "0x" + NOTARY.hex(), "topics": ["0x" + ANCHORED.hex(), None]}])
    assert f == LogFilter(frozenset({NOTARY}), (frozenset({ANCHORED}), None))
    bad = [[], [1], ["newPendingTransactions"], ["newHeads", {}], ["logs", []], ["logs", {"address": "0x12"}],
           ["logs", {"topics": ["0x00"]}], ["logs", {"topics": [None] * 5}], ["logs", {"fromBlock": "0x0"}],
           ["logs", {}, {}], ["logs", {"address": ["0x" + "11" * 20] * 1001}]]
    for params in bad:
        with pytest.raises(InvalidInput):
            parse_subscription(params)


def test_log_filter_matches_address_and_topic_positions(chain: Chain) -> None:
    ex = chain.produce([anchor(ALICE, 0, 7)])
    (lg,) = ex.receipts[0].logs
    digest = bytes([7]) * 32
    assert LogFilter(frozenset(), ()).is_match(lg)
    assert LogFilter(frozenset({NOTARY}), (frozenset({ANCHORED}), frozenset({digest}))).is_match(lg)
    assert LogFilter(frozenset({NOTARY, bytes(20)}), (None, frozenset({digest, bytes(32)}))).is_match(lg)
    assert not LogFilter(frozenset({bytes(20)}), ()).is_match(lg)
    assert not LogFilter(frozenset(), (None, frozenset({bytes(32)}))).is_match(lg)
    assert not LogFilter(frozenset(), (None, None, None, frozenset({bytes(32)}))).is_match(lg)  # no 4th topic


def test_subscription_requests_are_answered_by_the_connection_within_its_limit(chain: Chain) -> None:
    _, conn = hub_with_connection(chain)

    def ask(method: str, *params: Any, rid: Any = 1) -> Any:
        return conn.answer_subscription_request({"jsonrpc": "2.0", "id": rid, "method": method,
                                                 "params": list(params)})

    ids = [ask("eth_subscribe", "newHeads")["result"] for _ in range(LIMITS.max_subscriptions)]
    assert len(set(ids)) == 3 and all(i.startswith("0x") and len(i) == 34 for i in ids)
    over = ask("eth_subscribe", "logs")["error"]
    assert over["code"] == -32005 and "3 subscriptions" in over["message"]
    assert ask("eth_unsubscribe", ids[0]) == {"jsonrpc": "2.0", "id": 1, "result": True}
    assert ask("eth_unsubscribe", ids[0])["result"] is False
    assert ask("eth_subscribe", "logs", rid="a")["result"].startswith("0x")
    for params in ([], [1], [ids[1], ids[2]]):
        assert ask("eth_unsubscribe", *params)["error"]["code"] == -32602
    assert ask("eth_subscribe", "newHeads", rid=True)["error"]["code"] == -32600
    assert conn.answer_subscription_request({"jsonrpc": "1.0", "id": 1, "method": "eth_subscribe"}
                                            )["error"]["code"] == -32600
    assert conn.answer_subscription_request({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                             "params": "newHeads"})["error"]["code"] == -32602
    assert conn.answer_subscription_request({"jsonrpc": "2.0", "method": "eth_unsubscribe",
                                             "params": [ids[1]]}) is None  # a notification: no answer
    assert ids[1] not in conn.subscriptions


def test_a_frame_goes_to_the_dispatcher_unless_it_holds_subscription_requests(chain: Chain) -> None:
    _, conn = hub_with_connection(chain)
    rpc = JsonRpc(_NodeView(chain))  # type: ignore[arg-type]
    seen: list[bytes] = []

    async def answer(body: bytes) -> bytes | None:
        seen.append(body)
        return rpc.handle_body(body)

    async def frame(obj: Any) -> Any:
        out = await conn.answer_frame(obj if isinstance(obj, bytes) else orjson.dumps(obj), answer)
        return orjson.loads(out) if out is not None else None

    async def run() -> None:
        chain_id = {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId", "params": []}
        assert (await frame(chain_id))["result"] == hex(GENESIS.chain_id)
        assert seen == [orjson.dumps(chain_id)]  # passed on as it came
        assert (await frame(b"eth_subscribe{"))["error"]["code"] == -32700
        sub = await frame({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
        assert sub["result"] in conn.subscriptions and len(seen) == 2
        batch = await frame([{"jsonrpc": "2.0", "id": 3, "method": "eth_subscribe", "params": ["logs"]}, chain_id,
                             {"jsonrpc": "2.0", "id": 4, "method": "eth_unsubscribe", "params": [sub["result"]]}])
        by_id = {r["id"]: r for r in batch}
        assert set(by_id) == {2, 3, 4} and by_id[2]["result"] == hex(GENESIS.chain_id)
        assert by_id[3]["result"] in conn.subscriptions and by_id[4]["result"] is True
        assert orjson.loads(seen[-1]) == [chain_id]  # only the rest went to the dispatcher
        too_long = [{"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": ["newHeads"]}
                    for i in range(LIMITS.max_batch + 1)]
        assert (await frame(too_long))["error"]["code"] == -32005  # refused whole, as over HTTP
        assert len(conn.subscriptions) == 1

    asyncio.run(run())


# -- publishing ----------------------------------------------------------------------------------

def test_each_finalized_block_is_published_once_in_order_with_its_logs(chain: Chain) -> None:
    async def run() -> None:
        hub, conn = hub_with_connection(chain)
        heads = conn.add_subscription(NewHeads())
        logs = conn.add_subscription(LogFilter(frozenset({NOTARY}), ()))
        start = chain.chain.head_height
        chain.produce([anchor(ALICE, 0, 1), anchor(BOB, 0, 2)])
        chain.produce([])
        chain.produce([anchor(ALICE, 1, 3)])
        hub.on_finalized()
        hub.on_finalized()  # coalesced: still one pass, every block once
        for _ in range(10):
            await asyncio.sleep(0)
        got = frames(conn)
        assert hub.published == start + 3
        heights = [int(f["params"]["result"]["number"], 16) for f in got if f["params"]["subscription"] == heads]
        assert heights == [start + 1, start + 2, start + 3]
        log_entries = [f["params"]["result"] for f in got if f["params"]["subscription"] == logs]
        assert [(int(e["blockNumber"], 16), int(e["logIndex"], 16)) for e in log_entries] == [
            (start + 1, 0), (start + 1, 1), (start + 3, 0)]
        for f in got:
            assert f["jsonrpc"] == "2.0" and f["method"] == "eth_subscription" and "id" not in f
        # identical to what eth_getBlockByNumber / eth_getLogs answer
        rpc = JsonRpc(_NodeView(chain))  # type: ignore[arg-type]

        def ask(method: str, *params: Any) -> Any:
            out = rpc.handle_body(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            assert out is not None
            return orjson.loads(out)["result"]

        for f in got:
            result = f["params"]["result"]
            if f["params"]["subscription"] == heads:
                block = ask("eth_getBlockByNumber", result["number"], False)
                assert block is not None and result == {k: block[k] for k in HEAD_FIELDS}
            else:
                assert result in ask("eth_getLogs", {"blockHash": result["blockHash"]})
                assert result["removed"] is False
        hub.on_finalized()  # nothing new: nothing sent again
        await asyncio.sleep(0)
        assert frames(conn) == []

    asyncio.run(run())


def test_a_block_result_is_encoded_once_for_all_subscribers(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"block": 0, "log": 0}

    def counting_block(*a: Any) -> Any:
        calls["block"] += 1
        return view_block(*a)

    def counting_log(*a: Any) -> Any:
        calls["log"] += 1
        return view_log(*a)

    monkeypatch.setattr(subs, "view_block", counting_block)
    monkeypatch.setattr(subs, "view_log", counting_log)
    hub = SubscriptionHub(chain.chain, GENESIS.chain_id, LIMITS)
    conns = [WsConnection(hub, LIMITS) for _ in range(4)]
    for c in conns:
        hub.connections.add(c)
        c.add_subscription(NewHeads())
        c.add_subscription(LogFilter(frozenset(), ()))
    chain.produce([anchor(ALICE, 0, 1)])
    hub.publish_block(chain.chain.get_bundle(chain.chain.head_height))
    assert calls == {"block": 1, "log": 1}
    assert all(len(frames(c)) == 2 for c in conns)


def test_nothing_is_encoded_without_subscribers(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subs, "view_block", lambda *a: pytest.fail("encoded a block nobody asked for"))

    async def run() -> None:
        hub, _ = hub_with_connection(chain)
        chain.produce([])
        chain.produce([])
        hub.on_finalized()
        await asyncio.sleep(0)
        assert hub.published == chain.chain.head_height

    asyncio.run(run())


def test_a_subscriber_that_overflows_its_queue_is_closed_with_a_reason(chain: Chain) -> None:
    async def run() -> None:
        limits = WsLimits(4, 3, 64 * 1024)
        hub, slow = hub_with_connection(chain, limits)
        fast = WsConnection(hub, limits)
        hub.connections.add(fast)
        for _ in range(3):
            slow.add_subscription(NewHeads())
        fast.add_subscription(NewHeads())
        for _ in range(40):  # ~1 KB per head, 3 per block: past 64 KiB well before 40 blocks
            chain.produce([])
            hub.on_finalized()
            await asyncio.sleep(0)
            frames(fast)  # the fast one reads everything
        assert slow.done.is_set() and slow.close_code == 1008
        assert "too slow" in slow.close_reason and len(slow.close_reason.encode()) <= 123
        assert slow.subscriptions == {} and slow._queued == 0
        assert hub.stats["slow_consumers"] == 1
        assert not fast.done.is_set()

    asyncio.run(run())


class _NodeView:
    """What JsonRpc reads of a node, over the kit's chain (for comparing views)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain.chain
        self.chain_id = GENESIS.chain_id


def test_the_single_validator_producer_publishes_each_block_it_commits() -> None:
    from chainshare.api.subscriptions import attach_subscriptions
    from chainshare.config import NodeConfig
    from chainshare.ledger.store import MemoryStore
    from chainshare.node import Node, ValidatorKey

    async def run() -> None:
        node = Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VAL.secret_key, VAL.public_key))
        try:
            rpc = JsonRpc(node)
            hub = attach_subscriptions(rpc, node)
            assert {"eth_subscribe", "eth_unsubscribe"} <= set(rpc.methods)
            conn = WsConnection(hub, hub.limits)
            hub.connections.add(conn)
            sid = conn.add_subscription(NewHeads())
            producer = asyncio.create_task(node.run_producer())
            tx_hash = node.submit_raw_transaction(anchor(ALICE, 0, 1))
            for _ in range(600):
                if node.chain.get_tx_location(tx_hash) is not None and conn._queue:
                    break
                await asyncio.sleep(0.05)
            await node.stop()
            await asyncio.wait_for(producer, 30)
            got = frames(conn)
            height = node.chain.get_tx_location(tx_hash).height  # type: ignore[union-attr]
            assert [f["params"]["subscription"] for f in got] == [sid] * len(got)
            assert int(got[-1]["params"]["result"]["number"], 16) == height == node.chain.head_height
        finally:
            node.close()

    asyncio.run(run())


def test_websocket_limits_are_validated_at_start() -> None:
    from chainshare.config import load_config
    from chainshare.errors import ConfigError

    for key, value, says in (("WS_MAX_CONNECTIONS", "5000", "ws_max_connections must be 0..1024"),
                             ("WS_MAX_SUBSCRIPTIONS", "0", "ws_max_subscriptions must be 1..10000"),
                             ("WS_MAX_FRAME_BYTES", "10", "ws_max_frame_bytes must be between 1 KiB and 64 MiB"),
                             ("WS_SEND_QUEUE_BYTES", "1024", "ws_send_queue_bytes must be between 64 KiB and 1 GiB")):
        with pytest.raises(ConfigError, match=says):
            load_config(None, {"validator": {"key_file": "k.json"}}, env={f"CHAINSHARE_API_{key}": value})


def test_a_large_block_is_spread_over_loop_turns_and_blocks_stay_in_order(chain: Chain,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subs, "PUBLISH_BUDGET", 4)

    async def run() -> None:
        hub = SubscriptionHub(chain.chain, GENESIS.chain_id, LIMITS)
        conns = [WsConnection(hub, LIMITS) for _ in range(6)]
        for c in conns:
            hub.connections.add(c)
            c.add_subscription(LogFilter(frozenset({NOTARY}), ()))
        start = chain.chain.head_height
        chain.produce([anchor(ALICE, n, n) for n in range(3)])
        chain.produce([anchor(BOB, n, 10 + n) for n in range(3)])
        hub.on_finalized()
        await asyncio.sleep(0)  # one turn: at most two connections (3 logs each) served
        served = [c for c in conns if c._queue]
        assert 1 <= len(served) <= 2 and hub.published == start
        late = WsConnection(hub, LIMITS)  # subscribes while block start+1 is going out
        hub.connections.add(late)
        late.add_subscription(LogFilter(frozenset(), ()))
        for _ in range(20):
            await asyncio.sleep(0)
        assert hub.published == start + 2
        for c in conns:
            got = [(int(f["params"]["result"]["blockNumber"], 16), int(f["params"]["result"]["logIndex"], 16))
                   for f in frames(c)]
            assert got == [(start + 1, i) for i in range(3)] + [(start + 2, i) for i in range(3)]
        assert [int(f["params"]["result"]["blockNumber"], 16) for f in frames(late)] == [start + 2] * 3

    asyncio.run(run())


def test_an_address_filter_only_looks_at_that_addresses_logs(chain: Chain) -> None:
    chain.produce([anchor(ALICE, n, n) for n in range(3)])
    block = subs.BlockNotifications(chain.chain.get_bundle(chain.chain.head_height), GENESIS.chain_id)
    assert list(block.get_matching_logs(LogFilter(frozenset({bytes(20)}), ()))) == []
    assert block._log_json == {}  # nothing encoded for a filter that matches nothing
    entries = [orjson.loads(x) for x in block.get_matching_logs(LogFilter(frozenset({NOTARY, bytes(20)}), ()))]
    assert [int(e["logIndex"], 16) for e in entries] == [0, 1, 2]


def test_concurrent_handshakes_cannot_exceed_the_connection_limit(chain: Chain) -> None:
    async def run() -> list[list[str]]:
        hub = SubscriptionHub(chain.chain, GENESIS.chain_id, WsLimits(1, 3, 64 * 1024))
        rpc = JsonRpc(_NodeView(chain))  # type: ignore[arg-type]

        async def answer(body: bytes) -> bytes | None:
            return rpc.handle_body(body)

        gate = asyncio.Event()
        sent: list[list[str]] = [[], []]

        def client(i: int) -> tuple[Any, Any]:
            incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            incoming.put_nowait({"type": "websocket.connect"})

            async def receive() -> dict[str, Any]:
                return await incoming.get()

            async def send(msg: dict[str, Any]) -> None:
                sent[i].append(msg["type"])
                if msg["type"] == "websocket.accept":
                    await gate.wait()  # a slow handshake: the other one runs meanwhile
                    incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

            return receive, send

        scope = {"type": "websocket", "path": "/", "extensions": {"websocket.http.response": {}}}
        first = asyncio.create_task(hub.serve(scope, *client(0), answer))
        await asyncio.sleep(0)
        await asyncio.wait_for(hub.serve(scope, *client(1), answer), 10)  # while the first is still accepting
        gate.set()
        await asyncio.wait_for(first, 10)
        assert hub.connections == set() and hub.stats["rejected"] == 1
        return sent

    first, second = asyncio.run(run())
    assert first == ["websocket.accept"]
    assert second == ["websocket.http.response.start", "websocket.http.response.body"]
