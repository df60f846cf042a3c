"""The pending pool: verified transactions waiting for a block, nonce-ordered per sender.

Admission checks everything that can be checked before execution, once: size, replay, decoding
and signature (sender recovered once per node), chain id, target and selector, membership, nonce,
gas. Every refusal is a precise ``InvalidTransaction`` / ``MempoolFull`` naming the limit.

A sender's transactions are *executable* when their nonces follow its account nonce without a gap,
*queued* otherwise. What one account can make a node hold is bounded:

- a queued transaction is at most ``max_nonce_gap - 1`` nonces past the sender's next executable
  nonce (``NonceTooHigh`` beyond), and is dropped ``queued_ttl_s`` seconds after admission if it is
  still queued then (an executable transaction never expires: it waits for a block);
- per sender at most ``max_per_sender`` transactions and ``max_sender_bytes`` raw bytes (a sender's
  next executable transaction takes the room of its own furthest queued ones);
- in total at most ``max_total`` transactions and ``max_total_bytes`` bytes, of which
  ``reserved_percent`` is usable only by system records (``AccessControl.recordDelivery`` /
  ``recordComputation``, ``Evidence.report``) whose dry run on the committed state succeeds, so a
  flood of ordinary transactions never starves them. When the pool is full, an executable
  transaction or a record takes the room of queued transactions (the largest queue's furthest
  nonces first); an executable transaction is never evicted.

``select`` orders a block fairly: system records first, then one transaction per sender per round
(the smallest declared gas first within a round), so one sender's backlog or huge-gas transactions
cannot keep another sender's next transaction out of a block.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chainshare.crypto.hashing import keccak256
from chainshare.errors import (
    GasLimitExceeded,
    InvalidTransaction,
    KnownTransaction,
    MempoolFull,
    NodeBusy,
    NonceTooHigh,
    NonceTooLow,
    Unauthorized,
)
from chainshare.execution.contracts.membership import is_member
from chainshare.execution.runtime import Runtime, compute_intrinsic_gas, get_nonce
from chainshare.ledger.state import StateReader
from chainshare.ledger.txs import Transaction, decode_transaction

# (contract name, method name) of the calls a node makes to keep the chain's records: they may use
# the pool's reserved room and go first into a block.
SYSTEM_RECORD_CALLS = frozenset({("AccessControl", "recordDelivery"), ("AccessControl", "recordComputation"),
                                 ("Evidence", "report")})
_RECORD_METHODS = frozenset(name for _, name in SYSTEM_RECORD_CALLS)


@dataclass(frozen=True)
class MempoolLimits:
    max_per_sender: int = 16_384
    max_total: int = 100_000
    max_nonce_gap: int = 1024
    max_sender_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 128 * 1024 * 1024
    queued_ttl_s: float = 300.0
    reserved_percent: int = 10
    busy_backlog_s: float = 1.0
    busy_min_pending: int = 2_000

    @property
    def reserved_count(self) -> int:
        return self.max_total * self.reserved_percent // 100

    @property
    def reserved_bytes(self) -> int:
        return self.max_total_bytes * self.reserved_percent // 100


DRAIN_WINDOW_S = 5.0  # the finalize rate is measured over the busy intervals of this many seconds
MAX_RETRY_AFTER_S = 5.0  # the longest "retry after" a busy refusal suggests
MIN_RETRY_AFTER_S = 0.25  # the shortest (about one block): sooner, the backlog has not moved


def is_backlogged(executable: int, finalized_per_s: float, limits: MempoolLimits) -> bool:
    """Whether ``executable`` waiting transactions are more than the node finalizes in
    ``busy_backlog_s`` at ``finalized_per_s`` (and at least ``busy_min_pending``): a transaction
    admitted now would wait longer than that for its block."""
    return executable >= max(limits.busy_min_pending, finalized_per_s * limits.busy_backlog_s)


@dataclass(frozen=True)
class Admission:
    """An admitted transaction and the transactions it made executable (itself first if it is one;
    empty when it is queued behind a nonce gap)."""

    tx: Transaction
    executable: tuple[Transaction, ...]


class Mempool:
    def __init__(self, runtime: Runtime, chain_id: int, limits: MempoolLimits,
                 is_included: Callable[[bytes], int | None],
                 recently_included: Callable[[bytes], int | None] | None = None,
                 dry_run: Callable[[Transaction], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, index_raw: bool = False) -> None:
        self._runtime = runtime
        self._chain_id = chain_id
        self._limits = limits
        self._is_included = is_included
        self._recently_included = recently_included
        self._dry_run = dry_run
        self._clock = clock
        self._by_hash: dict[bytes, Transaction] = {}
        # With ``index_raw`` (a replica re-executing others' blocks): the same transactions by their raw bytes.
        self._by_raw: dict[bytes, Transaction] | None = {} if index_raw else None
        self._by_sender: dict[bytes, dict[int, Transaction]] = {}
        self._admitted_at: dict[bytes, float] = {}
        self._records: set[bytes] = set()  # hashes of pending system records
        self._sender_bytes: dict[bytes, int] = {}
        self._total_bytes = 0
        # Per sender, a nonce up to which (from the account nonce) every nonce is pending: lowered
        # whenever a transaction below it leaves, so the pending nonce is found without a full scan.
        self._ready_end: dict[bytes, int] = {}
        # Back-pressure: executable transactions waiting (counted exactly at each prune, i.e. after
        # each finalized block, plus those admitted since) and, for each interval between two prunes
        # that began with executable transactions waiting, (end time, count included, length).
        self._executable = 0
        self._drained: deque[tuple[float, int, float]] = deque()
        self._drained_n = 0  # sums over ``_drained`` (count included, busy seconds), kept with it
        self._drained_s = 0.0
        self._last_prune_at: float | None = None
        self._waiting_at_prune = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def total_bytes(self) -> int:
        """Raw bytes of all pending transactions."""
        return self._total_bytes

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._by_hash.get(tx_hash)

    def get_by_raw(self, raw: bytes) -> Transaction | None:
        """The pending transaction whose raw bytes are exactly ``raw`` (its hash is not computed); always
        None unless made with ``index_raw``."""
        return self._by_raw.get(raw) if self._by_raw is not None else None

    def is_system_record(self, tx: Transaction) -> bool:
        """Whether ``tx`` calls one of ``SYSTEM_RECORD_CALLS`` (by target and selector)."""
        contract = self._runtime.contracts.get(tx.to) if tx.to is not None else None
        if contract is None:
            return False
        spec = contract.methods.get(tx.data[:4])
        return spec is not None and (contract.NAME, spec.name) in SYSTEM_RECORD_CALLS

    @property
    def executable_count(self) -> int:
        """Executable transactions waiting for a block (as of the last prune, plus admissions since)."""
        return self._executable

    def get_finalized_rate(self) -> float:
        """Transactions per second that left the pool by inclusion while it had work waiting, over the
        last ``DRAIN_WINDOW_S`` (0.0 when it had none): what the node finalizes when it is busy. Idle
        time does not dilute it, so a burst after a quiet spell is not told to wait for a rate the
        node only showed while it had nothing to do."""
        self._trim_drain_window(self._clock())
        return self._drained_n / self._drained_s if self._drained_s > 0 else 0.0

    def _trim_drain_window(self, now: float) -> None:
        """Drop the drained intervals that ended before ``now - DRAIN_WINDOW_S`` (and their share of
        the running sums): the window holds at most the blocks of its last few seconds."""
        horizon = now - DRAIN_WINDOW_S
        while self._drained and self._drained[0][0] < horizon:
            _, n, dt = self._drained.popleft()
            self._drained_n -= n
            self._drained_s -= dt
        if not self._drained:  # no float residue from the running sums once the window is empty
            self._drained_n, self._drained_s = 0, 0.0

    def check_backlog(self) -> None:
        """Raise NodeBusy when a new transaction would wait longer than ``busy_backlog_s``."""
        if self._executable < self._limits.busy_min_pending:
            return  # under the floor no rate makes it a backlog (is_backlogged): the rate is not measured
        rate = self.get_finalized_rate()
        if is_backlogged(self._executable, rate, self._limits):
            lim = self._limits
            wait = f"about {self._executable / rate:.1f} s of work at the {rate:.0f} tx/s finalized lately" if rate \
                else "no finalize rate measured while busy in the last few seconds"
            # About when the backlog is back under the limit (in tenths of a second, at least about a
            # block, at most MAX_RETRY_AFTER_S: a rate measured on a trickle must not send clients away
            # for minutes). Longer leaves the node idle once it has worked its backlog off.
            over = self._executable - max(lim.busy_min_pending, rate * lim.busy_backlog_s) + 1
            retry = min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(over / rate * 10) / 10)) if rate else 1.0
            raise NodeBusy(f"node busy, retry: {self._executable} transactions wait for a block ({wait}; limits "
                           f"[mempool] busy_backlog_ms = {lim.busy_backlog_s * 1000:.0f}, busy_min_pending = "
                           f"{lim.busy_min_pending}); this one was not kept: retry after {retry} s",
                           data={"limit": "busy_backlog_ms", "pending": self._executable, "retryAfter": retry})

    def add_raw(self, raw: bytes, state: StateReader, block_gas_limit: int, *, submitted: bool = False) -> Admission:
        """Admit a raw signed transaction or raise a precise error; ``submitted``: from a client or
        this node (not a peer), so refused with NodeBusy when over the backlog (system records excepted)."""
        tx_hash = keccak256(raw)
        if tx_hash in self._by_hash:
            raise KnownTransaction(f"transaction 0x{tx_hash.hex()} is already pending")
        if self._recently_included is not None:
            # Cheap (memory-only) replay check before the costly signature recovery: on a
            # multi-validator network a broadcast batch often arrives after its block was final.
            recent = self._recently_included(tx_hash)
            if recent is not None:
                raise KnownTransaction(f"transaction 0x{tx_hash.hex()} was already included in block {recent}")
        tx = decode_transaction(raw, self._chain_id, tx_hash)
        return self.add(tx, state, block_gas_limit, submitted=submitted)

    def add(self, tx: Transaction, state: StateReader, block_gas_limit: int, *, submitted: bool = False) -> Admission:
        """Admit a verified transaction or raise a precise error (nothing is kept on a refusal)."""
        if tx.value:
            raise InvalidTransaction("there is no native currency on this network: value must be 0")
        if tx.gas_limit > block_gas_limit:
            raise GasLimitExceeded(f"gas {tx.gas_limit} exceeds the block gas limit {block_gas_limit}")
        intrinsic = compute_intrinsic_gas(tx.data)
        if tx.gas_limit < intrinsic:
            raise InvalidTransaction(f"gas {tx.gas_limit} is below the intrinsic gas {intrinsic}")
        spec = self._runtime.check_call(tx.to, tx.data)
        if not is_member(state, tx.sender):
            raise Unauthorized(f"sender 0x{tx.sender.hex()} is not an account of a member agency")
        lim = self._limits
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
        pending = self._get_pending_nonce_from(next_nonce, tx.sender)
        if tx.nonce - pending >= lim.max_nonce_gap:
            raise NonceTooHigh(
                f"nonce {tx.nonce} is {tx.nonce - pending} ahead of the sender's next executable nonce {pending}; "
                f"at most {lim.max_nonce_gap - 1} ahead are queued ([mempool] max_nonce_gap): "
                "send the missing nonces first", data={"limit": "max_nonce_gap", "max": lim.max_nonce_gap})
        if queue is not None and len(queue) >= lim.max_per_sender:
            raise MempoolFull(f"sender has {len(queue)} pending transactions (limit {lim.max_per_sender}, "
                              "[mempool] max_per_sender); wait for receipts and retry",
                              data={"limit": "max_per_sender", "max": lim.max_per_sender})
        size = len(tx.raw)
        executable = tx.nonce == pending
        own: list[Transaction] = []  # the sender's furthest queued transactions, evicted for its next one
        held = self._sender_bytes.get(tx.sender, 0)
        if executable and queue is not None and held + size > lim.max_sender_bytes:
            for nonce in sorted(queue, reverse=True):
                if nonce <= pending or held + size <= lim.max_sender_bytes:
                    break
                own.append(queue[nonce])
                held -= len(queue[nonce].raw)
        if held + size > lim.max_sender_bytes:
            raise MempoolFull(f"sender has {held} bytes of transactions pending; this one ({size} bytes) would "
                              f"exceed the per-sender limit of {lim.max_sender_bytes} bytes "
                              "([mempool] max_sender_bytes): wait for receipts and retry",
                              data={"limit": "max_sender_bytes", "max": lim.max_sender_bytes})
        # (a call of another method name is no record: its contract is not looked up again)
        record = executable and spec.name in _RECORD_METHODS and self.is_system_record(tx)
        if submitted and not record:
            self.check_backlog()
        record = self._make_room(state, tx, size, executable, record)
        for victim in own:
            self._drop(victim)
        held = self._sender_bytes.get(tx.sender, 0)
        self._by_hash[tx.hash] = tx
        if self._by_raw is not None:
            self._by_raw[tx.raw] = tx
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
        self._admitted_at[tx.hash] = self._clock()
        self._sender_bytes[tx.sender] = held + size
        self._total_bytes += size
        if record:
            self._records.add(tx.hash)
        if not executable:
            return Admission(tx, ())
        queue = self._by_sender[tx.sender]
        out = [tx]
        n = tx.nonce + 1
        while n in queue:
            out.append(queue[n])
            n += 1
        self._ready_end[tx.sender] = n
        self._executable += len(out)
        return Admission(tx, tuple(out))

    def _make_room(self, state: StateReader, tx: Transaction, size: int, executable: bool, record: bool) -> bool:
        """Check the total caps for ``tx`` (ordinary transactions may not use the reserved room),
        evicting queued transactions (see ``_eviction_candidates``) for an executable one; else MempoolFull.
        Returns whether ``tx`` is admitted as a system record."""
        lim = self._limits
        if record and not self._fits(size, 0, 0, False) and self._dry_run is not None and not self._dry_run(tx):
            record = False  # a record that would revert gets no reserved room
        if self._fits(size, 0, 0, record):
            return record
        freed_n, freed_b = 0, 0
        chosen: list[Transaction] = []
        for victim in self._eviction_candidates(state) if executable else []:
            chosen.append(victim)
            freed_n += 1
            freed_b += len(victim.raw)
            if self._fits(size, freed_n, freed_b, record):
                break
        if not self._fits(size, freed_n, freed_b, record):
            reserve = 0 if record else lim.reserved_percent
            max_count = lim.max_total - (lim.reserved_count if not record else 0)
            max_bytes = lim.max_total_bytes - (lim.reserved_bytes if not record else 0)
            if len(self._by_hash) + 1 > max_count:
                used, key, cap = f"{len(self._by_hash)} transactions", "max_total", max_count
            else:
                used, key, cap = f"{self._total_bytes} bytes", "max_total_bytes", max_bytes
            share = f", less the {reserve}% reserved for system records" if reserve else ""
            raise MempoolFull(f"mempool is full: {used} pending (limit {cap}: [mempool] {key}{share}); "
                              "retry shortly", data={"limit": key, "max": cap})
        for victim in chosen:
            self._drop(victim)
        return record

    def _fits(self, size: int, freed_n: int, freed_b: int, record: bool) -> bool:
        lim = self._limits
        max_count = lim.max_total - (0 if record else lim.reserved_count)
        max_bytes = lim.max_total_bytes - (0 if record else lim.reserved_bytes)
        return len(self._by_hash) - freed_n + 1 <= max_count and self._total_bytes - freed_b + size <= max_bytes

    def _eviction_candidates(self, state: StateReader) -> list[Transaction]:
        """Queued transactions in eviction order: the sender holding the most bytes first, each
        sender's furthest nonce first."""
        out: list[Transaction] = []
        senders = sorted(self._by_sender, key=lambda s: -self._sender_bytes.get(s, 0))
        for sender in senders:
            queue = self._by_sender[sender]
            pending = self.get_pending_nonce(state, sender)
            out.extend(queue[n] for n in sorted(queue, reverse=True) if n > pending)
        return out

    def select(self, state: StateReader, limit: int) -> list[Transaction]:
        """Up to ``limit`` executable transactions in block order: system records first, then one per
        sender per round (smallest declared gas first within a round), each sender's in consecutive
        nonce order. A block takes them in this order until its gas runs out, so every sender's next
        transaction precedes any sender's second one."""
        out: list[Transaction] = []
        cursor = {sender: get_nonce(state, sender) for sender in self._by_sender}
        active = [s for s in self._by_sender if cursor[s] in self._by_sender[s]]
        while active and len(out) < limit:
            heads = [self._by_sender[s][cursor[s]] for s in active]
            heads.sort(key=lambda t: (t.hash not in self._records, t.gas_limit))
            active = []
            for tx in heads:
                if len(out) >= limit:
                    break
                out.append(tx)
                cursor[tx.sender] += 1
                if cursor[tx.sender] in self._by_sender[tx.sender]:
                    active.append(tx.sender)
        return out

    def get_pending_nonce(self, state: StateReader, sender: bytes) -> int:
        """The sender's next nonce counting its executable pending transactions."""
        return self._get_pending_nonce_from(get_nonce(state, sender), sender)

    def _get_pending_nonce_from(self, next_nonce: int, sender: bytes) -> int:
        queue = self._by_sender.get(sender)
        if not queue:
            return next_nonce
        n = max(next_nonce, self._ready_end.get(sender, next_nonce))
        while n in queue:
            n += 1
        self._ready_end[sender] = n
        return n

    def remove(self, txs: list[Transaction]) -> None:
        """Drop ``txs`` (e.g. found invalid when building a block; included ones go by ``prune``)."""
        for tx in txs:
            self._drop(tx)

    def prune(self, state: StateReader) -> int:
        """Drop transactions that can never be included now (stale nonce, sender revoked) and queued
        transactions older than ``queued_ttl_s``; returns how many were dropped."""
        dropped = included = executable = 0
        now = self._clock()
        expiry = now - self._limits.queued_ttl_s
        for sender in list(self._by_sender):
            queue = self._by_sender[sender]
            member = is_member(state, sender)
            n = get_nonce(state, sender)
            for nonce in [x for x in queue if x < n or not member]:
                self._drop(queue[nonce], below=n if member else None)
                dropped += 1
                included += member
            if sender not in self._by_sender:
                continue
            pending = self._get_pending_nonce_from(n, sender)
            executable += pending - n
            if pending - n >= len(queue):
                continue  # all executable: nothing queued to expire
            for nonce in [x for x in queue if x > pending and self._admitted_at[queue[x].hash] <= expiry]:
                self._drop(queue[nonce])
                dropped += 1
        if self._last_prune_at is not None and self._waiting_at_prune:
            # The interval since the last prune began with work waiting: it measures the finalize rate.
            self._drained.append((now, included, now - self._last_prune_at))
            self._drained_n += included
            self._drained_s += now - self._last_prune_at
            # Trimmed here too: the rate is read only when the backlog reaches busy_min_pending, and a
            # node that always has a little work waiting must not grow the window a block at a time.
            self._trim_drain_window(now)
        self._executable = self._waiting_at_prune = executable
        self._last_prune_at = now
        return dropped

    def _drop(self, tx: Transaction, below: int | None = None) -> None:
        """Forget ``tx``; ``below``: the sender's account nonce, if ``tx``'s nonce is known to be
        under it (its leaving then opens no gap in the sender's executable run)."""
        if self._by_hash.pop(tx.hash, None) is None:
            return
        if self._by_raw is not None:
            del self._by_raw[tx.raw]
        self._admitted_at.pop(tx.hash, None)
        self._records.discard(tx.hash)
        self._total_bytes -= len(tx.raw)
        left = self._sender_bytes.get(tx.sender, 0) - len(tx.raw)
        queue = self._by_sender.get(tx.sender)
        if queue is not None:
            queue.pop(tx.nonce, None)
            if below is None and tx.nonce < self._ready_end.get(tx.sender, -1):
                self._ready_end[tx.sender] = tx.nonce
            if not queue:
                del self._by_sender[tx.sender]
                self._ready_end.pop(tx.sender, None)
        if left > 0 and tx.sender in self._by_sender:
            self._sender_bytes[tx.sender] = left
        else:
            self._sender_bytes.pop(tx.sender, None)

