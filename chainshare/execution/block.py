"""Block execution: building a block from transactions, and re-executing one to verify it.

``execute_transactions`` is the pure state transition of a block body; ``build_block`` wraps it
for a proposer and ``apply_block`` for a verifier, which must reach the very same header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from chainshare.errors import ConsensusError, DecodeError, ExecutionFailed, InvalidTransaction
from chainshare.execution.contracts.membership import (
    compute_validator_set_hash,
    get_validator_set_at,
    is_member,
)
from chainshare.execution.genesis import get_chain_params
from chainshare.execution.runtime import BlockEnv, Runtime, compute_intrinsic_gas, get_nonce
from chainshare.ledger.merkle import compute_root
from chainshare.ledger.state import StateReader, StateView
from chainshare.ledger.statehash import apply_state_changes, compute_state_root
from chainshare.ledger.txs import Transaction, decode_transaction
from chainshare.ledger.types import (
    Block,
    Header,
    QuorumCertificate,
    Receipt,
    compute_justify_hash,
    compute_logs_bloom,
)

log = logging.getLogger("chainshare.execution")


@dataclass(frozen=True)
class ExecutedBlock:
    """A block with everything its execution produced, ready to be stored in one batch."""

    block: Block
    receipts: tuple[Receipt, ...]
    senders: tuple[bytes, ...]
    state_changes: dict[bytes, bytes | None]
    accumulator: int
    tx_hashes: tuple[bytes, ...]  # keccak of each raw transaction, derived once when it was decoded


def check_transaction_validity(state: StateReader, tx: Transaction, gas_left: int) -> None:
    """Raise InvalidTransaction unless ``tx`` may be included now: member sender, next nonce, gas fits."""
    if not is_member(state, tx.sender):
        raise InvalidTransaction(f"sender 0x{tx.sender.hex()} is not an account of a member agency")
    expected = get_nonce(state, tx.sender)
    if tx.nonce != expected:
        raise InvalidTransaction(f"nonce {tx.nonce} is not the sender's next nonce {expected}")
    if tx.gas_limit > gas_left:
        raise InvalidTransaction(f"gas {tx.gas_limit} exceeds the gas left in the block ({gas_left})")
    if tx.gas_limit < compute_intrinsic_gas(tx.data):
        raise InvalidTransaction("gas limit below the intrinsic gas of the transaction")
    if tx.value:
        raise InvalidTransaction("there is no native currency: value must be 0")


def execute_transactions(runtime: Runtime, state: StateView, txs: Sequence[Transaction], env: BlockEnv,
                         on_invalid: Callable[[Transaction, InvalidTransaction], None] | None
                         ) -> tuple[list[Transaction], list[Receipt]]:
    """Apply ``txs`` in order. An invalid tx is skipped via ``on_invalid`` (proposer) or, when
    ``on_invalid`` is None, makes the whole block invalid (verifier). The same holds for a tx whose
    execution raised instead of reverting (a bug, which must not halt the chain): a proposer leaves it
    out with its writes undone, a verifier refuses the block (ConsensusError). A failure of the ledger
    (StorageError, any OSError) or of memory propagates."""
    included: list[Transaction] = []
    receipts: list[Receipt] = []
    cumulative = 0
    for tx in txs:
        if on_invalid is not None and tx.gas_limit > env.gas_limit - cumulative:
            break  # the block is full: the rest waits for the next block (they are not invalid)
        try:
            check_transaction_validity(state, tx, env.gas_limit - cumulative)
        except InvalidTransaction as exc:
            if on_invalid is None:
                raise ConsensusError(f"block {env.height} contains an invalid transaction 0x{tx.hash.hex()}: "
                                     f"{exc.message}") from exc
            on_invalid(tx, exc)
            continue
        before = state.snapshot()
        try:
            receipt = runtime.apply_transaction(state, tx, env, cumulative)
        except (OSError, MemoryError):
            raise  # this node failed (its ledger: StorageError is an OSError), not the transaction: stop the block
        except Exception as exc:  # noqa: BLE001 (one transaction never halts the chain)
            # The runtime turns every failure of a contract into a revert, so this is a bug. A proposer that
            # offered such a transaction would fail the same way at every attempt, and so would the next
            # ones: it is left out (its nonce unspent), and a block that carries one gets no vote.
            reason = f"executing it raised {type(exc).__name__} instead of reverting"
            log.error("transaction failed to execute", exc_info=exc,
                      extra={"fields": {"tx": "0x" + tx.hash.hex(), "height": env.height}})
            if on_invalid is None:
                raise ConsensusError(f"block {env.height} contains transaction 0x{tx.hash.hex()}: {reason}") from exc
            state.revert(before)
            on_invalid(tx, ExecutionFailed(f"{reason}: left out of the block (report it to the node's operators)"))
            continue
        cumulative = receipt.cumulative_gas_used
        included.append(tx)
        receipts.append(receipt)
    return included, receipts


def compute_state_commitment(state: StateView, parent_accumulator: int) -> tuple[dict[bytes, bytes | None], int]:
    changes = state.changes()
    parent = state.parent
    acc = apply_state_changes(parent_accumulator, [(k, parent.get(k), v) for k, v in changes.items()])
    return changes, acc


def build_block(runtime: Runtime, parent: StateReader, parent_header: Header, parent_accumulator: int,
                txs: Sequence[Transaction], *, chain_id: int, round: int, timestamp_ms: int, proposer: bytes,
                justify: QuorumCertificate | None,
                on_invalid: Callable[[Transaction, InvalidTransaction], None],
                timeout_cert: bytes | None = None) -> ExecutedBlock:
    """Execute ``txs`` on top of ``parent`` and assemble the (unsigned) block a proposer offers."""
    gas_limit, max_txs = get_chain_params(parent)
    height = parent_header.height + 1
    env = BlockEnv(chain_id, height, timestamp_ms, proposer, gas_limit)
    state = StateView(parent)
    included, receipts = execute_transactions(runtime, state, list(txs)[:max_txs], env, on_invalid)
    return _assemble(state, parent, parent_header, parent_accumulator, included, receipts, env, round, justify,
                     timeout_cert)


def apply_block(runtime: Runtime, parent: StateReader, parent_header: Header, parent_accumulator: int,
                block: Block, *, chain_id: int,
                known_transaction: Callable[[bytes], Transaction | None] | None = None) -> ExecutedBlock:
    """Re-execute ``block`` on ``parent``; raises ConsensusError unless every header field matches.

    ``known_transaction(raw)`` may return a transaction this node already verified (its mempool), looked
    up by its exact raw bytes: its sender and hash are then not computed again (identical bytes are the
    same transaction; nothing the leader says about a transaction is trusted)."""
    h = block.header
    if h.parent_hash != parent_header.hash or h.height != parent_header.height + 1:
        raise ConsensusError(f"block {h.height} does not extend block {parent_header.height}")
    if h.timestamp_ms < parent_header.timestamp_ms:
        raise ConsensusError("block timestamp is earlier than its parent's")
    if h.round <= parent_header.round:
        raise ConsensusError(f"block {h.height} view {h.round} does not grow past its parent's {parent_header.round}")
    gas_limit, max_txs = get_chain_params(parent)
    if len(block.transactions) > max_txs:
        raise ConsensusError(f"block has {len(block.transactions)} transactions, the limit is {max_txs}")
    try:
        txs = [_known_or_decode(raw, chain_id, known_transaction) for raw in block.transactions]
    except (InvalidTransaction, DecodeError) as exc:
        raise ConsensusError(f"block {h.height} carries an undecodable transaction: {exc.message}") from exc
    env = BlockEnv(chain_id, h.height, h.timestamp_ms, h.proposer, gas_limit)
    state = StateView(parent)
    included, receipts = execute_transactions(runtime, state, txs, env, None)
    executed = _assemble(state, parent, parent_header, parent_accumulator, included, receipts, env,
                         h.round, block.justify, block.timeout_cert)
    if executed.block.header != h:
        diff = [f for f in h.__dataclass_fields__ if getattr(h, f) != getattr(executed.block.header, f)]
        raise ConsensusError(f"block {h.height} does not re-execute to its header (differs in {', '.join(diff)})")
    return replace(executed, block=block)


def _known_or_decode(raw: bytes, chain_id: int,
                     known: Callable[[bytes], Transaction | None] | None) -> Transaction:
    tx = known(raw) if known is not None else None
    if tx is not None and tx.raw == raw and tx.chain_id == chain_id:
        return tx
    return decode_transaction(raw, chain_id)


def _assemble(state: StateView, parent: StateReader, parent_header: Header, parent_accumulator: int,
              included: list[Transaction], receipts: list[Receipt], env: BlockEnv, round: int,
              justify: QuorumCertificate | None, timeout_cert: bytes | None = None) -> ExecutedBlock:
    changes, acc = compute_state_commitment(state, parent_accumulator)
    header = Header(
        parent_hash=parent_header.hash,
        height=env.height,
        round=round,
        timestamp_ms=env.timestamp_ms,
        proposer=env.proposer,
        tx_root=compute_root([t.raw for t in included]),
        receipts_root=compute_root([r.encode() for r in receipts]),
        state_root=compute_state_root(acc),
        logs_bloom=compute_logs_bloom(lg for r in receipts for lg in r.logs),
        validator_set_hash=compute_validator_set_hash(get_validator_set_at(state, env.height + 1).validators),
        gas_limit=env.gas_limit,
        gas_used=receipts[-1].cumulative_gas_used if receipts else 0,
        justify_hash=compute_justify_hash(justify, timeout_cert),
    )
    block = Block(header, tuple(t.raw for t in included), justify, timeout_cert)
    return ExecutedBlock(block, tuple(receipts), tuple(t.sender for t in included), changes, acc,
                         tuple(t.hash for t in included))
