"""REST ``GET /api/v1/blocks/{id}/transactions`` (chainshare/api/rest.py) through the ASGI app: each item is the
transaction as eth_getTransactionByHash shows it and its receipt as eth_getTransactionReceipt shows it (log
indexes counted across the block, revert reasons decoded), whether the block's bundle is cached or not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare.api import app as app_module
from chainshare.api.jsonrpc import JsonRpc
from chainshare.config import NodeConfig
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("rest-block-txs-user")
VALIDATOR = validator("rest-block-txs-v1", "agency1")
BUSY, EMPTY = 1, 2  # heights: three anchors (the third anchors a digest again: it reverts), none


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    genesis = make_genesis([("agency1", [USER.address])], [VALIDATOR])
    store = MemoryStore()
    chain = Chain(genesis, VALIDATOR, store)
    chain.produce([sign_call(USER, NOTARY, call_data("anchor(bytes32)", d * 32), n)
                   for n, d in enumerate([b"\x01", b"\x02", b"\x01"])])
    chain.produce([])
    n = Node(NodeConfig(), genesis, store, ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))
    yield n
    n.close()


def _get_all(node: Node, paths: list[str]) -> list[tuple[int, Any]]:
    async def scenario() -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app_module.create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return [(r.status_code, r.json()) for r in [await client.get("/api/v1" + p) for p in paths]]

    return asyncio.run(scenario())


def _rpc_result(rpc: JsonRpc, method: str, *params: Any) -> Any:
    out = rpc.handle_body(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}))
    assert out is not None
    return orjson.loads(out)["result"]


def test_block_transactions_are_the_json_rpc_transactions_and_receipts(node: Node) -> None:
    block_hash = "0x" + node.chain.get_block(BUSY).hash.hex()
    assert node.chain.peek_bundle(BUSY) is None  # the first read derives the bundle, the later ones reuse it
    answers = _get_all(node, [f"/blocks/{BUSY}/transactions", f"/blocks/{block_hash}/transactions",
                              f"/blocks/{BUSY}/transactions", f"/blocks/{EMPTY}/transactions", "/blocks/9/transactions"])
    rpc = JsonRpc(node)
    tx_hashes = _rpc_result(rpc, "eth_getBlockByNumber", hex(BUSY), False)["transactions"]
    expected = {"height": BUSY, "items": [
        {"transaction": _rpc_result(rpc, "eth_getTransactionByHash", th),
         "receipt": _rpc_result(rpc, "eth_getTransactionReceipt", th)} for th in tx_hashes]}
    assert answers[:3] == [(200, expected)] * 3
    receipts = [item["receipt"] for item in expected["items"]]
    assert [lg["logIndex"] for r in receipts for lg in r["logs"]] == ["0x0", "0x1"]  # counted across the block
    assert [r["status"] for r in receipts] == ["0x1", "0x1", "0x0"] and "revertReason" in receipts[2]
    assert answers[3] == (200, {"height": EMPTY, "items": []})
    assert answers[4][0] == 404
