"""The node: the one place that wires storage, execution, mempool, block production and the API.

Until multi-validator consensus lands, a node is the single validator of its network: it
proposes a block every ``block_time_ms`` (or as soon as a block's worth of transactions waits),
signs it, certifies it with its own BLS vote (a 1-of-1 quorum certificate, the same format a
4-validator QC has) and commits it durably before any receipt becomes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from chainshare import CLIENT_VERSION
from chainshare.config import NodeConfig, read_json_file
from chainshare.crypto import bls
from chainshare.errors import ConfigError, ConsensusError, InvalidTransaction, StorageError
from chainshare.execution.block import ExecutedBlock, build_block
from chainshare.execution.contracts.cedar import run_on_cedar_thread
from chainshare.execution.contracts.membership import (
    get_validator_set_at,
    get_validator_sets,
    select_validator_set,
)
from chainshare.execution.forks import UpgradeRequired, get_runtime_at, get_upgrade_required
from chainshare.execution.genesis import Genesis, compute_genesis_block, get_chain_params, load_genesis
from chainshare.execution.runtime import BlockEnv, MethodSpec, Runtime, SystemContract
from chainshare.gcpolicy import GC_THRESHOLDS, apply_gc_policy
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.quorum import aggregate_qc, sign_proposal, sign_vote
from chainshare.ledger.state import StateView
from chainshare.ledger.store import KeyValueStore, LevelDBStore
from chainshare.ledger.txs import Transaction
from chainshare.logs import log_event
from chainshare.mempool import Mempool, MempoolLimits

log = logging.getLogger("chainshare.node")


def open_chain(store: KeyValueStore, genesis: Genesis) -> ChainStore:
    """Open (or initialise with block 0) the chain for ``genesis``; refuses a foreign data dir."""
    block0, state, acc = compute_genesis_block(genesis)
    chain = ChainStore(store)
    chain.check_identity(genesis.chain_id, block0.hash)
    chain.upgrade_format()
    if chain.head_height < 0:
        chain.initialize(block0, state, acc, genesis.chain_id, json.dumps(genesis.to_json()).encode())
    return chain


@dataclass(frozen=True)
class ValidatorKey:
    """This node's BLS key; its index differs per validator set (``ValidatorSet.index_of_key``)."""

    secret_key: bytes
    public_key: bytes


def load_validator_key(cfg: NodeConfig, genesis: Genesis) -> ValidatorKey:
    """Decrypt this node's BLS key (the node checks it against the chain's validator sets)."""
    from chainshare.crypto.keystore import decrypt_bls_key, read_password

    keystore = read_json_file(cfg.path(cfg.validator.key_file), "validator key file")
    pw_file = cfg.path(cfg.validator.password_file) if cfg.validator.password_file else None
    if pw_file is None and cfg.node.dev_mode:
        password = ""
    else:
        password = read_password(pw_file)
    secret = decrypt_bls_key(keystore, password)
    return ValidatorKey(secret, bls.public_key(secret))


