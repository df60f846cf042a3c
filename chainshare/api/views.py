"""Ethereum-shaped JSON views of blocks, transactions, receipts and logs (shared by JSON-RPC and REST)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chainshare.ledger.chain import BlockBundle
from chainshare.ledger.txs import TYPE_EIP1559, Transaction, decode_transaction, peek_type_and_to
from chainshare.ledger.types import Block, Log, QuorumCertificate, Receipt, compute_logs_bloom

EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
ZERO32 = "0x" + "00" * 32


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def qty(n: int) -> str:
    return hex(n)


def view_qc(qc: QuorumCertificate | None) -> dict[str, Any] | None:
    if qc is None:
        return None
    return {"blockHash": hx(qc.block_hash), "height": qty(qc.height), "round": qty(qc.round),
            "signers": hx(qc.signers), "signerIndices": qc.signer_indices(), "signature": hx(qc.signature)}


def view_transaction(tx: Transaction, block: Block | None, index: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "hash": hx(tx.hash),
        "type": qty(tx.type),
        "chainId": qty(tx.chain_id),
        "nonce": qty(tx.nonce),
        "from": hx(tx.sender),
        "to": hx(tx.to) if tx.to else None,
        "value": qty(tx.value),
        "gas": qty(tx.gas_limit),
        "gasPrice": qty(tx.gas_price),
        "input": hx(tx.data),
        "v": qty(tx.v),
        "r": qty(tx.r),
        "s": qty(tx.s),
        "blockHash": hx(block.hash) if block else None,
        "blockNumber": qty(block.height) if block else None,
        "transactionIndex": qty(index) if index is not None else None,
    }
    if tx.type == TYPE_EIP1559:
        out["maxFeePerGas"] = qty(tx.max_fee_per_gas)
        out["maxPriorityFeePerGas"] = qty(tx.max_priority_fee_per_gas)
        out["accessList"] = []
        out["yParity"] = qty(tx.v)
    return out


def view_block(block: Block, chain_id: int, full: bool, tx_hashes: Sequence[bytes] | None = None) -> dict[str, Any]:
    """The block as eth_getBlockByNumber shows it; ``tx_hashes``: its transactions' hashes when the caller has
    them already (a cached ``BlockBundle``), else they are computed."""
    h = block.header
    if full:
        txs: list[Any] = [view_transaction(decode_transaction(raw, chain_id), block, i)
                          for i, raw in enumerate(block.transactions)]
    elif tx_hashes is not None:
        txs = [hx(th) for th in tx_hashes]
    else:
        from chainshare.crypto.hashing import keccak256

        txs = [hx(keccak256(raw)) for raw in block.transactions]
    size = len(block.encode())
    return {
        "number": qty(h.height),
        "hash": hx(block.hash),
        "parentHash": hx(h.parent_hash),
        "nonce": "0x0000000000000000",
        "sha3Uncles": EMPTY_UNCLES,
        "logsBloom": hx(h.logs_bloom),
        "transactionsRoot": hx(h.tx_root),
        "stateRoot": hx(h.state_root),
        "receiptsRoot": hx(h.receipts_root),
        "miner": hx(h.proposer),
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "size": qty(size),
        "gasLimit": qty(h.gas_limit),
        "gasUsed": qty(h.gas_used),
        "timestamp": qty(h.timestamp_ms // 1000),
        "baseFeePerGas": "0x0",
        "mixHash": ZERO32,
        "uncles": [],
        "transactions": txs,
        # chainshare extensions (ignored by Ethereum clients)
        "round": qty(h.round),
        "timestampMs": qty(h.timestamp_ms),
        "validatorSetHash": hx(h.validator_set_hash),
        "justifyHash": hx(h.justify_hash),
    }


def view_log(lg: Log, block: Block, tx_hash: bytes, tx_index: int, log_index: int) -> dict[str, Any]:
    return _view_log(lg, hx(block.hash), qty(block.height), hx(tx_hash), qty(tx_index), log_index)


def _view_log(lg: Log, block_hash: str, height: str, tx_hash: str, tx_index: str, log_index: int) -> dict[str, Any]:
    """``view_log`` with the block's and the transaction's fields already in their JSON form."""
    return {
        "address": hx(lg.address),
        "topics": [hx(t) for t in lg.topics],
        "data": hx(lg.data),
        "blockNumber": height,
        "blockHash": block_hash,
        "transactionHash": tx_hash,
        "transactionIndex": tx_index,
        "logIndex": qty(log_index),
        "removed": False,
    }


def view_receipt(block: Block, receipts: list[Receipt], index: int, sender: bytes, tx_hash: bytes,
                 to: bytes | None, tx_type: int, first_log: int | None = None) -> dict[str, Any]:
    r = receipts[index]
    if first_log is None:
        first_log = sum(len(x.logs) for x in receipts[:index])
    # the fields a receipt shares with its logs are put in their JSON form once
    tx_hash_hex, index_hex, block_hash, height = hx(tx_hash), qty(index), hx(block.hash), qty(block.height)
    out = {
        "transactionHash": tx_hash_hex,
        "transactionIndex": index_hex,
        "blockHash": block_hash,
        "blockNumber": height,
        "from": hx(sender),
        "to": hx(to) if to else None,
        "cumulativeGasUsed": qty(r.cumulative_gas_used),
        "gasUsed": qty(r.gas_used),
        "effectiveGasPrice": "0x0",
        "contractAddress": None,
        "logs": [_view_log(lg, block_hash, height, tx_hash_hex, index_hex, first_log + j)
                 for j, lg in enumerate(r.logs)],
        "logsBloom": hx(compute_logs_bloom(r.logs)),
        "type": qty(tx_type),
        "status": qty(r.status),
    }
    if r.status == 0 and r.output:
        from chainshare.execution.abi import decode_revert_reason

        out["revertReason"] = decode_revert_reason(r.output) or hx(r.output)
    return out


def view_bundle_receipt(bundle: BlockBundle, index: int) -> dict[str, Any]:
    """The receipt of transaction ``index`` of a finalized block, as eth_getTransactionReceipt shows it."""
    tx_type, to = peek_type_and_to(bundle.block.transactions[index])
    return view_receipt(bundle.block, bundle.receipts, index, bundle.senders[index], bundle.tx_hashes[index], to,
                        tx_type, bundle.first_log_index[index])
