"""eth_getBlockReceipts (chainshare/api/jsonrpc.py) on a real in-memory node, through the dispatcher as a
client's body reaches it: each receipt is eth_getTransactionReceipt's answer for that transaction, the block
is named by number, tag or hash, and the request is charged and bounded as a block read with full
transactions is (one block loaded, its answer within max_response_bytes, on the workers' CPU share)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare.api.jsonrpc import JsonRpc
from chainshare.api.limits import ApiLimits
from chainshare.config import NodeConfig
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("block-receipts-user")
VALIDATOR = validator("block-receipts-v1", "agency1")
BUSY, EMPTY, LAST = 1, 2, 3  # heights: three anchors (the third reverts), none, two anchors


def _anchor(digest: bytes, nonce: int) -> bytes:
    return sign_call(USER, NOTARY, call_data("anchor(bytes32)", digest), nonce)


@pytest.fixture(scope="module")
def node() -> Node:
    genesis = make_genesis([("agency1", [USER.address])], [VALIDATOR])
    store = MemoryStore()
    chain = Chain(genesis, VALIDATOR, store)
    chain.produce([_anchor(b"\x01" * 32, 0), _anchor(b"\x02" * 32, 1), _anchor(b"\x01" * 32, 2)])
    chain.produce([])
    chain.produce([_anchor(b"\x03" * 32, 3), _anchor(b"\x04" * 32, 4)])
    return Node(NodeConfig(), genesis, store, ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))


def _ask(rpc: JsonRpc, method: str, *params: Any) -> dict[str, Any]:
    out = rpc.handle_body(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}))
    assert out is not None
    return dict(orjson.loads(out))


def _batch(rpc: JsonRpc, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    body = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    out = rpc.handle_body(body)
    assert out is not None
    return list(orjson.loads(out))


def _tx_receipts_bytes(rpc: JsonRpc, node: Node, height: int) -> list[bytes]:
    """Each transaction's eth_getTransactionReceipt result, encoded."""
    return [orjson.dumps(_ask(rpc, "eth_getTransactionReceipt", "0x" + th.hex())["result"])
            for th in node.chain.get_bundle(height).tx_hashes]


def test_receipts_are_the_transaction_receipts_byte_for_byte_in_order(node: Node) -> None:
    rpc = JsonRpc(node)
    for height in (BUSY, LAST):
        receipts = _ask(rpc, "eth_getBlockReceipts", hex(height))["result"]
        assert [orjson.dumps(r) for r in receipts] == _tx_receipts_bytes(rpc, node, height)
        assert [int(r["transactionIndex"], 16) for r in receipts] == list(range(len(receipts)))
    busy = _ask(rpc, "eth_getBlockReceipts", hex(BUSY))["result"]
    assert [r["status"] for r in busy] == ["0x1", "0x1", "0x0"] and "revertReason" in busy[2]
    assert [lg["logIndex"] for r in busy for lg in r["logs"]] == ["0x0", "0x1"]


def test_receipts_are_the_same_from_the_bundle_cache_and_from_storage(node: Node) -> None:
    rpc = JsonRpc(node)
    cached = _ask(rpc, "eth_getBlockReceipts", hex(LAST))
    node.chain._bundles.clear()  # as for a block long past
    assert node.chain.peek_bundle(LAST) is None
    assert _ask(rpc, "eth_getBlockReceipts", hex(LAST)) == cached


def test_block_named_by_tag_by_hash_and_by_json_number(node: Node) -> None:
    rpc = JsonRpc(node)
    by_number = _ask(rpc, "eth_getBlockReceipts", hex(LAST))["result"]
    assert node.chain.head_height == LAST
    for tag in ("latest", "safe", "finalized", "pending"):  # all the finalized head here
        assert _ask(rpc, "eth_getBlockReceipts", tag)["result"] == by_number
    assert _ask(rpc, "eth_getBlockReceipts", LAST)["result"] == by_number
    block_hash = by_number[0]["blockHash"]
    assert _ask(rpc, "eth_getBlockReceipts", block_hash)["result"] == by_number
    assert _ask(rpc, "eth_getBlockReceipts", block_hash.upper().replace("0X", "0x"))["result"] == by_number


