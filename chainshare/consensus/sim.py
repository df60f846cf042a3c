"""A deterministic network simulator for the consensus core.

``simulate(seed, config)`` runs n validators' cores (``core.step``) over one seeded schedule
(``random.Random(seed)`` is the only source of randomness; simulated time is the only clock):

- before GST (global stabilisation time) messages are delayed by up to ``delay_ms``, dropped,
  duplicated and reordered; partitions split the validators and heal; honest validators crash at
  arbitrary points of their action lists (between ``PersistSafety`` and the sends it allows
  included) and restart from what they persisted (``restore_core``);
- after GST every message arrives within ``gst_delay_ms``, no partition, no crash;
- every node runs the replica's block-sync loop, with the replica's decisions (``consensus/sync.py``:
  f+1 holders, or a batch ending in a head the peer proves final by its 2-chain, which each node
  keeps from its last commit as the replica does);
- one byzantine validator (when ``config.byzantine``) equivocates proposals, double-votes, votes for
  unknown blocks, attempts fork proposals on an older QC, withholds, replays old messages, sends
  garbage and serves forged sync batches (certified blocks that are not final), throughout.

Blocks are real ``Block``s with a fake header (valid hash linkage, fake roots); signatures are the
keyed-keccak ``FakeCrypto``. After every step the simulator checks safety: a commit must extend the
validator's own finalized chain, and no two honest validators may finalize different blocks at one
height (so every honest finalized chain is a prefix of the longest). After GST it checks liveness:
some honest validator finalizes a new block within ``liveness_views`` views, and every honest
validator finalizes ``settle_heights`` new blocks before ``max_ms``.

With ``config.reconfigure`` a schedule also changes the validator set once (``EpochChange``: the
set of n becomes another, at a seeded activation height H), modelling the replica's epoch switch:
the old set certifies blocks of height >= H only as an empty suffix that is never stored; a node
whose commit reaches H-1 carries out the rest of that step's actions, then restores a fresh core of
the new set on H-1 (no safety data) and steps ``Start`` (the decisions are ``consensus/epochs.py``,
the replica's); signatures are separated by epoch
(``FakeCrypto.epoch``, QCs below H checked with ``prior``); a node not in the set in force runs no
core (an observer) and follows by block sync. The checks then also cover H-1 and H, the suffix blocks, and the QC stored with each
block (signed by the set of its height). Three rules keep the new set live, and each can be switched
off to show what it does (tests/sim/test_reconfigure.py): ``announce_qc`` (the core's QC announcement:
the aggregator broadcasts a QC as it forms, so the QC that finalizes the set's last block does not
live only in the aggregator's next proposal, which the switch discards), ``farewell_timeout``
(before switching, the old core times out of its view, which broadcasts that QC again, in a timeout)
and ``sync_epoch_finality_proof`` (block sync takes a batch from one peer that proves its last block
final by a 2-chain: otherwise f+1 holders are needed, and there may be just one).

``run_sim_bench(seeds, n)`` runs many seeds and summarises them (``chainshare bench sim``).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chainshare import codec
from chainshare.consensus import core, epochs, sync
from chainshare.consensus.core import (
    Action,
    BlockValidated,
    Broadcast,
    BuildProposal,
    Commit,
    CommittedBlock,
    CoreConfig,
    CoreState,
    Event,
    FetchBlock,
    LocalTimeout,
    PersistSafety,
    ProposalBuilt,
    ProposalReceived,
    RecordEvidence,
    SafetyData,
    ScheduleTimeout,
    SendTo,
    Start,
    ValidateBlock,
)
from chainshare.consensus.evidence import verify_evidence
from chainshare.consensus.messages import (
    Message,
    Proposal,
    QcAnnouncement,
    Timeout,
    TimeoutCertificate,
    Vote,
    check_tc_shape,
    decode_message,
    encode_message,
)
from chainshare.crypto.hashing import ZERO_HASH, keccak256
from chainshare.errors import DecodeError
from chainshare.ledger import finality
from chainshare.ledger import quorum as ledger_quorum
from chainshare.ledger.quorum import proposal_message, vote_message
from chainshare.ledger.types import (
    EMPTY_BLOOM,
    Block,
    Header,
    QuorumCertificate,
    compute_justify_hash,
    make_bitmap,
)

SIM_CHAIN_ID = 31337
INVALID_TX = b"invalid"


# -- fake crypto ---------------------------------------------------------------------------------

def sim_key(node: int) -> bytes:
    """Node ``node``'s fake signing key (a node keeps its key across validator sets)."""
    return keccak256(b"sim-validator-key" + node.to_bytes(4, "big"))


class FakeCrypto:
    """Keyed keccak in place of BLS, for simulations and tests: validator i's "signature" of m is
    keccak(key_i || m) (96 bytes), an aggregate is keccak over the signers' signatures. A verifier
    recomputes from the keys, so a signature made with one index never verifies as another's.

    As ``BlsCrypto``: ``epoch`` is part of every signed message (nothing signed for one validator
    set verifies for another), and a QC of a block below ``activation_height`` is checked with
    ``prior``, the previous set's verifier."""

    def __init__(self, keys: tuple[bytes, ...], index: int, chain_id: int = SIM_CHAIN_ID, epoch: int = 0, *,
                 prior: FakeCrypto | None = None, activation_height: int = 0) -> None:
        self.keys = keys
        self._index = index
        self.chain_id = chain_id
        self.epoch = epoch
        self.prior = prior
        self.activation_height = activation_height

    @classmethod
    def for_network(cls, n: int, index: int, chain_id: int = SIM_CHAIN_ID) -> FakeCrypto:
        return cls(tuple(sim_key(i) for i in range(n)), index, chain_id)

    def with_index(self, index: int) -> FakeCrypto:
        return FakeCrypto(self.keys, index, self.chain_id, self.epoch, prior=self.prior,
                          activation_height=self.activation_height)

    @property
    def index(self) -> int:
        return self._index

    @property
    def n(self) -> int:
        return len(self.keys)

    def _sig(self, signer: int, message: bytes) -> bytes:
        return keccak256(self.keys[signer] + message) * 3

    def _aggregate(self, sigs: list[bytes]) -> bytes:
        return keccak256(b"".join(sigs)) * 3

    def sign_proposal(self, block_hash: bytes) -> bytes:
        return self._sig(self._index, proposal_message(self.chain_id, block_hash, self.epoch))

    def sign_vote(self, block_hash: bytes, height: int, view: int) -> bytes:
        return self._sig(self._index, vote_message(self.chain_id, block_hash, height, view, self.epoch))

    def sign_timeout(self, view: int, high_qc_view: int) -> bytes:
        return self._sig(self._index, ledger_quorum.timeout_message(self.chain_id, view, high_qc_view, self.epoch))

    def verify_proposal(self, proposer: int, block_hash: bytes, signature: bytes) -> bool:
        return 0 <= proposer < self.n and signature == self._sig(
            proposer, proposal_message(self.chain_id, block_hash, self.epoch))

    def verify_vote(self, vote: Vote) -> bool:
        return vote.voter < self.n and vote.signature == self._sig(
            vote.voter, vote_message(self.chain_id, vote.block_hash, vote.height, vote.view, self.epoch))

    def verify_timeout(self, timeout: Timeout) -> bool:
        return timeout.voter < self.n and timeout.signature == self._sig(
            timeout.voter, ledger_quorum.timeout_message(self.chain_id, timeout.view, timeout.high_qc_view, self.epoch))

    def aggregate_qc(self, block_hash: bytes, height: int, view: int,
                     votes: Mapping[int, bytes]) -> QuorumCertificate:
        indices = sorted(votes)
        return QuorumCertificate(block_hash, height, view, make_bitmap(indices, self.n),
                                 self._aggregate([votes[i] for i in indices]))

    def verify_qc(self, qc: QuorumCertificate) -> bool:
        if qc.height < self.activation_height:
            return self.prior is not None and self.prior.verify_qc(qc)
        if len(qc.signers) != (self.n + 7) // 8:
            return False
        indices = qc.signer_indices()
        if any(i >= self.n for i in indices) or len(indices) < ledger_quorum.compute_quorum(self.n):
            return False
        message = vote_message(self.chain_id, qc.block_hash, qc.height, qc.round, self.epoch)
        return qc.signature == self._aggregate([self._sig(i, message) for i in indices])

    def aggregate_tc(self, view: int, timeouts: Mapping[int, tuple[int, bytes]],
                     high_qc: QuorumCertificate | None) -> TimeoutCertificate:
        indices = sorted(timeouts)
        return TimeoutCertificate(view, make_bitmap(indices, self.n), tuple(timeouts[i][0] for i in indices),
                                  high_qc, self._aggregate([timeouts[i][1] for i in indices]))

    def verify_tc(self, tc: TimeoutCertificate) -> bool:
        indices = check_tc_shape(tc, self.n)
        if indices is None:
            return False
        sigs = [self._sig(i, ledger_quorum.timeout_message(self.chain_id, tc.view, hv, self.epoch))
                for i, hv in zip(indices, tc.high_qc_views, strict=True)]
        return tc.signature == self._aggregate(sigs)


