"""eth_getTransactionReceipt answers from the chain: a transaction of a block that is committed is found
even while it is still in the mempool (it leaves the mempool when the mempool is pruned, after the
commit), so a client that saw the block never reads null for it; a pending one reads null."""

from __future__ import annotations

from chainkit import NOTARY, account, call_data, make_genesis, sign_call, validator

from chainshare.api.jsonrpc import JsonRpc
from chainshare.config import NodeConfig
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("receipt-user")
VALIDATOR = validator("receipt-v1", "agency1")
GENESIS = make_genesis([("agency1", [USER.address])], [VALIDATOR])


def _receipt(rpc: JsonRpc, tx_hash: bytes) -> object:
    req = {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": ["0x" + tx_hash.hex()]}
    answer = rpc.handle_one(req)
    assert answer is not None and "result" in answer, answer
    return answer["result"]


def test_a_committed_transaction_still_in_the_mempool_has_its_receipt() -> None:
    node = Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))
    rpc = JsonRpc(node)
    raw = sign_call(USER, NOTARY, call_data("anchor(bytes32)", b"\x42" * 32), 0)
    tx_hash = node.submit_raw_transaction(raw, gossip=False)
    assert _receipt(rpc, tx_hash) is None  # pending
    tx = node.mempool.get(tx_hash)
    assert tx is not None
    executed, _ = node._propose_and_commit([tx])  # the producer prunes the mempool only after this
    assert node.mempool.get(tx_hash) is not None and node.chain.head_height == executed.block.height
    receipt = _receipt(rpc, tx_hash)
    assert isinstance(receipt, dict)
    assert receipt["status"] == "0x1" and receipt["blockNumber"] == hex(executed.block.height)
    assert receipt["transactionHash"] == "0x" + tx_hash.hex()


def test_a_block_lists_the_same_transaction_hashes_from_the_bundle_cache_and_from_storage() -> None:
    """eth_getBlockByNumber of a just-committed block takes its hashes from the cached bundle (derived at
    execution); an older block, out of that cache, hashes its stored transactions: the same answer."""
    from chainshare.crypto.hashing import keccak256

    node = Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))
    rpc = JsonRpc(node)
    raws = [sign_call(USER, NOTARY, call_data("anchor(bytes32)", bytes([n]) * 32), n) for n in range(3)]
    for raw in raws:
        node.submit_raw_transaction(raw, gossip=False)
    txs = [tx for tx in (node.mempool.get(keccak256(raw)) for raw in raws) if tx is not None]
    height = node._propose_and_commit(txs)[0].block.height
    req = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": [hex(height), False]}
    assert node.chain.peek_bundle(height) is not None
    cached = rpc.handle_one(req)
    node.chain._bundles.clear()  # as for a block long past
    assert node.chain.peek_bundle(height) is None
    stored = rpc.handle_one(req)
    assert cached is not None and stored is not None
    assert cached["result"]["transactions"] == ["0x" + keccak256(raw).hex() for raw in raws]
    assert cached == stored