class Node:
    """A running node: chain, mempool, producer; the API reads through this object."""

    def __init__(self, cfg: NodeConfig, genesis: Genesis, store: KeyValueStore, key: ValidatorKey) -> None:
        self.cfg = cfg
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.chain = open_chain(store, genesis)
        self.upgrade_required: UpgradeRequired | None = None  # set once: halted before a version it lacks
        self._runtime_at: tuple[int, Runtime] | None = None  # (head height, runtime of the next block)
        self.key = key
        sets = get_validator_sets(self.chain.state)
        validators = select_validator_set(sets, self.chain.head_height + 1).validators
        self.multi_validator = len(validators) > 1 or len(sets) > 1
        m = cfg.mempool
        self.mempool = Mempool(_NextBlockRules(self), self.chain_id,  # type: ignore[arg-type]  # duck-typed
                               MempoolLimits(m.max_per_sender, m.max_total, m.max_nonce_gap, m.max_sender_bytes,
                                             m.max_total_bytes, m.queued_ttl_s, m.reserved_percent,
                                             m.busy_backlog_ms / 1000, m.busy_min_pending),
                               self._included_height, self.chain.get_recent_tx_height,
                               dry_run=self._is_dry_run_ok, index_raw=self.multi_validator)
        self.started_at = time.time()
        self.client_version = CLIENT_VERSION
        self._wake = asyncio.Event()
        self._admitted = 0  # admissions since the producer was last woken for a full block
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="producer")
        self._accumulator = self.chain.get_accumulator()
        self.stats = {"blocks": 0, "txs": 0, "rejected": 0, "last_block_ms": 0.0}
        self.replica: Any = None  # set by serve_node on a multi-validator network
        self.sharing: Any = None  # the data plane, attached with the P2P transport
        # Called on the event loop after blocks were finalized (e.g. the websocket publisher).
        self.finalized_listeners: list[Callable[[], None]] = []
        if not self.multi_validator and validators[0]["bls_public_key"] != key.public_key:
            raise ConfigError("this node's validator key is not the key of this chain's single validator")
        if self.multi_validator and not cfg.p2p.listen_port:
            raise ConfigError(f"the network has {len(validators)} validators: configure [p2p] (listen_port, "
                              "peers, ca_cert, node_cert, node_key) so this node can take part in consensus")
        self.check_upgrade()  # refuses a bad CHAINSHARE_SUPPORTED_VERSIONS; halts at once if already due

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> Node:
        genesis = load_genesis(cfg.path(cfg.node.genesis))
        key = load_validator_key(cfg, genesis)
        store = LevelDBStore(cfg.path(cfg.node.data_dir))
        try:
            return cls(cfg, genesis, store, key)
        except BaseException:
            store.close()
            raise

    # -- reads used by the API ---------------------------------------------------------------
    def _included_height(self, tx_hash: bytes) -> int | None:
        loc = self.chain.get_tx_location(tx_hash)
        return loc.height if loc else None

    def _is_dry_run_ok(self, tx: Transaction) -> bool:
        """Whether ``tx``'s call succeeds on the latest finalized state (nothing is kept)."""
        return tx.to is not None and self.call(tx.sender, tx.to, tx.data, tx.gas_limit)[0]

    @property
    def state(self) -> Any:
        return self.chain.state

    @property
    def runtime(self) -> Runtime:
        """The rules (protocol version) of the next block, which calls and admission run under; those
        of the head while the node is halted for a version it does not support."""
        head = self.chain.head_height
        cached = self._runtime_at
        if cached is not None and cached[0] == head:
            return cached[1]
        state, height = self.chain.state, head + 1
        if get_upgrade_required(state, height) is not None:
            height -= 1
        runtime = get_runtime_at(state, height)
        self._runtime_at = (head, runtime)  # one schedule read per block, not per call (API threads race benignly)
        return runtime

    # -- gray upgrade --------------------------------------------------------------------------
    def check_upgrade(self) -> UpgradeRequired | None:
        """Halt if the block after the head needs a protocol version this release does not run."""
        if self.upgrade_required is None:
            need = get_upgrade_required(self.chain.state, self.chain.head_height + 1)
            if need is not None:
                self.halt_for_upgrade(need)
        return self.upgrade_required

    def halt_for_upgrade(self, need: UpgradeRequired) -> None:
        """Stop executing, proposing and voting before block ``need.height`` (for good: the API keeps
        serving the chain so far and /healthz says what is needed; restart with a release that
        runs ``need.version`` to continue from here). Safe to call from any thread."""
        if self.upgrade_required is None:
            self.upgrade_required = need
            log_event(log, logging.ERROR, "protocol upgrade required: halted before its activation height",
                      version=need.version, activation_height=need.height, head=self.chain.head_height,
                      supported=",".join(map(str, need.supported)))

    def block_env(self, pending: bool = False) -> BlockEnv:
        head = self.chain.get_head().header
        gas_limit, _ = get_chain_params(self.chain.state)
        return BlockEnv(self.chain_id, head.height + (1 if pending else 0),
                        max(int(time.time() * 1000), head.timestamp_ms) if pending else head.timestamp_ms,
                        head.proposer, gas_limit)

    def call(self, sender: bytes, to: bytes, data: bytes, gas: int | None = None) -> tuple[bool, bytes, int]:
        """Run a call on the latest finalized state with at most the block gas limit; nothing is kept."""
        env = self.block_env(pending=True)
        return self.runtime.call(StateView(self.chain.state), sender, to, data, env,
                                 min(gas or env.gas_limit, env.gas_limit))

    def notify_finalized(self) -> None:
        """Tell the listeners that the finalized head moved (they read the new blocks themselves);
        a failing listener is logged and never stops block production or consensus."""
        for listener in self.finalized_listeners:
            try:
                listener()
            except Exception:
                log.exception("finalized-block listener failed")

    # -- writes ------------------------------------------------------------------------------
    def submit_raw_transaction(self, raw: bytes, gossip: bool = True) -> bytes:
        """Admit a raw transaction to the mempool (raises a precise error); returns its hash.
        On a multi-validator network the transactions it made executable are then gossiped to the
        other nodes (a queued one only once its nonce gap is filled; with ``gossip=False``, for a
        transaction received from a peer, only those it unblocked). A submission (not a peer's
        transaction) is refused with NodeBusy while the node's backlog is over its limit."""
        gas_limit, max_txs = get_chain_params(self.chain.state)
        try:
            admission = self.mempool.add_raw(raw, self.chain.state, gas_limit, submitted=gossip)
        except Exception:
            self.stats["rejected"] += 1
            raise
        tx = admission.tx
        if self.replica is not None:
            for ready in admission.executable:
                if gossip or ready is not tx:
                    self.replica.gossip_transaction(ready.raw)
            return tx.hash
        self._admitted += 1
        if self._admitted >= max_txs:
            self._admitted = 0
            self._wake.set()
        return tx.hash

    # -- block production --------------------------------------------------------------------
    async def run_producer(self) -> None:
        """Produce blocks until stopped: every ``block_time_ms``, at once when a full block waits.

        A failure here (storage, a bug) is fatal: it is logged and re-raised so the node stops
        rather than serve a chain that no longer grows."""
        loop = asyncio.get_running_loop()
        interval = self.cfg.block.block_time_ms / 1000
        backlog = False  # the last block was full: build the next one without waiting
        while not self._stopping:
            if not backlog:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), interval)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # let the API run between back-to-back blocks
            if self._stopping:
                break
            if self.check_upgrade() is not None:
                backlog = False
                continue  # halted: the producer idles until the node is stopped
            _, max_txs = get_chain_params(self.chain.state)
            txs = self.mempool.select(self.chain.state, max_txs)
            if not txs and not self._empty_block_due():
                backlog = False
                if len(self.mempool):
                    self.mempool.prune(self.chain.state)
                continue
            started = time.perf_counter()
            try:
                executed, invalid = await loop.run_in_executor(self._executor, run_on_cedar_thread,
                                                               self._propose_and_commit, txs)
            except StorageError as exc:  # disk full, I/O error: said plainly, no traceback
                log_event(log, logging.CRITICAL, "ledger write failed; stopping the node", error=exc.message)
                raise
            except Exception:
                log.exception("block production failed; stopping the node")
                raise
            self.notify_finalized()
            included = len(executed.block.transactions)
            self.mempool.prune(self.chain.state)  # drops the included transactions (their nonces are used)
            self.mempool.remove(invalid)
            backlog = included + len(invalid) < len(txs) or len(txs) >= max_txs
            self.stats["blocks"] += 1
            self.stats["txs"] += included
            self.stats["last_block_ms"] = (time.perf_counter() - started) * 1000
            log_event(log, logging.DEBUG, "block finalized", height=executed.block.height,
                      txs=included, ms=round(self.stats["last_block_ms"], 1))

    def _empty_block_due(self) -> bool:
        interval = self.cfg.block.empty_block_interval_ms
        if interval <= 0:
            return False
        return int(time.time() * 1000) - self.chain.get_head().header.timestamp_ms >= interval

    def _propose_and_commit(self, txs: list[Transaction]) -> tuple[ExecutedBlock, list[Transaction]]:
        invalid: list[Transaction] = []

        def on_invalid(tx: Transaction, exc: InvalidTransaction) -> None:
            invalid.append(tx)
            log_event(log, logging.INFO, "dropped transaction", tx="0x" + tx.hash.hex(), reason=exc.message)

        parent = self.chain.get_head()
        justify = self.chain.get_qc(parent.height) if parent.height > 0 else None
        vs = get_validator_set_at(self.chain.state, parent.height + 1)
        if len(vs.validators) != 1 or vs.index_of_key(self.key.public_key) != 0:
            raise ConsensusError(f"validator set {vs.epoch} ({len(vs.validators)} validators) certifies block "
                                 f"{parent.height + 1}: restart this node with [p2p] configured to join consensus")
        me = vs.validators[0]
        now = max(int(time.time() * 1000), parent.header.timestamp_ms)
        runtime = get_runtime_at(self.chain.state, parent.height + 1)  # checked by run_producer
        executed = build_block(runtime, self.chain.state, parent.header, self._accumulator, txs,
                               chain_id=self.chain_id, round=parent.header.round + 1, timestamp_ms=now,
                               proposer=me["address"],
                               justify=justify, on_invalid=on_invalid)
        block = executed.block
        signature = sign_proposal(self.key.secret_key, self.chain_id, block.hash, vs.epoch)
        block = type(block)(block.header, block.transactions, block.justify, block.timeout_cert, signature, block.hash)
        vote = sign_vote(self.key.secret_key, self.chain_id, block.hash, block.height, block.header.round, vs.epoch)
        qc = aggregate_qc(block.hash, block.height, block.header.round, {0: vote}, 1)
        self.chain.commit_block(block, executed.receipts, executed.senders, executed.tx_hashes,
                                executed.state_changes, executed.accumulator, qc)
        self._accumulator = executed.accumulator
        return replace(executed, block=block, state_changes={}), invalid

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.chain.store.close()


