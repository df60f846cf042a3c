"""The pending pool: verified transactions waiting for a block, nonce-ordered per sender.

Admission checks everything that can be checked before execution, once: size, replay, decoding
and signature (sender recovered once per node), chain id, target and selector, membership, nonce,
gas. A transaction whose nonce is ahead of its sender's next nonce waits (bounded per sender and
in total). Every refusal is a precise ``InvalidTransaction`` / ``MempoolFull``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chainshare.crypto.hashing import keccak256
from chainshare.errors import (
    GasLimitExceeded,
    InvalidTransaction,
    KnownTransaction,
    MempoolFull,
    NonceTooLow,
    Unauthorized,
)
from chainshare.execution.contracts.membership import is_member
from chainshare.execution.runtime import Runtime, compute_intrinsic_gas, get_nonce
from chainshare.ledger.state import StateReader
from chainshare.ledger.txs import Transaction, decode_transaction


@dataclass(frozen=True)
class MempoolLimits:
    max_per_sender: int = 16_384
    max_total: int = 100_000


class Mempool:
    def __init__(self, runtime: Runtime, chain_id: int, limits: MempoolLimits,
                 is_included: Callable[[bytes], int | None],
                 recently_included: Callable[[bytes], int | None] | None = None) -> None:
        self._runtime = runtime
        self._chain_id = chain_id
        self._limits = limits
        self._is_included = is_included
        self._recently_included = recently_included
        self._by_hash: dict[bytes, Transaction] = {}
        self._by_sender: dict[bytes, dict[int, Transaction]] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._by_hash.get(tx_hash)

    def add_raw(self, raw: bytes, state: StateReader, block_gas_limit: int) -> Transaction:
        """Admit a raw signed transaction or raise a precise error; returns the verified tx."""
        tx_hash = keccak256(raw)
        if tx_hash in self._by_hash:
            raise KnownTransaction(f"transaction 0x{tx_hash.hex()} is already pending")
        if self._recently_included is not None:
            # Cheap (memory-only) replay check before the costly signature recovery: on a
            # multi-validator network a broadcast batch often arrives after its block was final.
            recent = self._recently_included(tx_hash)
            if recent is not None:
                raise KnownTransaction(f"transaction 0x{tx_hash.hex()} was already included in block {recent}")
        tx = decode_transaction(raw, self._chain_id)
        return self.add(tx, state, block_gas_limit)

    def add(self, tx: Transaction, state: StateReader, block_gas_limit: int) -> Transaction:
        if tx.value:
            raise InvalidTransaction("there is no native currency on this network: value must be 0")
        if tx.gas_limit > block_gas_limit:
            raise GasLimitExceeded(f"gas {tx.gas_limit} exceeds the block gas limit {block_gas_limit}")
        intrinsic = compute_intrinsic_gas(tx.data)
        if tx.gas_limit < intrinsic:
            raise InvalidTransaction(f"gas {tx.gas_limit} is below the intrinsic gas {intrinsic}")
        self._runtime.check_call(tx.to, tx.data)
        if not is_member(state, tx.sender):
            raise Unauthorized(f"sender 0x{tx.sender.hex()} is not an account of a member agency")
        next_nonce = get_nonce(state, tx.sender)
        if tx.nonce < next_nonce:
            # An included tx always has a used nonce, so the (disk) replay lookup is only needed here.
            included_at = self._is_included(tx.hash)
            if included_at is not None:
                raise KnownTransaction(f"transaction 0x{tx.hash.hex()} was already included in block {included_at}")
            raise NonceTooLow(f"nonce {tx.nonce} already used: the sender's next nonce is {next_nonce}")
        queue = self._by_sender.get(tx.sender)
        if queue is not None and tx.nonce in queue:
            raise KnownTransaction(f"a transaction with nonce {tx.nonce} from this sender is already pending "
                                   "(replacement is not supported: fees are not charged here)")
        if queue is not None and len(queue) >= self._limits.max_per_sender:
            raise MempoolFull(f"sender has {len(queue)} pending transactions (limit {self._limits.max_per_sender}); "
                              "wait for receipts and retry")
        if len(self._by_hash) >= self._limits.max_total:
            raise MempoolFull(f"mempool is full ({self._limits.max_total} transactions); retry shortly")
        self._by_hash[tx.hash] = tx
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
        return tx

    def select(self, state: StateReader, limit: int) -> list[Transaction]:
        """Up to ``limit`` ready transactions: consecutive nonces per sender, senders in arrival order."""
        out: list[Transaction] = []
        for sender, queue in self._by_sender.items():
            n = get_nonce(state, sender)
            while n in queue and len(out) < limit:
                out.append(queue[n])
                n += 1
            if len(out) >= limit:
                break
        return out

    def get_pending_nonce(self, state: StateReader, sender: bytes) -> int:
        n = get_nonce(state, sender)
        queue = self._by_sender.get(sender, {})
        while n in queue:
            n += 1
        return n

    def remove(self, txs: list[Transaction]) -> None:
        for tx in txs:
            self._drop(tx)

    def prune(self, state: StateReader) -> int:
        """Drop transactions that can never be included now (stale nonce, sender revoked)."""
        dropped = 0
        for sender in list(self._by_sender):
            queue = self._by_sender[sender]
            member = is_member(state, sender)
            n = get_nonce(state, sender)
            for nonce in [x for x in queue if x < n or not member]:
                self._drop(queue[nonce])
                dropped += 1
        return dropped

    def _drop(self, tx: Transaction) -> None:
        self._by_hash.pop(tx.hash, None)
        queue = self._by_sender.get(tx.sender)
        if queue is not None:
            queue.pop(tx.nonce, None)
            if not queue:
                del self._by_sender[tx.sender]