def validator_address(index: int) -> bytes:
    return keccak256(b"sim-validator" + index.to_bytes(4, "big"))[:20]


def make_genesis_block() -> Block:
    header = Header(ZERO_HASH, 0, 0, 0, bytes(20), ZERO_HASH, ZERO_HASH, keccak256(b"genesis"), EMPTY_BLOOM,
                    ZERO_HASH, 0, 0, ZERO_HASH)
    return Block(header, (), None)


def build_sim_block(request: BuildProposal, proposer: bytes, timestamp_ms: int,
                    transactions: tuple[bytes, ...]) -> Block:
    """What a node's block builder does, with fake roots: answers ``BuildProposal``."""
    parent = request.parent
    tc = request.timeout_cert.encode() if request.timeout_cert is not None else None
    header = Header(
        parent_hash=parent.hash, height=parent.height + 1, round=request.view,
        timestamp_ms=max(timestamp_ms, parent.header.timestamp_ms), proposer=proposer,
        tx_root=keccak256(b"".join(transactions)), receipts_root=ZERO_HASH,
        state_root=keccak256(parent.header.state_root + b"".join(transactions)), logs_bloom=EMPTY_BLOOM,
        validator_set_hash=ZERO_HASH, gas_limit=0, gas_used=0,
        justify_hash=compute_justify_hash(request.justify, tc),
    )
    return Block(header, transactions, request.justify, tc)


def is_valid_sim_block(block: Block) -> bool:
    """The simulated re-execution: the fake tx root matches and no transaction is ``INVALID_TX``."""
    return (block.header.tx_root == keccak256(b"".join(block.transactions))
            and INVALID_TX not in block.transactions)


# -- configuration and result --------------------------------------------------------------------

@dataclass(frozen=True)
class SimConfig:
    """One family of schedules. Times are simulated milliseconds; rates are probabilities per
    message (drops, duplicates) or per step of the byzantine validator. The ``unsafe_*`` switches
    are passed to every honest core (tests only: they break a safety rule on purpose)."""

    n: int = 4
    byzantine: bool = True
    gst_ms: int = 5_000
    max_ms: int = 60_000
    settle_heights: int = 3
    liveness_views: int = 16
    base_timeout_ms: int = 300
    max_timeout_ms: int = 2_400
    delay_ms: tuple[int, int] = (1, 500)
    gst_delay_ms: tuple[int, int] = (1, 40)
    exec_ms: tuple[int, int] = (1, 8)
    drop_rate: float = 0.15
    duplicate_rate: float = 0.05
    partitions: int = 2            # at most this many partition episodes before GST
    partition_ms: tuple[int, int] = (200, 3_000)
    crashes: int = 2               # at most this many honest crash/restart episodes before GST
    down_ms: tuple[int, int] = (50, 2_000)
    crash_after_persist_rate: float = 0.5
    byzantine_garbage_rate: float = 0.2
    byzantine_replay_rate: float = 0.2
    byzantine_withhold_rate: float = 0.2
    byzantine_tamper_rate: float = 0.3
    fork_attack: bool = True
    isolate_ms: int = 3_000        # how long the adversary may cut off one validator (before GST only)
    unsafe_skip_tc_rule: bool = False
    unsafe_skip_highest_voted_view_check: bool = False
    reconfigure: bool = False      # one validator-set change (``EpochChange``) at a seeded height
    activation_heights: tuple[int, int] = (2, 9)
    sync_interval_ms: int = 1_000  # block sync: an observer syncs every interval,
    sync_stall_ms: int = 2_000     # a validator once it has finalized nothing for this long
    # The liveness rules that carry the set's last QC across the epoch switch (see the module
    # docstring); False only to show what goes wrong without them.
    announce_qc: bool = True
    farewell_timeout: bool = True
    sync_epoch_finality_proof: bool = True


CHAOS = SimConfig()
"""Before GST: random delays up to 500 ms, drops, duplicates, partitions, crash/restarts."""

TARGETED = SimConfig(drop_rate=0.0, duplicate_rate=0.0, partitions=0, crashes=1, gst_ms=8_000, delay_ms=(1, 40))
"""Before GST the network is quick and reliable except where the byzantine validator steers it: it
cuts off the one validator it showed a finalizing QC to (the fork attack), and one crash/restart."""


def get_scenario(seed: int, reconfigure: bool = False) -> SimConfig:
    """The schedule family of ``seed`` in the standard mix: two seeds of CHAOS for one of TARGETED
    (with one validator-set change when ``reconfigure``)."""
    cfg = TARGETED if seed % 3 == 2 else CHAOS
    return replace(cfg, reconfigure=True) if reconfigure else cfg


EPOCH_CHANGE_KINDS = ("replace", "reorder", "add", "remove")


