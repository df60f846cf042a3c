"""From a verified block to the rows of the explorer tables (pure: no database).

``compute_block_rows`` decodes every transaction (sender recovered from its signature) and every
log of a verified block; the writer then folds the decoded events into the derived tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chainshare.execution.abi import decode_revert_reason
from chainshare.execution.contracts.membership import ValidatorSet
from chainshare.explorer.db.schema import compute_log_seq, compute_tx_seq
from chainshare.explorer.indexer.decode import decode_call, decode_event, dumps, get_registry
from chainshare.explorer.indexer.verify import FetchedBlock
from chainshare.ledger.merkle import hash_leaves
from chainshare.ledger.txs import decode_transaction


@dataclass(frozen=True)
class EventRow:
    seq: int
    tx_seq: int
    tx_hash: bytes
    sender: bytes
    contract: str | None
    event: str | None
    args: dict[str, Any] | None


@dataclass
class BlockRows:
    height: int
    timestamp_ms: int
    block: dict[str, Any]
    txs: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    address_txs: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    calls: dict[int, tuple[str | None, str | None, dict[str, Any] | None]] = field(default_factory=dict)


def compute_block_rows(fetched: FetchedBlock, vs: ValidatorSet | None, chain_id: int) -> BlockRows:
    """Rows for ``fetched`` certified by ``vs`` (None: set the epoch once the block is verified).
    Pure, so it may run before verification (in the fetch threads); only verified rows are stored."""
    block, qc, receipts = fetched.block, fetched.qc, fetched.receipts
    h = block.header
    out = BlockRows(h.height, h.timestamp_ms, {
        "height": h.height, "hash": block.hash, "parent_hash": h.parent_hash, "timestamp_ms": h.timestamp_ms,
        "round": h.round, "proposer": h.proposer, "tx_count": len(block.transactions), "gas_used": h.gas_used,
        "epoch": vs.epoch if vs is not None else -1, "tx_root": h.tx_root, "receipts_root": h.receipts_root, "state_root": h.state_root,
        "header": h.encode(), "qc": qc.encode() if qc else None,
        "qc_signers": dumps(qc.signer_indices()) if qc else None, "size_bytes": len(block.encode()),
        "tx_leaf_hashes": b"".join(hash_leaves(block.transactions)),
        "receipt_leaf_hashes": b"".join(hash_leaves([r.encode() for r in receipts]))})
    for i, (raw, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        tx = decode_transaction(raw, chain_id)
        seq = compute_tx_seq(h.height, i)
        contract, method, args = decode_call(tx.to, tx.data)
        out.calls[seq] = (contract, method, args)
        out.txs.append({
            "seq": seq, "hash": tx.hash, "height": h.height, "position": i, "timestamp_ms": h.timestamp_ms,
            "sender": tx.sender, "to": tx.to, "nonce": tx.nonce, "status": receipt.status,
            "gas_used": receipt.gas_used, "contract": contract, "method": method,
            "args": dumps(args) if args is not None else None,
            "error": decode_revert_reason(receipt.output) if receipt.status == 0 else None,
            "agency": None, "raw": raw, "receipt": receipt.encode()})
        out.address_txs.append({"address": tx.sender, "seq": seq})
        if tx.to is not None and tx.to != tx.sender:
            out.address_txs.append({"address": tx.to, "seq": seq})
        for j, lg in enumerate(receipt.logs):
            lseq = compute_log_seq(seq, j)
            name, eargs = decode_event(lg.address, lg.topics, lg.data)
            topics = list(lg.topics) + [None] * (4 - len(lg.topics))
            out.logs.append({"seq": lseq, "tx_seq": seq, "height": h.height, "address": lg.address,
                             "topic0": topics[0], "topic1": topics[1], "topic2": topics[2], "topic3": topics[3],
                             "data": lg.data, "event": name, "args": dumps(eargs) if eargs is not None else None})
            out.events.append(EventRow(lseq, seq, tx.hash, tx.sender, get_registry().contracts.get(lg.address),
                                       name, eargs))
    return out
