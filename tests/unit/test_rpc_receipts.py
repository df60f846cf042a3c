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
