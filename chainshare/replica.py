"""The replica: drives the pure consensus core (``consensus/core.py``) with real I/O.

It turns the core's actions into effects and their results back into events, one event at a time,
in order, on one asyncio task:

- ``PersistSafety`` is written with a synced LevelDB batch BEFORE any later action of the same list
  (the vote or timeout it allows) is sent: a SIGKILL at any moment cannot make this validator sign
  two conflicting votes after it restarts;
- ``BuildProposal`` / ``ValidateBlock`` execute blocks on a worker thread, each on its parent's state:
  the committed state, or an in-memory overlay of not-yet-final ancestors (speculative execution);
- ``Commit`` stores each finalized block with its QC in one synced batch, in height order;
- messages go over the mutual-TLS P2P transport; a validator that is behind fetches finalized
  blocks with their QCs from peers, verifies every QC and re-executes every block (block sync).

Validator-set epochs: the core runs with one validator set. When Governance schedules the next
set for activation height H, the current set still finalizes every block below H: blocks it
certifies at H or above are an empty "suffix" that exists only to give block H-1 its 2-chain, is
never stored, and carries no transactions. Once H-1 is final the replica restores a fresh core for
the new set on it (signatures are domain-separated by epoch, so nothing of the old epoch can be
replayed in the new one). A node whose key is not in the set in force follows the chain by block
sync (an observer) and joins consensus when a set that holds its key begins.

Transactions admitted by any node are gossiped to all (each node verifies a transaction once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.consensus import core, epochs, sync
from chainshare.consensus.messages import (
    BlsCrypto,
    Proposal,
    QcAnnouncement,
    Timeout,
    decode_message,
    encode_message,
)
from chainshare.consensus.peergate import GateConfig, PeerGate, charge_failed_checks, is_muted
from chainshare.crypto.hashing import keccak256
from chainshare.errors import (
    ChainshareError,
    ConsensusError,
    DecodeError,
    ExecutionFailed,
    InvalidTransaction,
    StorageError,
)
from chainshare.execution.block import ExecutedBlock, apply_block, build_block
from chainshare.execution.contracts.addresses import EVIDENCE, MEMBERSHIP
from chainshare.execution.contracts.cedar import run_on_cedar_thread
from chainshare.execution.contracts.evidence import Evidence as EvidenceContract
from chainshare.execution.contracts.membership import (
    ValidatorSet,
    get_agency,
    get_certificate_revocation,
    get_validator_set_at,
    get_validator_sets,
    select_validator_set,
)
from chainshare.execution.forks import get_runtime_at, get_upgrade_required
from chainshare.execution.genesis import get_chain_params
from chainshare.execution.runtime import encode_call
from chainshare.ledger.chain import P_EPOCH_PROOF, P_META, ChainStore
from chainshare.ledger.finality import (
    FinalityProof,
    decode_finality_proof,
    encode_finality_proof,
)
from chainshare.ledger.types import Block, QuorumCertificate
from chainshare.logs import log_event
from chainshare.p2p.errors import PeerRefused

log = logging.getLogger("chainshare.replica")

P_SAFETY = P_META + b"safety:"  # + epoch (8 bytes)
P_SAFETY_BLOCK = P_META + b"sblock:"  # + epoch (8 bytes) + block hash
P_EVIDENCE = b"E"
EVIDENCE_CONTRACT = EvidenceContract()
EVIDENCE_BACKUP_DELAY_S = 10.0
MSG_CONSENSUS = "cs.msg"
# QC announcements travel under their own type: a node of an earlier release ignores a type it does not
# know (it would count an unknown message inside "cs.msg" against the peer), so they need no protocol step.
MSG_QC_ANNOUNCEMENT = "cs.qc"
MSG_TXS = "txs"
MAX_TX_BATCH = 512
REQ_BLOCK = "cs.block"
REQ_HEAD = "cs.head"
REQ_SYNC = "cs.sync"
REQ_HASHES = "cs.hashes"
REQ_PROOF = "cs.proof"
REQ_EPOCHS = "cs.epochs"  # [from epoch] -> the epoch-change proofs of that epoch on (at most EPOCH_PROOF_BATCH)
EPOCH_PROOF_BATCH = 16
SYNC_BATCH = 64
MAX_FUTURE_DRIFT_MS = 10_000
MAX_FUTURE_WAIT_MS = 10 * 60_000  # a block further ahead of our clock than drift + this is refused outright
RECENT_MESSAGES = 256  # consensus messages kept to replay into the core of a new epoch
RECENT_MESSAGE_BYTES = 16 * 1024 * 1024


_SYNC = object()  # the event that asks the run loop for a block sync


@dataclass(frozen=True)
class _ServedProof:
    """A peer's finality proof: as served (kept as our head's proof once it held) and decoded."""

    raw: bytes
    proof: FinalityProof


@dataclass(frozen=True)
class _FromPeer:
    """A consensus event that came from ``peer`` while the core of ``generation`` ran: its failed
    checks are charged to that peer, unless the core was restored meanwhile (another epoch's keys)."""

    peer: str
    generation: int
    event: Any


@dataclass(frozen=True)
class _Tagged:
    """An event produced for the core of one generation (a timer, a built proposal): dropped if
    the core was restored meanwhile (a new epoch or a block sync)."""

    generation: int
    event: Any


class _Overlay:
    """State after a not-yet-final block: its writes over its parent's state."""

    __slots__ = ("_parent", "_changes")

    def __init__(self, parent: Any, changes: dict[bytes, bytes | None]) -> None:
        self._parent = parent
        self._changes = changes

    def get(self, key: bytes) -> bytes | None:
        if key in self._changes:
            return self._changes[key]
        return self._parent.get(key)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ReplicaConfig:
    base_timeout_ms: int
    max_timeout_ms: int
    block_time_ms: int
    idle_block_ms: int  # how long a leader waits for transactions before proposing an empty block


class Replica:
    """One validator's consensus replica inside a node."""

    def __init__(self, node: Any, transport: Any, cfg: ReplicaConfig) -> None:
        self.node = node
        self.chain: ChainStore = node.chain
        self.transport = transport
        self.cfg = cfg
        self.vset: ValidatorSet = get_validator_set_at(self.chain.state, self.chain.head_height + 1)
        self.names: list[str] = []
        self.index_of: dict[str, int] = {}
        self.my_index: int | None = None
        self.core_config: core.CoreConfig | None = None
        self.crypto: BlsCrypto | None = None
        self.executed: dict[bytes, ExecutedBlock] = {}
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica")
        self._stopping = False
        self._syncing = False
        self._last_progress = time.monotonic()
        self._membership_changed_since: int | None = None
        self._generation = 0  # bumped whenever the core is restored: older timers and actions are dropped
        self._epoch_ended = False  # a commit finalized the last block of the current validator set
        self._recent: deque[tuple[str, Any, int]] = deque()
        self._recent_bytes = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._tx_out: list[bytes] = []
        self._tx_out_bytes = 0
        self._tx_flush_scheduled = False
        self.stats: dict[str, Any] = {"commits": 0, "timeouts": 0, "synced_blocks": 0,
                                      "evidence": 0, "invalid_blocks": 0, "epoch": 0,
                                      "failed_checks": 0, "muted_messages": 0}
        self._gate_config = GateConfig()
        self._gates: dict[str, PeerGate] = {}
        self._learning = False
        self._proven_sets: list[ValidatorSet] = self._load_epoch_changes()
        self.state: core.CoreState | None = self._restore()
        if self.state is None:
            log_event(log, logging.WARNING, "not a validator of the set in force: following the chain by block sync",
                      epoch=self.vset.epoch)

    # -- start-up and epochs --------------------------------------------------------------------
    def _verifier(self, vs: ValidatorSet) -> BlsCrypto:
        """A verify-only crypto for the set ``vs`` (cached per epoch and keys: a scheduled set can be
        replaced by another of the same epoch before it is active)."""
        return sync.get_set_verifier(self.node.chain_id, vs.epoch, tuple(v["bls_public_key"] for v in vs.validators))

    def _restore(self) -> core.CoreState | None:
        """The core for the validator set that certifies the block after the committed head (None
        when this node's key is not in it: the node then follows by block sync)."""
        head = self.chain.get_head()
        sets = get_validator_sets(self.chain.state)
        vs = select_validator_set(sets, head.height + 1)
        entering = vs.epoch != self.vset.epoch
        self.vset = vs
        self.stats["epoch"] = vs.epoch
        self.names = [v["name"] for v in vs.validators]
        self.index_of = {name: i for i, name in enumerate(self.names)}
        self.my_index = vs.index_of_key(self.node.key.public_key)
        self._drop_safety_of_earlier_epochs(vs.epoch)
        if self.node.check_upgrade() is not None:
            self.core_config = self.crypto = None
            return None  # halted before a protocol version this release lacks: it signs nothing more
        if entering:
            self._gates = {}  # failures charged under the previous set's keys are forgiven
            log_event(log, logging.INFO, "validator set epoch begins", epoch=vs.epoch, height=vs.activation_height,
                      validators=",".join(self.names), member=self.my_index is not None)
        if self.my_index is None:
            self.core_config = self.crypto = None
            return None
        self.core_config = core.CoreConfig(
            chain_id=self.node.chain_id, validators=tuple(v["address"] for v in vs.validators), index=self.my_index,
            base_timeout_ms=self.cfg.base_timeout_ms, max_timeout_ms=self.cfg.max_timeout_ms)
        previous = select_validator_set(sets, vs.activation_height - 1) if vs.epoch > 0 else None
        self.crypto = BlsCrypto(self.node.chain_id, [v["bls_public_key"] for v in vs.validators], self.my_index,
                                self.node.key.secret_key, vs.epoch,
                                prior=self._verifier(previous) if previous is not None else None,
                                activation_height=vs.activation_height)
        qc = self.chain.get_qc(head.height) if head.height > 0 else None
        raw = self.chain.store.get(P_SAFETY + _u64(vs.epoch))
        safety = core.SafetyData.decode(raw) if raw else None
        blocks = []
        for _, v in self.chain.store.iterate(P_SAFETY_BLOCK + _u64(vs.epoch)):
            try:
                blocks.append(Block.decode(v))
            except DecodeError:
                continue
        return core.restore_core(self.core_config, self.crypto, head, qc, safety, blocks)

    def _restart_core(self) -> None:
        """Replace the core by one restored on the committed head (after a block sync or at the end
        of a validator set's epoch): speculative state, timers and pending builds of the old one are void."""
        self.executed = {}
        self._generation += 1
        self.state = self._restore()

    def _drop_safety_of_earlier_epochs(self, epoch: int) -> None:
        stale = [k for prefix in (P_SAFETY, P_SAFETY_BLOCK) for k, _ in self.chain.store.iterate(prefix)
                 if int.from_bytes(k[len(prefix):len(prefix) + 8], "big") < epoch]
        if stale:
            self.chain.store.write_batch({}, tuple(stale), sync=False)

    def _is_suffix(self, reader: Any, height: int) -> bool:
        """True iff the block at ``height`` over state ``reader`` belongs to a later epoch than the
        one this core runs: the current set certifies it only as an empty suffix block."""
        return epochs.is_suffix(get_validator_set_at(reader, height).epoch, self.vset.epoch)

    # -- reads --------------------------------------------------------------------------------
    def reader_for(self, block_hash: bytes) -> Any:
        """The state after block ``block_hash`` (committed head or a validated pending block)."""
        head = self.chain.get_head()
        if block_hash == head.hash:
            return self.chain.state
        ex = self.executed.get(block_hash)
        if ex is None:
            raise ConsensusError(f"no executed state for block 0x{block_hash.hex()}")
        return _Overlay(self.reader_for(ex.block.header.parent_hash), ex.state_changes)

    def accumulator_for(self, block_hash: bytes) -> int:
        if block_hash == self.chain.get_head().hash:
            return self.chain.get_accumulator()
        return self.executed[block_hash].accumulator

    # -- the event loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Process events one at a time until stopped (a block sync is one of them)."""
        await asyncio.sleep(0.5)  # let the transport dial its peers first
        await self._sync_and_restart(first=True)
        while not self._stopping:
            event = await self.events.get()
            if event is None:
                break
            if isinstance(event, _Tagged):
                if event.generation != self._generation:
                    continue
                event = event.event
            peer = None
            if isinstance(event, _FromPeer):
                taken = self._take(event)
                if taken is None:
                    continue
                peer, event = taken
            try:
                if event is _SYNC:
                    await self._sync_and_restart()
                else:
                    await self._handle(event, peer)
            except StorageError as exc:
                # LevelDB refuses every later write once one failed (disk full, I/O error): stop the node,
                # as the single-validator producer does; its peers go on, it catches up once restarted.
                log_event(log, logging.CRITICAL, "ledger write failed; stopping the node", error=exc.message)
                raise
            except ChainshareError as exc:
                log_event(log, logging.WARNING, "event failed", event=type(event).__name__, error=exc.message)

    async def _sync_and_restart(self, first: bool = False) -> None:
        """Sync; step ``Start`` only on the first call or when the sync restored the core (a new
        epoch): stepping it again in the same view would arm a second timer chain."""
        added = await self.sync_from_peers()
        if first or added:
            await self._handle(core.Start())
        if added:
            self._replay_recent()  # the sync may have crossed into a new epoch: see _remember

    async def stop(self) -> None:
        """Stop processing; pending builds and fetches are cancelled before the worker stops."""
        self._stopping = True
        self.events.put_nowait(None)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, event: Any, peer: str | None = None) -> None:
        """Step the core with ``event`` and carry out its actions; ``peer``: the peer whose message
        it is, charged for the signatures and certificates in it that failed to verify."""
        if self.state is not None and self.node.upgrade_required is not None:
            self.state = None  # halted for an upgrade (found after a commit or sync): no vote, no timeout
            self._generation += 1
        if self.state is None:
            return  # an observer: no core in this epoch
        generation = self._generation
        crypto = self.crypto
        failed_before = crypto.failed_checks if crypto is not None else 0
        self.state, actions = core.step(self.state, event)
        failed = crypto.failed_checks - failed_before if crypto is not None else 0
        if failed:
            self._charge(peer, failed)
        for action in actions:
            if self._generation != generation or self.node.upgrade_required is not None:
                break  # the core was restored (the old core's remaining actions are void), or halted
            await self._apply(action)
        if self._epoch_ended:
            # The old core's actions after its last commit were carried out first (under its
            # epoch). It then times out of its view: that broadcasts the QC that finalized the last
            # block of the set to the others (a timeout carries its sender's highest QC), so they
            # finalize it too without waiting for a proposal that no one will build any more.
            # Leaving the set, this validator will never vote in that epoch again: the timeout is safe.
            self._epoch_ended = False
            if self.state is not None:
                self.state, farewell = epochs.compute_farewell(self.state)
                for action in farewell:
                    await self._apply(action)
            self._restart_core()
            await self._handle(core.Start())
            self._replay_recent()

    async def _apply(self, action: Any) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(action, core.PersistSafety):
            await loop.run_in_executor(self._executor, self._persist_safety, action)
        elif isinstance(action, core.Broadcast):
            if isinstance(action.message, Timeout):
                self.stats["timeouts"] += 1
            elif isinstance(action.message, Proposal):
                # The transactions waiting for the next gossip batch go first, on the same ordered
                # connections: a validator then finds the proposal's fresh transactions verified in
                # its pool instead of recovering their senders twice (for the block, then for gossip).
                self._flush_txs()
            msg_type = MSG_QC_ANNOUNCEMENT if isinstance(action.message, QcAnnouncement) else MSG_CONSENSUS
            self.transport.broadcast(msg_type, encode_message(action.message))
        elif isinstance(action, core.SendTo):
            if action.index == self.my_index:
                self.events.put_nowait(core.event_of(action.message, action.index))
            else:
                self.transport.send(self.names[action.index], MSG_CONSENSUS, encode_message(action.message))
        elif isinstance(action, core.ScheduleTimeout):
            loop.call_later(action.duration_ms / 1000, self._fire_timeout, self._generation, action.view)
        elif isinstance(action, core.BuildProposal):
            self._spawn(self._build(action, self._generation))
        elif isinstance(action, core.ValidateBlock):
            wait_ms = compute_timestamp_wait_ms(action.block.header.timestamp_ms, int(time.time() * 1000))
            if wait_ms:
                self._spawn(self._validate_later(action.block, wait_ms, self._generation))
            else:
                ok = await loop.run_in_executor(self._executor, run_on_cedar_thread, self._validate, action.block)
                self.events.put_nowait(core.BlockValidated(action.block.hash, ok))
        elif isinstance(action, core.Commit):
            await loop.run_in_executor(self._executor, self._commit, action)
            self._after_commit()
            if epochs.has_epoch_ended(get_validator_set_at(self.chain.state, self.chain.head_height + 1).epoch,
                                      self.vset.epoch):
                self._epoch_ended = True
        elif isinstance(action, core.FetchBlock):
            self._spawn(self._fetch(action))
        elif isinstance(action, core.RecordEvidence):
            await loop.run_in_executor(self._executor, self._keep_evidence, action)
            self._report_evidence(action)

    async def _validate_later(self, block: Block, wait_ms: int, generation: int) -> None:
        """A block a little ahead of this node's clock is validated once the clock has caught up
        (a slow clock must not leave the node without its vote until a block sync)."""
        log_event(log, logging.INFO, "block ahead of the local clock: validating later", height=block.height,
                  wait_ms=wait_ms)
        await asyncio.sleep(wait_ms / 1000)
        if generation != self._generation or self._stopping:
            return
        ok = await asyncio.get_running_loop().run_in_executor(self._executor, run_on_cedar_thread, self._validate,
                                                              block)
        self.events.put_nowait(_Tagged(generation, core.BlockValidated(block.hash, ok)))

    def _fire_timeout(self, generation: int, view: int) -> None:
        if generation == self._generation and not self._stopping:  # timers armed before a restore are stale
            self.events.put_nowait(_Tagged(generation, core.LocalTimeout(view)))

    # -- effects ------------------------------------------------------------------------------
    def _persist_safety(self, action: core.PersistSafety) -> None:
        epoch = _u64(self.vset.epoch)
        puts = {P_SAFETY + epoch: action.data.encode()}
        if action.block is not None:
            puts[P_SAFETY_BLOCK + epoch + action.block.hash] = action.block.encode()
        self.chain.store.write_batch(puts, sync=True)

    async def _build(self, req: core.BuildProposal, generation: int) -> None:
        """Wait (briefly) for transactions, then build the block on the worker thread. A request
        whose parent was meanwhile superseded (committed below the head) is dropped: the core
        times out of that view and moves on."""
        try:
            await self._build_when_ready(req, generation)
        except (ConsensusError, KeyError) as exc:
            log_event(log, logging.DEBUG, "proposal abandoned", view=req.view, reason=str(exc))

    async def _build_when_ready(self, req: core.BuildProposal, generation: int) -> None:
        loop = asyncio.get_running_loop()
        parent = req.parent
        earliest = parent.header.timestamp_ms / 1000 + self.cfg.block_time_ms / 1000
        # Transactions in a not-yet-final ancestor become final only when two more blocks are
        # certified on top of it: then propose after block_time even with an empty mempool.
        suffix = self._is_suffix(self.reader_for(parent.hash), parent.height + 1)
        idle = (self.cfg.block_time_ms if suffix or self._has_pending_transactions(parent)
                else self.cfg.idle_block_ms)
        deadline = loop.time() + idle / 1000
        while not self._stopping:
            now = loop.time()
            if (len(self.node.mempool) and time.time() >= earliest and not suffix) or now >= deadline:
                break
            await asyncio.sleep(min(0.02, max(0.0, deadline - now)))
        reader = self.reader_for(parent.hash)
        _, max_txs = get_chain_params(reader)
        txs = [] if suffix else self.node.mempool.select(reader, max_txs)
        invalid: list[Any] = []
        block = await loop.run_in_executor(self._executor, run_on_cedar_thread, self._build_sync, req, txs,
                                           invalid)
        if invalid:  # never includable as they are: not offered again at the next view
            self.node.mempool.remove(invalid)
        if block is not None:
            self.events.put_nowait(_Tagged(generation, core.ProposalBuilt(block)))

    def _has_pending_transactions(self, block: Block) -> bool:
        """True iff ``block`` or one of its not-yet-final ancestors carries transactions."""
        head_height = self.chain.head_height
        while block.height > head_height:
            if block.transactions:
                return True
            ex = self.executed.get(block.header.parent_hash)
            if ex is None:
                return False
            block = ex.block
        return False

    def _build_sync(self, req: core.BuildProposal, txs: list[Any], invalid: list[Any]) -> Block | None:
        """The block of ``req`` over ``txs`` (None if this node cannot build it now); the transactions left
        out because executing them raised (ExecutionFailed) are appended to ``invalid``, for the event loop
        to drop from the mempool."""
        parent = req.parent
        if self.my_index is None:
            return None
        me = self.vset.validators[self.my_index]["address"]
        try:
            reader = self.reader_for(parent.hash)
            acc = self.accumulator_for(parent.hash)
        except (ConsensusError, KeyError):
            return None
        now = max(int(time.time() * 1000), parent.header.timestamp_ms)
        if get_upgrade_required(reader, parent.height + 1) is not None:
            return None  # a block of a version this release lacks: none is built (the halt comes with H-1 final)

        def on_invalid(tx: Any, exc: InvalidTransaction) -> None:
            # Only a transaction that can never execute leaves the mempool here: one judged invalid against a
            # parent that is not yet final (a nonce after it, a revocation on a branch that may be abandoned)
            # stays, and the mempool's pruning against the final state decides its fate.
            if isinstance(exc, ExecutionFailed):
                invalid.append(tx)
            log_event(log, logging.INFO, "dropped transaction", tx="0x" + tx.hash.hex(), reason=exc.message)

        executed = build_block(
            get_runtime_at(reader, parent.height + 1), reader, parent.header, acc, txs, chain_id=self.node.chain_id,
            round=req.view, timestamp_ms=now, proposer=me, justify=req.justify,
            on_invalid=on_invalid, timeout_cert=req.timeout_cert.encode() if req.timeout_cert else None)
        self.executed[executed.block.hash] = executed
        return executed.block

    def _validate(self, block: Block) -> bool:
        if block.hash in self.executed:
            return True
        if block.header.timestamp_ms > time.time() * 1000 + MAX_FUTURE_DRIFT_MS:
            log_event(log, logging.WARNING, "block from the future refused", height=block.height)
            return False
        try:
            parent_hash = block.header.parent_hash
            head = self.chain.get_head()
            parent = head if parent_hash == head.hash else self.executed[parent_hash].block
            reader = self.reader_for(parent_hash)
            if block.transactions and self._is_suffix(reader, block.height):
                raise ConsensusError(f"block {block.height} is past the last block of validator set "
                                     f"{self.vset.epoch} and may carry no transactions")
            if get_upgrade_required(reader, block.height) is not None:
                # A block it cannot execute gets no vote. The node halts only once the block before is
                # final (_after_commit): this parent state may still be abandoned, with its upgrade.
                return False
            executed = apply_block(get_runtime_at(reader, block.height), reader, parent.header,
                                   self.accumulator_for(parent_hash), block, chain_id=self.node.chain_id,
                                   known_transaction=self.node.mempool.get_by_raw)
        except (ConsensusError, KeyError, ChainshareError) as exc:
            self.stats["invalid_blocks"] += 1
            log_event(log, logging.WARNING, "block failed validation", height=block.height,
                      error=getattr(exc, "message", str(exc)))
            return False
        self.executed[block.hash] = executed
        return True

    def _commit(self, action: core.Commit) -> None:
        blocks = [cb for cb in action.blocks if cb.block.height > self.chain.head_height]  # not yet stored (sync)
        proof_stored = False
        for i, cb in enumerate(blocks):
            if self._is_suffix(self.chain.state, cb.block.height):
                break  # the empty suffix after the last block of this epoch is never stored
            ex = self.executed.get(cb.block.hash)
            if ex is None:
                ex = self._execute_for_commit(cb.block)
            rest = blocks[i + 1:]
            # The last block stored goes down with what proves it final to a peer that syncs from this node
            # alone (or to `chain verify`): the suffix blocks after it, then the certified child of the next
            # view. In the same synced batch, so a crash never leaves a head without its proof.
            last = not rest or self._is_suffix(_Overlay(self.chain.state, ex.state_changes), rest[0].block.height)
            proof = (encode_finality_proof([r.block for r in rest], action.proof.block, action.proof.qc)
                     if last else None)
            extra = self._epoch_change_record(cb.block, ex, proof) if proof is not None else {}
            self.chain.commit_block(cb.block, ex.receipts, ex.senders, ex.tx_hashes, ex.state_changes,
                                    ex.accumulator, cb.qc, finality_proof=proof, extra=extra)
            self._remember_epoch_changes(extra.values())
            proof_stored = last
            self.stats["commits"] += 1
            self._count_finalized(cb.block, proposed=self.my_index is not None and cb.block.header.proposer
                                  == self.vset.validators[self.my_index]["address"])
            if any(lg.address == MEMBERSHIP for r in ex.receipts for lg in r.logs):
                self._membership_changed_since = cb.block.height
            if last:
                break
        head = self.chain.head_height
        self.executed = {h: e for h, e in self.executed.items() if e.block.height > head}
        stale = tuple(k for k, v in self.chain.store.iterate(P_SAFETY_BLOCK + _u64(self.vset.epoch))
                      if _height_of(v) <= head)
        if not proof_stored:  # only suffix blocks were finalized: a newer proof of the same head
            tail = [cb.block for cb in action.blocks if cb.block.height > head]
            self.chain.put_finality_proof(encode_finality_proof(tail, action.proof.block, action.proof.qc), stale)
        elif stale:
            self.chain.store.write_batch({}, stale, sync=False)

    def _execute_for_commit(self, block: Block) -> ExecutedBlock:
        head = self.chain.get_head()
        return apply_block(get_runtime_at(self.chain.state, block.height), self.chain.state, head.header,
                           self.chain.get_accumulator(), block, chain_id=self.node.chain_id)

    def _after_commit(self) -> None:
        self.node.check_upgrade()  # the next block needs a version this release lacks: the core stops
        self.node.notify_finalized()
        self.node.mempool.prune(self.chain.state)
        self._last_progress = time.monotonic()
        if self._membership_changed_since is not None and self.chain.head_height >= self._membership_changed_since:
            self._membership_changed_since = None
            # A revoked agency's node loses its connections now, not at its next reconnect.
            self.transport.revalidate_peers()

    def _keep_evidence(self, action: core.RecordEvidence) -> None:
        """Keep the evidence in this node's store (synced) and log it."""
        ev = action.evidence
        data = ev.encode()
        self.chain.store.write_batch({P_EVIDENCE + keccak256(data): data}, sync=True)
        self.stats["evidence"] += 1
        log_event(log, logging.WARNING, "equivocation evidence recorded", kind=ev.kind, view=ev.view,
                  validator=self.names[ev.get_offender(len(self.names))], epoch=self.vset.epoch)

    def _report_evidence(self, action: core.RecordEvidence) -> None:
        """Report the evidence to the Evidence contract with this node's agency account, so that
        it is on chain for auditors (the contract verifies it and records each equivocation once).
        Every honest node that caught it would report it, and all but one report would revert: the
        validator after the offender in the set reports at once, the others only if it is still
        not recorded ``EVIDENCE_BACKUP_DELAY_S`` later (the dry run before submitting sees it)."""
        ev = action.evidence
        n = len(self.names)
        offender = ev.get_offender(n)
        report = ev.to_report(self.vset.epoch)
        if self.my_index == (offender + 1) % n:
            self._submit_evidence(report, self.names[offender], ev.view)
        else:
            asyncio.get_running_loop().call_later(EVIDENCE_BACKUP_DELAY_S, self._submit_evidence, report,
                                                  self.names[offender], ev.view)

    def _submit_evidence(self, report: bytes, offender: str, view: int) -> None:
        """Sign and submit ``Evidence.report`` (on the event loop: the transaction is gossiped)."""
        if self._stopping:
            return
        sharing = getattr(self.node, "sharing", None)
        if sharing is None:
            log_event(log, logging.WARNING, "equivocation evidence not reported on chain: no agency account")
            return
        tx_hash, error = sharing.submit_call(EVIDENCE, encode_call(EVIDENCE_CONTRACT, "report", report))
        if tx_hash is not None:
            log_event(log, logging.WARNING, "equivocation evidence reported on chain", tx="0x" + tx_hash.hex(),
                      validator=offender, view=view)
        elif error is not None and "already recorded" in error:
            log_event(log, logging.INFO, "equivocation evidence already on chain", validator=offender, view=view)
        else:
            log_event(log, logging.WARNING, "equivocation evidence not reported on chain", reason=error,
                      validator=offender, view=view)

    async def _fetch(self, action: core.FetchBlock) -> None:
        peer, generation = self.names[action.peer], self._generation  # as the core that asked knew them
        try:
            body = await self.transport.request(peer, REQ_BLOCK, action.block_hash, timeout=5)
        except Exception as exc:
            log_event(log, logging.DEBUG, "block fetch failed", peer=peer, error=str(exc))
            return
        if not isinstance(body, bytes) or generation != self._generation:
            return  # no block, or the core that asked was restored meanwhile
        try:
            block = Block.decode(body)
        except DecodeError:
            block = None
        if block is None or block.hash != action.block_hash:
            self.transport.strike(peer, "answered a block request with another block")
            return
        # Not gated by the peer's failure budget: the core asked this peer for this block (fetches are few).
        self.events.put_nowait(core.ProposalReceived(Proposal(block), action.peer))

    # -- network input ------------------------------------------------------------------------
    async def on_message(self, peer: str, msg_type: str, body: Any) -> None:
        if msg_type in (MSG_CONSENSUS, MSG_QC_ANNOUNCEMENT):
            if not isinstance(body, bytes):
                return
            try:
                message = decode_message(body)
            except (DecodeError, ConsensusError):
                self.transport.strike(peer, "undecodable consensus message")
                return
            if self._drops_muted(peer):
                return  # not remembered for the epoch replay either
            self._remember(peer, message, len(body))
            sender = self.index_of.get(peer)
            event = core.event_of(message, sender) if sender is not None else None
            if event is not None:
                self.events.put_nowait(_FromPeer(peer, self._generation, event))
        elif msg_type == MSG_TXS and isinstance(body, list) and len(body) <= MAX_TX_BATCH:
            # Validators form a full mesh and every node broadcasts what it admitted itself, so a
            # batch is not forwarded further; each transaction is verified once here.
            for raw in body:
                if not isinstance(raw, bytes):
                    self.transport.strike(peer, "malformed transaction batch")
                    return
                try:
                    self.node.submit_raw_transaction(raw, gossip=False)
                except ChainshareError:
                    continue

    async def on_request(self, peer: str, msg_type: str, body: Any) -> Any:
        if msg_type == REQ_BLOCK and isinstance(body, bytes):
            ex = self.executed.get(body)
            if ex is not None:
                return ex.block.encode()
            raw = self.chain.store.get(P_SAFETY_BLOCK + _u64(self.vset.epoch) + body)
            if raw is not None:
                return raw
            try:
                return self.chain.get_block(self.chain.get_height_by_hash(body)).encode()
            except ChainshareError:
                return None
        if msg_type == REQ_HEAD:
            return self.chain.head_height
        if msg_type == REQ_PROOF:
            return self.chain.get_finality_proof()
        if msg_type == REQ_EPOCHS:
            if not isinstance(body, int) or isinstance(body, bool) or not 1 <= body < 2**63:
                return []
            proofs = []
            for epoch in range(body, body + EPOCH_PROOF_BATCH):
                raw = self.chain.store.get(P_EPOCH_PROOF + _u64(epoch))
                if raw is None:
                    break
                proofs.append(raw)
            return proofs
        if msg_type == REQ_HASHES:
            return [self.chain.get_block(h).hash for h in self._requested_heights(body)]
        if msg_type == REQ_SYNC:
            out = []
            for h in self._requested_heights(body):
                qc = self.chain.get_qc(h)
                if qc is None:
                    break
                out.append([self.chain.get_block(h).encode(), qc.encode()])
            return out
        return None

    def _requested_heights(self, body: Any) -> range:
        """The finalized heights a ``[start, count]`` request asks for, at most ``SYNC_BATCH`` of them
        (empty for a malformed request)."""
        if not isinstance(body, list) or len(body) != 2:
            return range(0)
        start, count = body
        if not isinstance(start, int) or not isinstance(count, int) or start < 1:
            return range(0)
        return range(start, min(start + min(count, SYNC_BATCH), self.chain.head_height + 1))

    def _remember(self, peer: str, message: Any, size: int) -> None:
        """Keep the latest consensus messages (bounded in count and bytes): a node that enters a
        new epoch replays them to its new core, since the new set's first proposal and votes
        often arrive while it is still finalizing the last block of the old set (the old core
        cannot verify them: they are signed for the next epoch)."""
        self._recent.append((peer, message, size))
        self._recent_bytes += size
        while len(self._recent) > RECENT_MESSAGES or self._recent_bytes > RECENT_MESSAGE_BYTES:
            self._recent_bytes -= self._recent.popleft()[2]

    def _drops_muted(self, peer: str) -> bool:
        """True, counting the message dropped unverified, while ``peer`` is over its failure budget."""
        if not is_muted(self._gates.get(peer), time.monotonic()):
            return False
        self.stats["muted_messages"] += 1
        return True

    def _take(self, item: _FromPeer) -> tuple[str | None, Any] | None:
        """A peer's queued event and whom to charge for it: None when the peer was muted while it waited;
        no one when the core was restored since it arrived (its checks ran under other keys)."""
        if self._drops_muted(item.peer):
            return None
        return (item.peer if item.generation == self._generation else None), item.event

    def _charge(self, peer: str | None, failed: int) -> None:
        """Count ``failed`` checks; charge them to ``peer`` (see chainshare.consensus.peergate)."""
        self.stats["failed_checks"] += failed
        if peer is None:
            return  # a replayed or locally produced event
        now = time.monotonic()
        gate = charge_failed_checks(self._gates.get(peer), failed, now, self._gate_config)
        self._gates[peer] = gate
        if is_muted(gate, now):
            log_event(log, logging.WARNING, "peer muted: its consensus messages failed too many signature checks",
                      peer=peer, mute_s=self._gate_config.mute_s, burst=self._gate_config.burst,
                      per_second=self._gate_config.per_second)

    def _replay_recent(self) -> None:
        """Hand the remembered messages of the validators in force to the (new) core; those of
        another epoch simply fail its signature checks."""
        for peer, message, _ in list(self._recent):
            sender = self.index_of.get(peer)
            event = core.event_of(message, sender) if sender is not None else None
            if event is not None:
                self.events.put_nowait(event)

    def gossip_transaction(self, raw: bytes) -> None:
        """Queue an executable transaction for the next batch to every peer (~every 10 ms; a batch
        holds at most ``MAX_TX_BATCH`` transactions and half a P2P frame of bytes)."""
        if self._tx_out and self._tx_out_bytes + len(raw) > self._max_batch_bytes():
            self._flush_txs()
        self._tx_out.append(raw)
        self._tx_out_bytes += len(raw)
        if len(self._tx_out) >= MAX_TX_BATCH:
            self._flush_txs()
        elif not self._tx_flush_scheduled:
            self._tx_flush_scheduled = True
            asyncio.get_running_loop().call_later(0.01, self._flush_txs)

    def _max_batch_bytes(self) -> int:
        return int(self.node.cfg.p2p.max_frame_bytes) // 2

    def _flush_txs(self) -> None:
        self._tx_flush_scheduled = False
        if self._tx_out:
            batch, self._tx_out, self._tx_out_bytes = self._tx_out, [], 0
            self.transport.broadcast(MSG_TXS, batch)

    # -- block sync -----------------------------------------------------------------------------
    async def sync_from_peers(self) -> int:
        """Fetch, verify (QC + re-execution) and commit finalized blocks peers have beyond our head.

        A QC alone does not prove a block final (a certified block can still be abandoned for a
        sibling), so a block is taken only when, besides the peer that served it, f other
        validators of the set in force hold the same block at that height among their finalized
        ones: at least one of the f+1 is honest, and honest nodes store only final blocks.
        Returns the number of blocks added. Any invalid block from a peer stops the sync from it."""
        if self._syncing:
            return 0
        halted = self.node.upgrade_required
        if halted is not None and self.chain.head_height + 1 >= halted.height:
            return 0  # it holds every block it can execute: nothing to fetch until it runs a newer release
        self._syncing = True
        added = 0
        try:
            for peer in list(self.transport.connected_peers()):
                await self._learn_epoch_changes(peer)
                try:
                    their_head = await self.transport.request(peer, REQ_HEAD, None, timeout=5)
                except Exception:
                    continue
                while isinstance(their_head, int) and their_head > self.chain.head_height:
                    try:
                        batch = await self.transport.request(peer, REQ_SYNC, [self.chain.head_height + 1, SYNC_BATCH],
                                                             timeout=20)
                    except Exception:
                        break
                    if not isinstance(batch, list) or not batch:
                        break
                    confirmed = await self._count_confirmed(peer, self.chain.head_height + 1, batch)
                    proof = await self._fetch_finality_proof(peer, batch) if confirmed < len(batch) else None
                    if confirmed == 0 and proof is None:
                        break  # the others do not hold these blocks (yet): wait for the next sync
                    n, proven = await asyncio.get_running_loop().run_in_executor(
                        self._executor, run_on_cedar_thread, self._apply_synced, batch, confirmed, proof)
                    added += n
                    if self.node.check_upgrade() is not None:
                        break  # stopped before a block of a protocol version this release lacks: no fault
                    if n < (len(batch) if proof is not None else confirmed):
                        self.transport.strike(peer, "invalid block or finality proof in sync")
                        break
            if added:
                self.stats["synced_blocks"] += added
                self._restart_core()
                self._after_commit()
                log_event(log, logging.INFO, "synced from peers", blocks=added, head=self.chain.head_height)
        finally:
            self._syncing = False
        return added

    async def _count_confirmed(self, peer: str, start: int, batch: list[Any]) -> int:
        """How many leading blocks of ``batch`` (served by ``peer`` from height ``start``) enough
        validators hold as final: f+1 of the latest set this node knows (the set in force at its head,
        or a later one proven by epoch-change proofs: the earlier sets may be long gone), counting
        ``peer`` if it is one."""
        confirming = self._get_confirming_set()
        names = {v["name"] for v in confirming.validators}
        needed = sync.count_needed_holders(len(confirming.validators), peer in names)
        if needed == 0:
            return len(batch)
        try:
            hashes = [Block.decode(item[0]).hash for item in batch]
        except (DecodeError, IndexError, TypeError):
            return 0
        others = [q for q in self.transport.connected_peers() if q != peer and q in names]

        async def ask(q: str) -> list[Any]:
            try:
                answer = await self.transport.request(q, REQ_HASHES, [start, len(batch)], timeout=5)
            except Exception:
                return []
            return answer if isinstance(answer, list) else []

        answers = await asyncio.gather(*(ask(q) for q in others))
        return sync.count_confirmed(hashes, answers, needed)

    async def _fetch_finality_proof(self, peer: str, batch: list[Any]) -> _ServedProof | None:
        """``peer``'s proof if it has the shape of a 2-chain over the last block of
        ``batch``, else None: blocks linked to that block (the suffix past the last block of a set,
        if any), each carrying its parent's QC, and a QC on a child of the last of them with the
        next view. The blocks of the batch must link to it by their parent hashes (checked here),
        so that the proof covers them all. Its signatures are checked by ``_apply_synced``, against
        the set that certified that block as read from the executed batch."""
        try:
            raw = await self.transport.request(peer, REQ_PROOF, None, timeout=5)
            if not isinstance(raw, bytes):
                return None
            decoded = decode_finality_proof(raw)
            served = [Block.decode(item[0]) for item in batch]
        except (ChainshareError, DecodeError, IndexError, TypeError, ValueError):
            return None
        if not sync.is_proof_for_batch(decoded, served):
            return None
        return _ServedProof(raw, decoded)

    def _apply_synced(self, batch: list[Any], confirmed: int,
                      proof: _ServedProof | None = None) -> tuple[int, bool]:
        """Check (each QC against the set of its height, re-execution) and commit blocks of
        ``batch`` in order: all of them if ``proof`` (see ``_fetch_finality_proof``) verifies
        against the set that certified the last one, else the first ``confirmed``. The batch is
        executed before anything is committed, so that set is read from the state the batch itself
        leads to (it may schedule a set change). Returns (blocks committed, whether the proof held)."""
        head = self.chain.get_head()
        reader: Any = self.chain.state
        header, acc = head.header, self.chain.get_accumulator()
        done: list[tuple[Block, QuorumCertificate, ExecutedBlock]] = []
        last_set: ValidatorSet | None = None
        for item in batch:
            try:
                block = Block.decode(item[0])
                qc = QuorumCertificate.from_list(codec.decode(item[1]))
                if block.height != header.height + 1 or qc.block_hash != block.hash or qc.height != block.height:
                    break
                if get_upgrade_required(reader, block.height) is not None:
                    break  # the caller halts if this block is the one after our (committed) head
                last_set = get_validator_set_at(reader, block.height)
                if not self._verifier(last_set).verify_qc(qc):
                    break
                ex = apply_block(get_runtime_at(reader, block.height), reader, header, acc, block,
                                 chain_id=self.node.chain_id)
            except (ChainshareError, DecodeError, IndexError, TypeError):
                break
            done.append((block, qc, ex))
            reader, header, acc = _Overlay(reader, ex.state_changes), block.header, ex.accumulator
        holds = (proof is not None and len(done) == len(batch) and last_set is not None
                 and self._finality_signatures_hold(proof, last_set))
        take = sync.count_blocks_to_take(len(done), len(batch), confirmed, holds)
        proven = holds and take == len(batch)
        for i, (block, qc, ex) in enumerate(done[:take]):
            # a proof that held proves our new head final: kept with it, served to peers that sync from us
            kept = proof.raw if proven and proof is not None and i == take - 1 else None
            self.chain.commit_block(block, ex.receipts, ex.senders, ex.tx_hashes, ex.state_changes,
                                    ex.accumulator, qc, finality_proof=kept)
            self._count_finalized(block, proposed=False)
        return take, proven

    def _count_finalized(self, block: Block, proposed: bool) -> None:
        """The node's counters since start: transactions finalized, blocks it proposed."""
        self.node.stats["txs"] += len(block.transactions)
        if proposed:
            self.node.stats["blocks"] += 1

    def _finality_signatures_hold(self, proof: _ServedProof, vs: ValidatorSet) -> bool:
        """True iff every QC of ``proof`` (each block's QC of its parent, and the final QC) is
        signed by a quorum of ``vs``."""
        return sync.proof_signatures_hold(proof.proof, self._verifier(vs).verify_qc)

    async def run_sync_loop(self, interval_s: float = 2.0, stall_s: float = 4.0) -> None:
        """When this replica has finalized nothing for ``stall_s`` (it was down, partitioned, or
        fell more blocks behind than the core fetches one by one), ask for a block sync."""
        while not self._stopping:
            await asyncio.sleep(interval_s)
            if self._proven_sets_epoch() < self.vset.epoch and not self._learning:
                # this validator entered its set by block sync, or crashed before keeping the proof:
                # fetch the epoch-change proofs it lacks, to serve them to nodes that catch up later
                self._spawn(self._learn_epoch_changes_from_peers())
            if self.state is None or time.monotonic() - self._last_progress > stall_s:
                self._last_progress = time.monotonic()
                self.events.put_nowait(_SYNC)

    # -- epoch-change proofs ------------------------------------------------------------------
    def _load_epoch_changes(self) -> list[ValidatorSet]:
        """The sets proven by the epoch-change proofs this node keeps (it verified or made each one),
        in epoch order, stopping at the first gap."""
        sets: list[ValidatorSet] = []
        for _, raw in self.chain.store.iterate(P_EPOCH_PROOF):
            try:
                change = epochs.decode_epoch_change_proof(raw)
            except DecodeError:
                break
            if change.next_set.epoch != len(sets) + 1:
                break
            sets.append(change.next_set)
        return sets

    def _proven_sets_epoch(self) -> int:
        return self._proven_sets[-1].epoch if self._proven_sets else 0

    def _get_latest_proven_set(self) -> ValidatorSet:
        """The latest set known from epoch-change proofs walked from genesis (the genesis set if none)."""
        return self._proven_sets[-1] if self._proven_sets else get_validator_sets(self.chain.state)[0]

    def _get_confirming_set(self) -> ValidatorSet:
        """The set whose f+1 members must hold a synced block: the later of the set in force at our head
        and the latest proven set."""
        latest = self._get_latest_proven_set()
        return latest if latest.epoch > self.vset.epoch else self.vset

    def _epoch_change_record(self, block: Block, ex: ExecutedBlock, proof: bytes) -> dict[bytes, bytes]:
        """The epoch-change proof to store with ``block`` if it is the last block of the current set
        (``proof`` being its 2-chain), else nothing."""
        next_set = get_validator_set_at(_Overlay(self.chain.state, ex.state_changes), block.height + 1)
        if not epochs.is_suffix(next_set.epoch, self.vset.epoch):
            return {}
        return {P_EPOCH_PROOF + _u64(next_set.epoch): epochs.encode_epoch_change_proof(block, proof, next_set)}

    def _remember_epoch_changes(self, raws: Any) -> None:
        for raw in raws:
            change = epochs.decode_epoch_change_proof(raw)
            if change.next_set.epoch == self._proven_sets_epoch() + 1:
                self._proven_sets.append(change.next_set)
                log_event(log, logging.INFO, "epoch-change proof kept", epoch=change.next_set.epoch,
                          height=change.next_set.activation_height)

    async def _learn_epoch_changes_from_peers(self) -> None:
        for peer in list(self.transport.connected_peers()):
            await self._learn_epoch_changes(peer)

    async def _learn_epoch_changes(self, peer: str) -> None:
        """Fetch from ``peer`` the epoch-change proofs past the latest this node holds, verify them one
        after the other from that set (ultimately from genesis) and keep them (synced). A peer serving
        a proof that does not verify gets a strike; the proofs verified before it are kept."""
        if self._learning:
            return
        self._learning = True
        try:
            while not self._stopping:
                latest = self._get_latest_proven_set()
                try:
                    raws = await self.transport.request(peer, REQ_EPOCHS, latest.epoch + 1, timeout=5)
                except Exception:
                    return
                if not isinstance(raws, list) or not raws:
                    return
                raws = raws[:EPOCH_PROOF_BATCH]
                try:
                    changes = [epochs.decode_epoch_change_proof(r) if isinstance(r, bytes) else None for r in raws]
                except DecodeError as exc:
                    self.transport.strike(peer, f"undecodable epoch-change proof: {exc.message}")
                    return
                kept: dict[bytes, bytes] = {}
                for raw, change in zip(raws, changes, strict=True):
                    if change is None:
                        self.transport.strike(peer, "malformed epoch-change proofs")
                        break
                    reason = await asyncio.get_running_loop().run_in_executor(
                        self._executor, epochs.verify_epoch_change, latest, change,
                        epochs.get_bls_verify_qc(self.node.chain_id, latest))
                    if reason is not None:
                        log_event(log, logging.WARNING, "epoch-change proof refused", peer=peer, reason=reason)
                        self.transport.strike(peer, "invalid epoch-change proof")
                        break
                    kept[P_EPOCH_PROOF + _u64(change.next_set.epoch)] = raw
                    latest = change.next_set
                if kept:
                    self.chain.store.write_batch(kept, sync=True)
                    self._remember_epoch_changes(kept.values())
                    self.transport.revalidate_peers()  # a name of a newly proven set is reserved for its agency
                if len(kept) < EPOCH_PROOF_BATCH:
                    return
        finally:
            self._learning = False

    # -- peer admission -------------------------------------------------------------------------
    def make_is_allowed(self) -> Callable[[Any], bool]:
        """Admit (1) a validator of any set this node knows (from its state: past, current or scheduled;
        or proven by epoch-change proofs, whose agency an older state may not know yet), and (2) any other
        node of an agency active in this node's state, for block sync and transactions only, and (3) a node
        named in this node's ``[p2p] peers`` whose agency its state does not know yet (added after the
        state this node holds, e.g. genesis: its bootstrap peers). A validator's name is reserved for its
        agency: a certificate naming it for another agency is refused; an agency known as revoked is
        refused. Consensus messages count only from the validators of the set in force (by name, hence by
        agency). Whatever an admitted peer serves is verified (QCs, re-execution, epoch-change proofs).
        A certificate revoked on chain (``Membership.revokeCertificate``, in this node's finalized state)
        is refused whoever presents it (PeerRefused ``revoked_certificate``)."""
        bootstrap = frozenset(str(entry).partition("@")[0] for entry in self.node.cfg.p2p.peers)

        def is_allowed(subject: Any) -> bool:
            state = self.chain.state
            revoked = get_certificate_revocation(state, subject.fingerprint)
            if revoked is not None:
                raise PeerRefused("revoked_certificate", f"node {subject.node!r} of agency {subject.agency!r} "
                                  f"presented certificate 0x{subject.fingerprint.hex()}, revoked at block "
                                  f"{revoked['height']}: {revoked['reason']}")
            validators = {v["name"]: v["agency"] for vs in get_validator_sets(state) + self._proven_sets
                          for v in vs.validators}
            agency_of_name = validators.get(subject.node)
            if agency_of_name is not None and agency_of_name != subject.agency:
                return False
            agency = get_agency(state, subject.agency)
            if agency is not None:
                return bool(agency["active"])
            # proven by an epoch-change proof, or a configured peer: our state is older than its agency
            return agency_of_name is not None or subject.node in bootstrap

        return is_allowed


def compute_timestamp_wait_ms(timestamp_ms: int, now_ms: int) -> int:
    """How long to wait before validating a block stamped ``timestamp_ms`` at local time ``now_ms``:
    0 if it is within ``MAX_FUTURE_DRIFT_MS`` of our clock, or so far ahead (beyond drift +
    ``MAX_FUTURE_WAIT_MS``) that it is validated, and refused, now; else until it is within drift."""
    ahead = timestamp_ms - now_ms - MAX_FUTURE_DRIFT_MS
    return ahead + 1 if 0 < ahead <= MAX_FUTURE_WAIT_MS else 0


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _height_of(encoded_block: bytes) -> int:
    """The height of a block this node stored for its vote (-1 if unreadable), from the header alone: every
    commit reads those left, and decoding each whole block (with the canonical check meant for peers' bytes)
    cost more than the rest of the commit's bookkeeping."""
    try:
        return Block.read_stored_height(encoded_block)
    except DecodeError:
        return -1