@dataclass(frozen=True)
class EpochChange:
    """One validator-set change: node ids of the set of epoch 0 and of epoch 1 (in set order, so
    ``members[i]`` is validator i of that set), and the first height epoch 1 certifies.

    ``replace`` drops one validator and adds node n (which starts as an observer with no core),
    ``reorder`` permutes the set, ``add`` adds node n, ``remove`` drops one validator (n = 4 -> 3,
    f = 0, so only when that validator is the byzantine one)."""

    kind: str
    sets: tuple[tuple[int, ...], tuple[int, ...]]
    activation_height: int

    def epoch_at(self, height: int) -> int:
        """The epoch whose set certifies the block at ``height``."""
        return 1 if height >= self.activation_height else 0


def plan_epoch_change(rng: random.Random, n: int, heights: tuple[int, int]) -> tuple[EpochChange, int | None]:
    """A seeded change of a set of ``n`` and the byzantine node for it (None for none): one of the
    union of both sets that each set containing it tolerates (f >= 1)."""
    old = tuple(range(n))
    kind = rng.choice(EPOCH_CHANGE_KINDS if n >= 4 else EPOCH_CHANGE_KINDS[:3])
    new = list(old)
    if kind == "replace":
        new[rng.randrange(n)] = n
    elif kind == "add":
        new.append(n)
    elif kind == "remove":
        new.pop(rng.randrange(n))
    rng.shuffle(new)
    while kind == "reorder" and n > 1 and tuple(new) == old:
        rng.shuffle(new)
    change = EpochChange(kind, (old, tuple(new)), rng.randint(*heights))
    tolerant = [g for g in sorted(set(old) | set(new))
                if all(g not in members or len(members) >= 4 for members in change.sets)]
    return change, (rng.choice(tolerant) if tolerant else None)


@dataclass
class SimResult:
    """What one run saw: every safety violation and liveness failure (empty lists when all held),
    the finalized height of each honest validator, for each height the views between its block
    and its first finalization ("rounds to finality"), and traffic and fault counts."""

    seed: int
    violations: list[str] = field(default_factory=list)
    liveness_failures: list[str] = field(default_factory=list)
    finalized_heights: dict[int, int] = field(default_factory=dict)
    finality_rounds: list[int] = field(default_factory=list)
    messages: int = 0
    garbage_dropped: int = 0
    evidence: int = 0
    crashes: int = 0
    steps: int = 0
    end_ms: int = 0
    views: dict[int, int] = field(default_factory=dict)
    byzantine: int | None = None
    epoch_change: EpochChange | None = None
    switched: int = 0              # cores restored for the next set on committing its activation height - 1
    first_switch_ms: int | None = None
    synced_blocks: int = 0


# -- the simulation ------------------------------------------------------------------------------

@dataclass
class _Node:
    index: int                 # the node id (= its validator index without an epoch change)
    epoch: int = 0             # of the set that certifies the block after its head (its core's)
    core: CoreState | None = None   # None when down, or an observer (not in its epoch's set)
    down: bool = False
    incarnation: int = 0       # bumped when the core is restored: its earlier timers and answers are void
    safety: SafetyData | None = None           # durable
    chain: list[CommittedBlock] = field(default_factory=list)   # durable: heights 1..
    by_hash: dict[bytes, Block] = field(default_factory=dict)   # durable
    voted: dict[bytes, Block] = field(default_factory=dict)     # durable: blocks persisted before a vote
    crash_at: int | None = None
    restart_at: int | None = None
    epoch_ended: bool = False  # a commit reached the last block of its epoch
    last_progress: int = 0
    pending_build: BuildProposal | None = None   # of the step that ended the epoch
    # durable, as the replica keeps it: the 2-chain (suffix blocks, certified child) proving its head final
    head_proof: finality.FinalityProof | None = None