class _NextBlockRules:
    """What the mempool checks a call against: the contracts of the next block's protocol version."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def contracts(self) -> dict[bytes, SystemContract]:
        return self._node.runtime.contracts

    def check_call(self, to: bytes | None, data: bytes) -> MethodSpec:
        return self._node.runtime.check_call(to, data)


async def start_replica(node: Node) -> tuple[Any, Any]:
    """Start the mutual-TLS transport and the consensus replica of a multi-validator node."""
    from chainshare.crypto.keystore import read_password
    from chainshare.p2p import P2PConfig, P2PNode, PeerAddress, TlsIdentity
    from chainshare.replica import Replica, ReplicaConfig

    cfg = node.cfg
    names = sorted({v["name"] for vs in get_validator_sets(node.chain.state) for v in vs.validators})
    if cfg.node.name not in names:  # an observer: its peers admit it for block sync (replica.make_is_allowed)
        log_event(logging.getLogger("chainshare.replica"), logging.WARNING,
                  "this node is no validator of a set known yet: following the chain by block sync",
                  name=cfg.node.name, validators=",".join(names))
    key_password = None
    if not cfg.node.dev_mode:
        key_password = read_password(cfg.path(cfg.validator.password_file) if cfg.validator.password_file else None)
    identity = TlsIdentity(ca_cert=cfg.path(cfg.p2p.ca_cert), cert=cfg.path(cfg.p2p.node_cert),
                           key=cfg.path(cfg.p2p.node_key), key_password=key_password)
    peers = []
    for entry in cfg.p2p.peers:
        name, _, addr = entry.partition("@")
        host, _, port = addr.rpartition(":")
        peers.append(PeerAddress(name, host, int(port)))
    base_timeout = max(1000, 5 * cfg.block.block_time_ms)
    # The back-off stops at 8 x base (8 s on devnets; Aptos' DiemBFT stops at ~3 x): it only has to outgrow
    # the network's real delay, and a higher cap is paid once quorum returns after an outage (each node's timer
    # has grown through the outage: at 60 s, two timed-out views cost up to 2 minutes before the next block).
    replica = Replica(node, None, ReplicaConfig(
        base_timeout_ms=base_timeout, max_timeout_ms=8 * base_timeout, block_time_ms=cfg.block.block_time_ms,
        idle_block_ms=min(cfg.block.empty_block_interval_ms or 1000, base_timeout // 2)))
    # The data plane (deliveries, compute-to-data) shares the node's one mutual-TLS port:
    # ``data.*`` messages go to the sharing service, everything else to the consensus replica.
    from chainshare.sharing.service import attach_sharing, get_sharing_service

    sharing = get_sharing_service(node)
    from chainshare.privacy.service import get_joint_service  # joint secure aggregation: ``joint.*``
    joint = get_joint_service(sharing)
    transport = P2PNode(
        P2PConfig(node_name=cfg.node.name, chain_id=node.chain_id, genesis_hash=node.chain.get_block(0).hash,
                  listen_host=cfg.p2p.listen_host, listen_port=cfg.p2p.listen_port, peers=tuple(peers),
                  max_frame_size=cfg.p2p.max_frame_bytes),
        identity, is_allowed=replica.make_is_allowed(),
        on_message=joint.route_message(sharing.route_message(replica.on_message)),
        on_request=joint.route_request(sharing.route_request(replica.on_request)), on_peer_down=sharing.on_peer_down)
    replica.transport = transport
    attach_sharing(node, transport, key_password=key_password)
    node.sharing = sharing
    await transport.start()
    return transport, replica


async def serve_node(cfg: NodeConfig) -> None:
    """Run a node with its API until SIGINT/SIGTERM; stops cleanly, closing the ledger."""
    import uvicorn

    from chainshare.api.app import create_app

    class _Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM when serve() returns, which would kill the process
        # before the ledger is closed; the node handles the signals itself instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    node = Node.from_config(cfg)
    app = create_app(node)
    server = _Server(uvicorn.Config(
        app, host=cfg.api.host, port=cfg.api.port, loop="uvloop", http="httptools", lifespan="off",
        log_level="warning", access_log=False, proxy_headers=False, timeout_keep_alive=30, limit_concurrency=2048,
        h11_max_incomplete_event_size=64 * 1024,
        # websocket JSON-RPC (api/subscriptions.py): no per-message compression, so a notification is
        # encoded once for all subscribers; a client that never reads cannot hold shutdown past 10 s
        ws="websockets-sansio", ws_max_size=cfg.api.ws_max_frame_bytes, ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    ))
    log_event(log, logging.INFO, "node starting", name=cfg.node.name, chain_id=node.chain_id,
              head=node.chain.head_height, api=f"http://{cfg.api.host}:{cfg.api.port}")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    transport = None
    background: list[asyncio.Task[Any]] = []
    if node.multi_validator:
        transport, replica = await start_replica(node)
        node.replica = replica
        producer = asyncio.create_task(replica.run())
        background.append(asyncio.create_task(replica.run_sync_loop()))
    else:
        producer = asyncio.create_task(node.run_producer())
    producer.add_done_callback(lambda _: setattr(server, "should_exit", True))
    log_event(log, logging.INFO, "start-up objects frozen out of the garbage collector", objects=apply_gc_policy(),
              thresholds=list(GC_THRESHOLDS))
    try:
        await server.serve()
    finally:
        for task in background:
            task.cancel()
        if node.replica is not None:
            await node.replica.stop()
        if node.sharing is not None:
            await node.sharing.close()
        if transport is not None:
            await transport.close()
        await node.stop()
        try:
            await asyncio.wait_for(asyncio.shield(producer), 10)
        except TimeoutError:
            producer.cancel()
        finally:
            node.close()
    log_event(log, logging.INFO, "node stopped", name=cfg.node.name, head=node.chain.head_height)
    if producer.done() and not producer.cancelled() and producer.exception() is not None:
        raise producer.exception()  # type: ignore[misc]


