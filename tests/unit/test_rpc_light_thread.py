"""Which API thread pool answers a single JSON-RPC read (``JsonRpc.is_light_request``), through the ASGI app as
a client's body reaches it: a block read with full transactions decodes and renders up to max_block_txs
transactions, so it runs on the workers under api.max_cpu_ms_per_s; the hash-only form and the one-item reads
stay on the light thread (no CPU share); the answers are those of the dispatcher, whichever pool runs it."""

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
from chainshare.api.limits import ApiWorkers
from chainshare.config import NodeConfig
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("light-thread-user")
VALIDATOR = validator("light-thread-v1", "agency1")


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    genesis = make_genesis([("agency1", [USER.address])], [VALIDATOR])
    store = MemoryStore()
    chain = Chain(genesis, VALIDATOR, store)
    chain.produce([sign_call(USER, NOTARY, call_data("anchor(bytes32)", bytes([n + 1]) * 32), n) for n in range(3)])
    n = Node(NodeConfig(), genesis, store, ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))
    yield n
    n.close()


def _req(method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}


def _answer_through_app(node: Node, bodies: list[dict[str, Any]],
                        monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, bytes]]:
    """Each body's answer through the app, with the CPU share (ms/s) of the pool that ran it (0: no share)."""
    pools: list[float] = []
    real_run = ApiWorkers.run

    async def recording_run(self: ApiWorkers, fn: Any, *args: Any) -> Any:
        pools.append(self.cpu_rate)
        return await real_run(self, fn, *args)

    monkeypatch.setattr(ApiWorkers, "run", recording_run)

    async def scenario() -> list[tuple[float, bytes]]:
        transport = httpx.ASGITransport(app=app_module.create_app(node))
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            for body in bodies:
                r = await client.post("/", content=orjson.dumps(body), headers={"content-type": "application/json"})
                assert len(pools) == len(out) + 1, "each read runs on exactly one pool"
                out.append((pools[-1], r.content))
        return out

    return asyncio.run(scenario())


def test_full_transaction_block_reads_run_under_the_cpu_share_and_hash_only_reads_stay_light(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    block_hash = "0x" + node.chain.get_block(1).hash.hex()
    tx_hash = "0x" + node.chain.get_bundle(1).tx_hashes[0].hex()
    heavy = [_req("eth_getBlockByNumber", "0x1", True), _req("eth_getBlockByHash", block_hash, True),
             _req("eth_getBlockByNumber", "latest", "yes")]  # a malformed flag is not let onto the light thread
    light = [_req("eth_getBlockByNumber", "0x1", False), _req("eth_getBlockByHash", block_hash, False),
             _req("eth_getBlockByNumber", "0x1"), _req("eth_getBlockByNumber", "0x1", None),
             _req("eth_getTransactionByHash", tx_hash), _req("eth_getTransactionReceipt", tx_hash)]
    cpu_share = node.cfg.api.max_cpu_ms_per_s
    assert cpu_share > 0
    answers = _answer_through_app(node, heavy + light, monkeypatch)
    assert [pool for pool, _ in answers] == [cpu_share] * len(heavy) + [0.0] * len(light)
    rpc = JsonRpc(node)
    assert [body for _, body in answers] == [rpc.handle_body(orjson.dumps(b)) for b in heavy + light]
    full, hashes = orjson.loads(answers[0][1])["result"], orjson.loads(answers[len(heavy)][1])["result"]
    assert [tx["hash"] for tx in full["transactions"]] == hashes["transactions"] == [
        "0x" + th.hex() for th in node.chain.get_bundle(1).tx_hashes]
    assert "error" in orjson.loads(answers[2][1])


def test_is_light_request_keeps_block_reads_light_only_without_full_transactions() -> None:
    for method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
        assert JsonRpc.is_light_request(_req(method, "0x1", False))
        assert JsonRpc.is_light_request(_req(method, "0x1"))
        assert JsonRpc.is_light_request({"jsonrpc": "2.0", "id": 1, "method": method})
        assert not JsonRpc.is_light_request(_req(method, "0x1", True))
        assert not JsonRpc.is_light_request(_req(method, "0x1", 1))
        assert not JsonRpc.is_light_request({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"a": 1}})
        assert not JsonRpc.is_light_request([_req(method, "0x1", False)])  # a batch: workers