def test_a_block_without_transactions_has_no_receipts_and_an_unknown_block_is_null(node: Node) -> None:
    rpc = JsonRpc(node)
    assert _ask(rpc, "eth_getBlockReceipts", hex(EMPTY))["result"] == []
    assert _ask(rpc, "eth_getBlockReceipts", "earliest")["result"] == []  # genesis
    assert _ask(rpc, "eth_getBlockReceipts", hex(LAST + 1))["result"] is None
    assert _ask(rpc, "eth_getBlockReceipts", "0x" + "ab" * 32)["result"] is None


@pytest.mark.parametrize("params, message", [
    ([], "missing parameter 0: block"),
    ([None], "missing parameter 0: block"),
    (["latest", True], "takes 1 parameter"),
    ([True], "block number"),
    ([-1], "block number"),
    (["0xzz"], "block number"),
    (["0x" + "zz" * 32], "block hash"),
    (["0x" + "a" * 63 + " "], "block hash"),
    ([{"blockHash": "0x" + "00" * 32}], "object form"),
    ([["latest"]], "block number"),
])
def test_a_malformed_block_is_invalid_params(node: Node, params: list[Any], message: str) -> None:
    resp = _ask(JsonRpc(node), "eth_getBlockReceipts", *params)
    assert resp.get("error", {}).get("code") == -32602, resp
    assert message in resp["error"]["message"]


def test_a_block_receipts_read_is_charged_one_block_like_a_full_block_read(node: Node) -> None:
    rpc = JsonRpc(node, ApiLimits(max_request_blocks=1, max_batch_blocks=3))
    out = _batch(rpc, [("eth_getBlockReceipts", [hex(BUSY)]), ("eth_getBlockByNumber", [hex(BUSY), True]),
                       ("eth_getBlockReceipts", [hex(LAST + 5)]),  # no block: nothing loaded, nothing charged
                       ("eth_getBlockReceipts", [hex(LAST)]), ("eth_getBlockReceipts", [hex(LAST)]),
                       ("eth_getTransactionReceipt", ["0x" + node.chain.get_bundle(LAST).tx_hashes[0].hex()])])
    assert len(out[0]["result"]) == 3 and out[1]["result"]["number"] == hex(BUSY)
    assert out[2]["result"] is None and len(out[3]["result"]) == 2
    for refused in out[4:]:
        assert refused["error"]["code"] == -32005 and refused["error"]["data"]["limit"] == "max_batch_blocks"
    assert rpc.counts["eth_getBlockReceipts"] == 4


def test_block_receipts_answers_never_exceed_the_response_byte_budget(node: Node) -> None:
    one = len(orjson.dumps(_ask(JsonRpc(node), "eth_getBlockReceipts", hex(BUSY))))
    limit = 3 * one
    rpc = JsonRpc(node, ApiLimits(max_response_bytes=limit))
    out = _batch(rpc, [("eth_getBlockReceipts", [hex(BUSY)])] * 10)
    served = [r for r in out if "result" in r]
    refused = [r for r in out if "error" in r]
    assert len(out) == 10 and served and refused
    assert {r["error"]["data"]["limit"] for r in refused} == {"max_response_bytes"}
    assert sum(len(orjson.dumps(r)) + 1 for r in served) <= limit
    alone = JsonRpc(node, ApiLimits(max_response_bytes=one // 2))
    assert _ask(alone, "eth_getBlockReceipts", hex(BUSY))["error"]["data"]["limit"] == "max_response_bytes"


def test_a_block_receipts_request_runs_on_the_workers_not_the_light_thread() -> None:
    """Its work is that of up to max_block_txs receipt reads: as a batch of eth_getTransactionReceipt, it runs
    under the workers' CPU share (api.max_cpu_ms_per_s), which the light thread does not have."""
    assert not JsonRpc.is_light_request({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockReceipts",
                                         "params": ["latest"]})
    assert JsonRpc.is_light_request({"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                                     "params": ["0x" + "00" * 32]})