class _Sim:
    def __init__(self, seed: int, cfg: SimConfig) -> None:
        self.seed = seed
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.now = 0
        self.queue: list[tuple[int, int, int, str, Any]] = []
        self.seq = 0
        self.result = SimResult(seed)
        self.genesis = make_genesis_block()
        self.change: EpochChange | None = None
        self.sets: tuple[tuple[int, ...], ...]   # node ids of each epoch's set, in set order
        if cfg.reconfigure:
            self.change, byz = plan_epoch_change(self.rng, cfg.n, cfg.activation_heights)
            self.byz: int | None = byz if cfg.byzantine else None
            self.sets = self.change.sets
        else:
            self.byz = self.rng.randrange(cfg.n) if cfg.byzantine else None
            self.sets = (tuple(range(cfg.n)),)
        self.result.byzantine = self.byz
        self.result.epoch_change = self.change
        self.total = max(max(m) for m in self.sets) + 1   # nodes, validators of any set or not
        self.verifiers: list[FakeCrypto] = []
        for epoch, members in enumerate(self.sets):
            self.verifiers.append(FakeCrypto(
                tuple(sim_key(g) for g in members), 0, SIM_CHAIN_ID, epoch,
                prior=self.verifiers[-1] if epoch else None,
                activation_height=self.change.activation_height if epoch and self.change else 0))
        self.nodes = [_Node(g) for g in range(self.total)]
        self.honest = [i for i in range(self.total) if i != self.byz]
        self.suffix_finalized: dict[int, bytes] = {}   # height -> hash: the old set's empty suffix blocks
        self.finalized: dict[int, bytes] = {}          # height -> hash, first honest commit
        self.decoded: dict[bytes, Message | None] = {}
        self.partitions = self._plan_partitions()
        self._plan_crashes()
        self.replay_pool: list[bytes] = []
        self.isolated: dict[int, int] = {}             # validator -> until (ms), set by the adversary before GST
        self.attack: tuple[int, QuorumCertificate | None] = (0, None)   # fork attack: until, QC to report
        self.fork_blocks: set[bytes] = set()
        self.byz_timeouts: dict[int, dict[int, Timeout]] = {}
        self.byz_blocks: dict[int, list[Block]] = {}   # view -> blocks the byzantine proposed
        self.gst_height: int | None = None
        self.gst_view: int | None = None
        self.first_new_commit_view: int | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def _plan_partitions(self) -> list[tuple[int, int, frozenset[int]]]:
        plans = []
        for _ in range(self.rng.randint(0, self.cfg.partitions)):
            start = self.rng.randrange(self.cfg.gst_ms)
            end = min(self.cfg.gst_ms, start + self.rng.randint(*self.cfg.partition_ms))
            side = frozenset(i for i in range(self.total) if self.rng.random() < 0.5)
            plans.append((start, end, side))
        return plans

    def _plan_crashes(self) -> None:
        for _ in range(self.rng.randint(0, self.cfg.crashes)):
            node = self.nodes[self.rng.choice(self.honest)]
            if node.crash_at is not None:
                continue
            node.crash_at = self.rng.randrange(self.cfg.gst_ms)
            node.restart_at = min(self.cfg.gst_ms, node.crash_at + self.rng.randint(*self.cfg.down_ms))

    def _push(self, at: int, node: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, node, kind, payload))

    def _partitioned(self, a: int, b: int) -> bool:
        if self.isolated and (self.isolated.get(a, 0) > self.now or self.isolated.get(b, 0) > self.now):
            return True
        for start, end, side in self.partitions:
            if start <= self.now < end and ((a in side) != (b in side)):
                return True
        return False

    def _delay(self) -> int:
        lo, hi = self.cfg.gst_delay_ms if self.now >= self.cfg.gst_ms else self.cfg.delay_ms
        return self.rng.randint(lo, hi)

    def send(self, src: int, dst: int, data: bytes, kind: str = "msg") -> None:
        self.result.messages += 1
        if dst == src:
            return
        before_gst = self.now < self.cfg.gst_ms
        if before_gst and (self._partitioned(src, dst) or self.rng.random() < self.cfg.drop_rate):
            return
        self._push(self.now + self._delay(), dst, kind, (src, data))
        if before_gst and self.rng.random() < self.cfg.duplicate_rate:
            self._push(self.now + self._delay(), dst, kind, (src, data))

    def _env(self, node: _Node, at: int, event: Event) -> None:
        self._push(at, node.index, "env", (node.incarnation, event))

    # -- validator sets ---------------------------------------------------------------------------
    def _epoch_at(self, height: int) -> int:
        return self.change.epoch_at(height) if self.change is not None else 0

    def _is_suffix(self, node: _Node, height: int) -> bool:
        """True iff the set ``node``'s core runs certifies ``height`` only as an empty suffix block."""
        return epochs.is_suffix(self._epoch_at(height), node.epoch)

    def _node_of(self, node: _Node, index: int) -> int:
        """The node that is validator ``index`` of ``node``'s current set."""
        return self.sets[node.epoch][index]

    def _core_config(self, g: int, epoch: int) -> CoreConfig | None:
        """Node ``g``'s core configuration in ``epoch`` (None: not in that set, an observer)."""
        members = self.sets[epoch]
        if g not in members:
            return None
        is_byz = g == self.byz
        cfg = self.cfg
        return CoreConfig(
            SIM_CHAIN_ID, tuple(validator_address(m) for m in members), members.index(g),
            base_timeout_ms=cfg.base_timeout_ms, max_timeout_ms=cfg.max_timeout_ms,
            unsafe_skip_tc_rule=cfg.unsafe_skip_tc_rule or is_byz,
            unsafe_skip_highest_voted_view_check=cfg.unsafe_skip_highest_voted_view_check or is_byz)

    def _restore(self, node: _Node) -> None:
        """What the replica does on a restart, an epoch switch or a block sync: rebuild the core
        of the set that certifies the block after the committed head, from the head, its QC and
        what was persisted in that epoch (safety data of an earlier epoch is dropped), then step
        ``Start``; a node not in that set runs no core."""
        head, head_qc = (node.chain[-1].block, node.chain[-1].qc) if node.chain else (self.genesis, None)
        epoch = self._epoch_at(head.height + 1)
        if epoch != node.epoch:
            node.epoch, node.safety, node.voted = epoch, None, {}
            if node.index == self.byz:   # what it saw is keyed by view, and views restart
                self.byz_timeouts, self.byz_blocks = {}, {}
        node.voted = {h: b for h, b in node.voted.items() if b.height > head.height}
        node.incarnation += 1
        node.epoch_ended = False
        node.last_progress = self.now
        config = self._core_config(node.index, epoch)
        if config is None:
            node.core = None
            return
        crypto = self.verifiers[epoch].with_index(config.index)
        node.core = core.restore_core(config, crypto, head, head_qc, node.safety, list(node.voted.values()))
        self._step(node, Start())

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> SimResult:
        for node in self.nodes:
            config = self._core_config(node.index, 0)
            if config is not None:
                node.core = core.initial_state(config, self.verifiers[0].with_index(config.index), self.genesis)
                self._push(0, node.index, "env", (0, Start()))
            if node.crash_at is not None:
                self._push(node.crash_at, node.index, "crash", None)
            self._push(self.cfg.sync_interval_ms, node.index, "sync", None)   # every node runs the sync loop
        self._push(self.cfg.gst_ms, -1, "gst", None)
        while self.queue:
            at, _, idx, kind, payload = heapq.heappop(self.queue)
            if at > self.cfg.max_ms:
                break
            self.now = at
            self.result.steps += 1
            if kind == "gst":
                self._on_gst()
            elif kind == "crash":
                self._crash(self.nodes[idx])
            elif kind == "restart":
                self._restart(self.nodes[idx])
            elif kind == "sync":
                self._on_sync_timer(self.nodes[idx])
            else:
                self._deliver(self.nodes[idx], kind, payload)
            if self._settled() or self.result.violations:
                break   # after a violation the run proves nothing more
        self._finish()
        return self.result

    def _on_gst(self) -> None:
        self.gst_height = max(len(self.nodes[i].chain) for i in self.honest)
        self.gst_view = max(self._honest_views(), default=None)   # None: all honest are down at GST (n = 1)

    def _honest_views(self) -> list[int]:
        return [core_state.view for i in self.honest if (core_state := self.nodes[i].core) is not None]

    def _settled(self) -> bool:
        if self.gst_height is None:
            return False
        return all(len(self.nodes[i].chain) >= self._settle_target() for i in self.honest)

    def _settle_target(self) -> int:
        """The height every honest node must reach: ``settle_heights`` past GST's, and with an
        epoch change, ``settle_heights`` blocks of the new set."""
        assert self.gst_height is not None
        floor = self.change.activation_height - 1 if self.change is not None else 0
        return max(self.gst_height, floor) + self.cfg.settle_heights

    def _finish(self) -> None:
        r = self.result
        r.end_ms = self.now
        r.finalized_heights = {i: len(self.nodes[i].chain) for i in self.honest}
        longest = max((self.nodes[i].chain for i in self.honest), key=len, default=[])
        for i in self.honest:
            chain = self.nodes[i].chain
            if [cb.block.hash for cb in chain] != [cb.block.hash for cb in longest[: len(chain)]]:
                r.violations.append(f"validator {i}'s finalized chain is not a prefix of the longest one")
        r.views = {n.index: n.core.view for n in self.nodes if n.core is not None}
        if self.gst_height is None:
            r.liveness_failures.append("the run ended before GST")
            return
        if self.first_new_commit_view is None:
            r.liveness_failures.append(f"no block finalized after GST (height {self.gst_height}) by {self.now} ms")
        elif self.gst_view is not None and self.first_new_commit_view - self.gst_view > self.cfg.liveness_views:
            r.liveness_failures.append(
                f"first block after GST finalized in view {self.first_new_commit_view}, "
                f"{self.first_new_commit_view - self.gst_view} views after GST (bound {self.cfg.liveness_views})")
        target = self._settle_target()
        lagging = [i for i in self.honest if len(self.nodes[i].chain) < target]
        if lagging:
            r.liveness_failures.append(f"validators {lagging} did not finalize up to height {target} "
                                       f"({self.cfg.settle_heights} blocks after GST) by {self.now} ms")

    def _crash(self, node: _Node) -> None:
        if node.core is None:
            return   # down already, or an observer (which crashes, if at all, once it runs a core)
        node.core = None
        node.down = True
        node.epoch_ended = False
        node.incarnation += 1
        self.result.crashes += 1
        assert node.restart_at is not None
        self._push(max(node.restart_at, self.now + 1), node.index, "restart", None)

    def _restart(self, node: _Node) -> None:
        node.down = False
        node.crash_at = None
        self._restore(node)

    def _deliver(self, node: _Node, kind: str, payload: Any) -> None:
        if node.down:
            return
        if node.core is None:   # an observer: it serves blocks, and a byzantine one replays
            if kind == "fetch":
                self._answer_fetch(node, payload[0], payload[1])
            elif kind == "msg" and node.index == self.byz:
                self._byzantine_observer(node, payload[1])
            return
        if kind == "env":
            incarnation, event = payload
            if incarnation == node.incarnation:
                self._step(node, event)
            return
        src, data = payload
        if kind == "fetch":
            self._answer_fetch(node, src, data)
            return
        message = self._decode(data)
        if message is None:
            self.result.garbage_dropped += 1
            return
        s = node.core
        if node.index == self.byz:
            self.replay_pool.append(data)
            if isinstance(message, Proposal) and src != node.index and self.rng.random() < self.cfg.byzantine_tamper_rate:
                self._relay_tampered(node, message.block)
            if isinstance(message, Timeout) and message.voter < s.config.n and s.crypto.verify_timeout(message):
                self.byz_timeouts.setdefault(message.view, {}).setdefault(message.voter, message)
        members = self.sets[node.epoch]
        if src not in members:
            return   # the replica takes consensus messages only from validators of its set
        self._step(node, core.event_of(message, members.index(src)))

    def _decode(self, data: bytes) -> Message | None:
        if data in self.decoded:
            return self.decoded[data]
        try:
            message: Message | None = decode_message(data)
        except DecodeError:
            message = None
        self.decoded[data] = message
        return message

    def _answer_fetch(self, node: _Node, requester: int, block_hash: bytes) -> None:
        block = node.by_hash.get(block_hash) or node.voted.get(block_hash)
        if block is None and node.core is not None:
            entry = node.core.blocks.get(block_hash)
            block = entry.block if entry is not None else None
        if node.index == self.byz:
            roll = self.rng.random()
            if roll < 0.3:
                return
            if roll < 0.5:
                self.send(node.index, requester, self.rng.randbytes(self.rng.randint(0, 64)))
                return
        if block is not None:
            self.send(node.index, requester, encode_message(Proposal(block)))

    # -- one core step and its actions ------------------------------------------------------------
    def _step(self, node: _Node, event: Event) -> None:
        assert node.core is not None
        state, actions = core.step(node.core, event)
        node.core = state
        if node.index == self.byz:
            self._byzantine_actions(node, event, actions)
            self._switch_if_epoch_ended(node)
            return
        cut = len(actions)
        if node.crash_at is not None and self.now >= node.crash_at and self.now < self.cfg.gst_ms:
            persists = [i for i, a in enumerate(actions) if isinstance(a, PersistSafety)]
            if persists and self.rng.random() < self.cfg.crash_after_persist_rate:
                cut = persists[0] + 1   # persisted, then died before sending what it allows
            else:
                cut = self.rng.randint(0, len(actions))
        for action in actions[:cut]:
            self._execute(node, action)
        node.pending_build = next((a for a in actions[:cut] if isinstance(a, BuildProposal)), None)
        if cut < len(actions) or (node.crash_at is not None and self.now >= node.crash_at
                                  and self.now < self.cfg.gst_ms):
            self._crash(node)   # a restart restores the core of the epoch after its head
        self._switch_if_epoch_ended(node)

    def _switch_if_epoch_ended(self, node: _Node) -> None:
        """The epoch switch, as the replica does it: once a commit reached the last block of the
        set's epoch and the rest of that step's actions were carried out (under the old epoch),
        restore a fresh core of the next set on that block (no safety data, no blocks) and step
        ``Start``; a node not in the next set becomes an observer."""
        if node.epoch_ended and node.core is not None:
            if self.cfg.farewell_timeout and node.index != self.byz:
                # the replica's farewell (epochs.compute_farewell): time out of the view; the
                # timeout carries the QC that finalized the set's last block to the others
                node.core, actions = epochs.compute_farewell(node.core)
                for action in actions:
                    self._execute(node, action)
            node.pending_build = None
            self.result.switched += 1
            if self.result.first_switch_ms is None:
                self.result.first_switch_ms = self.now
            self._restore(node)

    def _execute(self, node: _Node, action: Action) -> None:
        i = node.index
        if isinstance(action, PersistSafety):
            node.safety = action.data
            if action.block is not None:
                node.voted[action.block.hash] = action.block
        elif isinstance(action, Broadcast):
            if isinstance(action.message, QcAnnouncement) and not self.cfg.announce_qc:
                return
            data = encode_message(action.message)   # the transport reaches every node
            for j in range(self.total):
                if j != i:
                    self.send(i, j, data)
        elif isinstance(action, SendTo):
            self.send(i, self._node_of(node, action.index), encode_message(action.message))
        elif isinstance(action, BuildProposal):
            if self._is_suffix(node, action.parent.height + 1):
                txs: tuple[bytes, ...] = ()   # a suffix block of the old set carries no transactions
            else:
                txs = (b"tx/%d/%d/%d" % (i, action.view, self.rng.randrange(1 << 30)),)
            block = build_sim_block(action, validator_address(i), self.now, txs)
            self._env(node, self.now + self.rng.randint(*self.cfg.exec_ms), ProposalBuilt(block))
        elif isinstance(action, ValidateBlock):
            b = action.block
            ok = is_valid_sim_block(b) and not (b.transactions and self._is_suffix(node, b.height))
            self._env(node, self.now + self.rng.randint(*self.cfg.exec_ms), BlockValidated(b.hash, ok))
        elif isinstance(action, ScheduleTimeout):
            self._env(node, self.now + action.duration_ms, LocalTimeout(action.view))
        elif isinstance(action, Commit):
            self._on_commit(node, action)
        elif isinstance(action, FetchBlock):
            self.send(i, self._node_of(node, action.peer), action.block_hash, kind="fetch")
        elif isinstance(action, RecordEvidence):
            assert node.core is not None
            self.result.evidence += 1
            n = node.core.config.n
            offender = self._node_of(node, action.evidence.get_offender(n))
            if not verify_evidence(action.evidence, node.core.crypto, n):
                self.result.violations.append(f"validator {i} recorded evidence that does not verify")
            elif offender != self.byz:
                self.result.violations.append(f"validator {i} recorded evidence against honest validator {offender}")

    def _on_commit(self, node: _Node, commit: Commit) -> None:
        """The safety check, after every step that finalizes anything. Blocks the node's set
        certifies past its last height (the suffix) are checked against each other, not stored."""
        assert node.core is not None
        last = node.chain[-1].block if node.chain else self.genesis
        suffix: list[Block] = []
        for cb in commit.blocks:
            b = cb.block
            if b.header.parent_hash != last.hash or b.height != last.height + 1:
                self.result.violations.append(
                    f"t={self.now} validator {node.index} finalized block {b.height} that does not extend its chain")
                return
            if cb.qc.block_hash != b.hash or cb.qc.round != b.header.round:
                self.result.violations.append(f"t={self.now} validator {node.index} committed with a foreign QC")
            last = b
            if self._is_suffix(node, b.height):
                self._check_suffix(node, b)
                suffix.append(b)
                continue
            known = self.finalized.get(b.height)
            if known is None:
                self.result.finality_rounds.append(node.core.view - b.header.round)
                if self.gst_height is not None and b.height > self.gst_height and self.first_new_commit_view is None:
                    self.first_new_commit_view = max(self._honest_views())
            self._store_final(node, cb)
        proof = commit.proof
        if proof.block.header.parent_hash != last.hash or proof.qc.block_hash != proof.block.hash \
                or proof.block.header.round != last.header.round + 1:
            self.result.violations.append(f"t={self.now} validator {node.index} committed without a 2-chain proof")
        if len(suffix) < len(commit.blocks):   # a block was stored: keep its proof, as the replica does
            node.head_proof = finality.FinalityProof((*suffix, proof.block), proof.qc)

    def _store_final(self, node: _Node, cb: CommittedBlock) -> None:
        """Append a finalized block to ``node``'s durable chain; a violation if another honest node
        finalized another block at that height, or (with an epoch change) if its QC does not
        verify with the set of its height. Reaching the last block of the node's epoch ends it."""
        b = cb.block
        known = self.finalized.get(b.height)
        if known is None:
            self.finalized[b.height] = b.hash
        elif known != b.hash:
            self.result.violations.append(
                f"t={self.now} SAFETY: validator {node.index} finalized {b.hash.hex()[:12]} at height "
                f"{b.height}, another honest validator finalized {known.hex()[:12]}")
        if self.change is not None and not self.verifiers[self._epoch_at(b.height)].verify_qc(cb.qc):
            self.result.violations.append(
                f"t={self.now} validator {node.index} stored block {b.height} with a QC its set did not sign")
        node.chain.append(cb)
        node.by_hash[b.hash] = b
        node.last_progress = self.now
        if epochs.has_epoch_ended(self._epoch_at(b.height + 1), node.epoch):
            node.epoch_ended = True

    def _check_suffix(self, node: _Node, b: Block) -> None:
        """A finalized suffix block: empty, and the same at its height for every honest node."""
        if b.transactions:
            self.result.violations.append(
                f"t={self.now} validator {node.index} finalized suffix block {b.height} with transactions")
        known = self.suffix_finalized.setdefault(b.height, b.hash)
        if known != b.hash:
            self.result.violations.append(
                f"t={self.now} SAFETY: validator {node.index} finalized suffix block {b.hash.hex()[:12]} at "
                f"height {b.height}, another honest validator finalized {known.hex()[:12]}")

    # -- block sync (with an epoch change) --------------------------------------------------------
    def _on_sync_timer(self, node: _Node) -> None:
        """The replica's sync loop: an observer syncs every interval, a validator once it has
        finalized nothing for ``sync_stall_ms``."""
        self._push(self.now + self.cfg.sync_interval_ms, node.index, "sync", None)
        if node.down or (node.core is not None and self.now - node.last_progress < self.cfg.sync_stall_ms):
            return
        node.last_progress = self.now
        self._sync(node)

    def _sync(self, node: _Node) -> None:
        """Block sync as the replica does it, with its decisions (``consensus/sync.py``): from a
        reachable peer that is ahead (the byzantine one included, which serves its finalized chain
        followed by blocks it holds certified but not final, and confirms nothing), take the blocks
        that f+1 validators of the set in force hold as final, or all of a batch that the peer's
        head proof shows final; each block must link to the head and carry a QC of its height's set."""
        g = node.index
        height = len(node.chain)
        vset = self.sets[self._epoch_at(height + 1)]
        reachable = [j for j in range(self.total) if j != g and not self.nodes[j].down
                     and not (self.now < self.cfg.gst_ms and self._partitioned(g, j))]
        served = {j: self._served_chain(self.nodes[j])[height:] for j in reachable}
        sources = [j for j in reachable if served[j]]
        if not sources:
            return
        peer = self.rng.choice(sources)
        batch = served[peer]
        blocks = [cb.block for cb in batch]
        answers = [[cb.block.hash for cb in self.nodes[j].chain[height:]]
                   for j in reachable if j in vset and j not in (peer, self.byz)]
        checked = 0
        parent = node.chain[-1].block if node.chain else self.genesis
        for cb in batch:
            b = cb.block
            if (b.header.parent_hash != parent.hash or cb.qc.block_hash != b.hash
                    or not self.verifiers[self._epoch_at(b.height)].verify_qc(cb.qc)):
                break
            checked += 1
            parent = b
        proof = self._served_proof(self.nodes[peer]) if self.cfg.sync_epoch_finality_proof else None
        verify = self.verifiers[self._epoch_at(blocks[-1].height)].verify_qc
        take = sync.decide_sync(blocks, checked, answers, sync.count_needed_holders(len(vset), peer in vset), proof,
                                verify)
        for cb in batch[:take]:
            self._store_final(node, cb)
        if (take and take == len(batch) and proof is not None and sync.is_proof_for_batch(proof, blocks)
                and sync.proof_signatures_hold(proof, verify)):
            node.head_proof = proof   # kept with the new head and served on, as the replica does
        if take:
            self.result.synced_blocks += take
            self._restore(node)

    def _served_chain(self, peer: _Node) -> list[CommittedBlock]:
        """What ``peer`` serves to a block sync: its finalized chain; the byzantine one appends the
        blocks it holds certified above its head (final or not, it does not say)."""
        if peer.index != self.byz or peer.core is None:
            return peer.chain
        chain = list(peer.chain)
        head = chain[-1].block if chain else self.genesis
        s = peer.core
        extended = True
        while extended:
            extended = False
            for h, qc in s.certified.items():
                entry = s.blocks.get(h)
                if entry is not None and entry.block.header.parent_hash == head.hash:
                    chain.append(CommittedBlock(entry.block, qc))
                    head, extended = entry.block, True
                    break
        return chain

    def _served_proof(self, peer: _Node) -> finality.FinalityProof | None:
        """``peer``'s head proof; the byzantine one offers a certified child of the last block it
        serves, whatever its view (a 2-chain only if the views are consecutive)."""
        if peer.index != self.byz or peer.core is None:
            return peer.head_proof
        served = self._served_chain(peer)
        if not served:
            return peer.head_proof
        last = served[-1].block
        for h, qc in peer.core.certified.items():
            entry = peer.core.blocks.get(h)
            if entry is not None and entry.block.header.parent_hash == last.hash:
                return finality.FinalityProof((entry.block,), qc)
        return peer.head_proof

    # -- the byzantine validator ------------------------------------------------------------------
    def _byzantine_actions(self, node: _Node, event: Event, actions: list[Action]) -> None:
        rng = self.rng
        i = node.index
        assert node.core is not None
        if isinstance(event, ProposalReceived) and event.proposal.block.header.parent_hash in self.fork_blocks:
            self._support_fork(node, event.proposal.block)
        for action in actions:
            if isinstance(action, Commit):   # first: the fork attack looks for just-finalized blocks
                for cb in action.blocks:
                    node.by_hash[cb.block.hash] = cb.block
                    b = cb.block
                    head = node.chain[-1].block if node.chain else self.genesis
                    if b.header.parent_hash == head.hash and not self._is_suffix(node, b.height):
                        node.chain.append(cb)   # kept (unchecked) for its restores; it serves no sync
                        node.epoch_ended = self._is_suffix(node, b.height + 1)
        for action in actions:
            if isinstance(action, BuildProposal):
                self._equivocate(node, action)
            elif isinstance(action, (Broadcast, SendTo)):
                if rng.random() < self.cfg.byzantine_withhold_rate:
                    continue
                if isinstance(action.message, Timeout) and self.now < self.attack[0]:
                    self._lying_timeout(node, action.message.view)   # keep the newest QC hidden
                    continue
                self._execute(node, action)
                if isinstance(action, SendTo) and isinstance(action.message, Vote):
                    self._double_vote(node, action.message, action.index)
            elif isinstance(action, ValidateBlock):
                self._env(node, self.now + 1, BlockValidated(action.block.hash, True))
            elif isinstance(action, (ScheduleTimeout, FetchBlock)):
                self._execute(node, action)
        if self.now < self.attack[0]:
            return   # while a fork attack runs, say nothing that could carry the newest QC
        if rng.random() < self.cfg.byzantine_replay_rate and self.replay_pool:
            self.send(i, rng.randrange(self.total), rng.choice(self.replay_pool))
        if rng.random() < self.cfg.byzantine_garbage_rate:
            self.send(i, rng.randrange(self.total), self._garbage(node))
        if isinstance(event, LocalTimeout) and rng.random() < 0.5:
            # premature timeout for the next view too (a byzantine may time out whenever it likes)
            s = node.core
            hq_view = s.highest_qc.round if s.highest_qc is not None else 0
            t = Timeout(s.view + 1, s.config.index, s.highest_qc, None, s.crypto.sign_timeout(s.view + 1, hq_view))
            data = encode_message(t)
            for j in range(self.total):
                self.send(i, j, data)

    def _byzantine_observer(self, node: _Node, data: bytes) -> None:
        """Without a core (not in the set in force) the byzantine node still keeps what it hears
        and replays it, to anyone: messages of one epoch offered to the cores of another."""
        self.replay_pool.append(data)
        if self.rng.random() < self.cfg.byzantine_replay_rate:
            self.send(node.index, self.rng.randrange(self.total), self.rng.choice(self.replay_pool))

    def _find_block(self, node: _Node, block_hash: bytes) -> Block | None:
        assert node.core is not None
        entry = node.core.blocks.get(block_hash)
        if entry is not None:
            return entry.block
        if block_hash == node.core.committed.hash:
            return node.core.committed
        if block_hash == self.genesis.hash:
            return self.genesis
        return node.by_hash.get(block_hash)

    def _fork_block(self, node: _Node, request: BuildProposal) -> Block | None:
        """A block for this view that extends an ancestor of highest_qc.block, one or two levels up.
        Two levels up forks below the block that QC(highest) may have just finalized: the attack
        that rule 2's TC branch stops."""
        if request.justify is None:
            return None
        x = self._find_block(node, request.justify.block_hash)
        if x is None or x.height == 0:
            return None
        parent = self._find_block(node, x.header.parent_hash)
        justify = x.justify
        if parent is None:
            return None
        if self.rng.random() < 0.7 and parent.height > 0:
            grandparent = self._find_block(node, parent.header.parent_hash)
            if grandparent is not None:
                parent, justify = grandparent, parent.justify
        if justify is not None and justify.round >= request.view:
            return None
        tc = request.timeout_cert
        fork_qc_view = justify.round if justify is not None else 0
        if tc is None or tc.max_high_qc_view > fork_qc_view:
            tc = self._favourable_tc(node, request.view - 1, justify)
        fork_req = replace(request, parent=parent, justify=justify, timeout_cert=tc)
        txs = () if self._is_suffix(node, parent.height + 1) else (b"fork/%d" % request.view,)
        return build_sim_block(fork_req, validator_address(node.index), self.now, txs)

    def _favourable_tc(self, node: _Node, view: int, qc: QuorumCertificate | None) -> TimeoutCertificate | None:
        """A TC for ``view`` from timeouts the byzantine saw that report no QC above ``qc``, plus its
        own (lying) timeout: the certificate that would let a fork on ``qc`` pass rule 2."""
        assert node.core is not None
        s = node.core
        qc_view = qc.round if qc is not None else 0
        if qc_view >= view:
            return None
        me = s.config.index
        seen = [t for t in self.byz_timeouts.get(view, {}).values() if t.high_qc_view <= qc_view and t.voter != me]
        quorum = s.config.quorum
        if len(seen) + 1 < quorum:
            return None
        parts = {t.voter: (t.high_qc_view, t.signature) for t in seen[: quorum - 1]}
        parts[me] = (qc_view, s.crypto.sign_timeout(view, qc_view))
        return s.crypto.aggregate_tc(view, parts, qc)

    def _equivocate(self, node: _Node, request: BuildProposal) -> None:
        """As leader: sign different blocks for the view and split them among the others; with a
        fork block, the honest-looking block (carrying the newest QC) goes to one validator only
        (so it alone learns what that QC finalizes) and the fork to the rest."""
        rng = self.rng
        i = node.index
        assert node.core is not None
        s = node.core
        cfg = s.config
        addr = validator_address(i)
        suffix = self._is_suffix(node, request.parent.height + 1)
        # In the suffix its "honest" block is empty (as an honest one must be), the others are not.
        honest_txs = () if suffix else (b"byz/%d/%d" % (request.view, rng.randrange(1 << 30)),)
        honest_block = build_sim_block(request, addr, self.now, honest_txs)
        other = build_sim_block(request, addr, self.now, (INVALID_TX if rng.random() < 0.3 else b"byz2/%d" % request.view,))
        fork = self._fork_block(node, request) if self.cfg.fork_attack else None
        blocks = [b for b in (honest_block, other, fork) if b is not None]
        signed = [Block(b.header, b.transactions, b.justify, b.timeout_cert, s.crypto.sign_proposal(b.hash))
                  for b in blocks]
        self.byz_blocks[request.view] = signed
        others = [j for j in range(cfg.n) if j != cfg.index]   # validator indices of its set
        isolate: int | None = None
        if fork is not None and rng.random() < 0.6:
            # Only `chosen` learns the newest QC (what it finalizes); the network adversary (before
            # GST) cuts it off, and a timeout for the previous view reporting an older QC helps the
            # others form a TC without that QC, so that they enter this view and see only the fork.
            lucky = [j for j in others if j not in (cfg.leader(request.view + 1), cfg.leader(request.view + 2))] or others
            chosen = rng.choice(lucky)
            plan = {j: (signed[0] if j == chosen else signed[-1]) for j in others}
            if self.now < self.cfg.gst_ms:
                isolate = chosen   # after it has been sent its block
            x = self._find_block(node, request.justify.block_hash) if request.justify is not None else None
            if x is not None:
                old_qc = x.justify
                old_view = old_qc.round if old_qc is not None else 0
                self.attack = (min(self.cfg.gst_ms, self.now + self.cfg.isolate_ms), old_qc)
                lie = Timeout(request.view - 1, cfg.index, old_qc, None, s.crypto.sign_timeout(request.view - 1, old_view))
                for j in others:
                    if j != chosen:
                        self.send(i, self._node_of(node, j), encode_message(lie))
        else:
            plan = {j: rng.choice(signed) for j in others}
        for j, b in plan.items():
            if rng.random() >= self.cfg.byzantine_withhold_rate / 2:
                self.send(i, self._node_of(node, j), encode_message(Proposal(b)))
        if isolate is not None:
            self.isolated[self._node_of(node, isolate)] = min(self.cfg.gst_ms, self.now + self.cfg.isolate_ms)
            self._support_fork(node, signed[-1])
        for b in signed:
            self._env(node, self.now + 1, ProposalReceived(Proposal(b), i))

    def _support_fork(self, node: _Node, block: Block) -> None:
        """Vote for a fork block, and later for every block that extends it."""
        assert node.core is not None
        s = node.core
        self.fork_blocks.add(block.hash)
        v = block.header.round
        vote = Vote(block.hash, block.height, v, s.config.index, s.crypto.sign_vote(block.hash, block.height, v))
        self.send(node.index, self._node_of(node, s.config.leader(v + 1)), encode_message(vote))

    def _relay_tampered(self, node: _Node, block: Block) -> None:
        """Race an honest proposal with a copy under the same signed header: TC stripped, or
        another body (the header hash covers neither the TC nor, for the core, the body)."""
        if block.timeout_cert is not None and self.rng.random() < 0.5:
            copy = replace(block, timeout_cert=None)
        else:
            copy = replace(block, transactions=(INVALID_TX,))
        data = encode_message(Proposal(copy))
        for j in range(self.total):
            self.send(node.index, j, data)

    def _lying_timeout(self, node: _Node, view: int) -> None:
        """A timeout that reports an older QC than the byzantine holds."""
        old_qc = self.attack[1]
        old_view = old_qc.round if old_qc is not None else 0
        if old_view >= view:
            return
        assert node.core is not None
        s = node.core
        lie = Timeout(view, s.config.index, old_qc, None, s.crypto.sign_timeout(view, old_view))
        data = encode_message(lie)
        for j in range(self.total):
            self.send(node.index, j, data)

    def _double_vote(self, node: _Node, vote: Vote, leader: int) -> None:
        rng = self.rng
        others = [b for b in self.byz_blocks.get(vote.view, []) if b.hash != vote.block_hash]
        if others:
            b = others[-1] if rng.random() < 0.7 else rng.choice(others)   # the fork block, if any, is last
            target_hash, height = b.hash, b.height
        else:
            target_hash, height = rng.randbytes(32), vote.height   # a vote for a block nobody has
        assert node.core is not None
        s = node.core
        conflicting = Vote(target_hash, height, vote.view, s.config.index, s.crypto.sign_vote(target_hash, height, vote.view))
        self.send(node.index, rng.choice([self._node_of(node, leader), rng.randrange(self.total)]),
                  encode_message(conflicting))

    def _garbage(self, node: _Node) -> bytes:
        rng = self.rng
        assert node.core is not None
        s = node.core
        kind = rng.randrange(7)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 200))
        if kind == 1 and self.replay_pool:
            data = rng.choice(self.replay_pool)
            return data[: rng.randrange(len(data))] if data else data
        if kind == 2:   # a well-formed vote with a forged signature for another validator
            return encode_message(Vote(rng.randbytes(32), rng.randint(1, 50), s.view, rng.randrange(s.config.n),
                                       rng.randbytes(96)))
        if kind == 3:   # out-of-range indices and views
            return encode_message(Vote(rng.randbytes(32), 2**64 - 1, 2**64 - 1, 2**32, rng.randbytes(96)))
        if kind == 4:   # a timeout whose signed high-QC view is not the QC it carries
            return encode_message(Timeout(s.view, s.config.index, s.highest_qc, None,
                                          s.crypto.sign_timeout(s.view, s.view - 1)))
        if kind == 5:   # a far-future proposal with a stale QC, signed by us where we are not leader
            header = Header(rng.randbytes(32), 10**6, 2**40 + 1, 0, validator_address(node.index), ZERO_HASH,
                            ZERO_HASH, ZERO_HASH, EMPTY_BLOOM, ZERO_HASH, 0, 0, ZERO_HASH)
            return encode_message(Proposal(Block(header, (), None, b"\x91\x00", rng.randbytes(96))))
        return codec.encode([rng.randint(0, 5), [rng.randbytes(8), -1, None]])


def simulate(seed: int, config: SimConfig | None = None) -> SimResult:
    """Run one seeded schedule; the result lists every safety violation and liveness failure."""
    return _Sim(seed, config or SimConfig()).run()


def summarize_rounds(rounds: list[int]) -> dict[str, Any]:
    if not rounds:
        return {"p50": None, "p99": None, "max": None, "histogram": {}}
    ordered = sorted(rounds)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"p50": pct(0.50), "p99": pct(0.99), "max": ordered[-1],
            "histogram": {str(k): v for k, v in sorted(Counter(ordered).items())}}


def run_sim_bench(seeds: int, n: int = 4, config: SimConfig | None = None,
                  reconfigure: bool = False) -> dict[str, Any]:
    """Run seeds 0..seeds-1 (each with ``config``, or the standard mix ``get_scenario``, with one
    validator-set change per seed when ``reconfigure``) and summarise them: the object
    ``chainshare bench sim`` prints."""
    started = time.perf_counter()
    violations = liveness = messages = evidence = switched = synced = 0
    rounds: list[int] = []
    failed: list[int] = []
    for seed in range(seeds):
        cfg = config or get_scenario(seed, reconfigure)
        r = simulate(seed, replace(cfg, n=n, byzantine=cfg.byzantine and n >= 4))   # a byzantine needs f >= 1
        switched += r.switched
        synced += r.synced_blocks
        violations += len(r.violations)
        liveness += 1 if r.liveness_failures else 0
        if r.violations or r.liveness_failures:
            failed.append(seed)
        messages += r.messages
        evidence += r.evidence
        rounds.extend(r.finality_rounds)
    return {
        "scenario": "sim", "seeds": seeds, "n": n, "violations": violations, "liveness_failures": liveness,
        "failed_seeds": failed[:20], "finality_rounds": summarize_rounds(rounds), "messages": messages,
        "evidence": evidence, "wall_s": round(time.perf_counter() - started, 3),
        **({"reconfigure": True, "epoch_switches": switched,
            "synced_blocks": synced} if reconfigure else {}),
    }
