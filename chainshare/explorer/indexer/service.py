"""The indexer process: follows finalized blocks of one of several nodes, verifies, stores.

It reads one source at a time; a source that does not answer is left for the next URL (warning),
a source that serves a block failing verification is rejected for a while and the indexer fails
over (an ERROR log line and ``explorer_verification_failures_total``: a forged block is never
stored). It catches up in batches (blocks fetched concurrently, verified in order, one DB
transaction each), then follows new heads by polling or a websocket subscription.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from chainshare import codec
from chainshare.errors import ChainshareError, ConfigError, ConsensusError
from chainshare.execution.contracts.membership import ValidatorSet
from chainshare.execution.genesis import compute_genesis_block, parse_genesis, validator_records
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.engine import apply_migrations
from chainshare.explorer.indexer.follow import HeadSignal, PollingHeads, WebsocketHeads
from chainshare.explorer.indexer.rows import BlockRows, compute_block_rows
from chainshare.explorer.indexer.source import NodeSource, SourceError
from chainshare.explorer.indexer.verify import FetchedBlock, find_validator_set, verify_block
from chainshare.explorer.indexer.writer import (
    IndexWriter,
    backfill_validator_pops,
    get_checkpoint,
    get_meta,
    initialize_index,
    record_gap,
    store_epoch_changes,
    upsert_rows,
)
from chainshare.ledger.types import Header
from chainshare.logs import log_event

log = logging.getLogger("chainshare.explorer.indexer")

REJECT_SECONDS = 300.0  # a source that served a forged block is not read again for this long
DOWN_SECONDS = 2.0
EPOCH_CHANGES_RETRY_SECONDS = 60.0  # a node that cannot serve epoch-change proofs is asked again after this


@dataclass
class IndexerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.indexed_height = Gauge("explorer_indexed_height", "Height of the last indexed block", registry=r)
        self.node_head = Gauge("explorer_node_head", "Finalized head of the node being followed", registry=r)
        self.lag = Gauge("explorer_lag_blocks", "Node head minus indexed height", registry=r)
        self.txs = Counter("explorer_indexed_txs", "Transactions indexed by this process", registry=r)
        self.blocks = Counter("explorer_indexed_blocks", "Blocks indexed by this process", registry=r)
        self.verification_failures = Counter("explorer_verification_failures", "Blocks refused by verification "
                                             "(forged or corrupt): an alert", ["source"], registry=r)
        self.failovers = Counter("explorer_source_failovers", "Switches to another node URL", registry=r)


@dataclass(frozen=True)
class IndexerConfig:
    urls: tuple[str, ...]
    batch_blocks: int = 200
    batch_txs: int = 10_000
    poll_interval: float = 0.5
    follow: str = "ws"  # or "poll"
    fetch_workers: int = 4
    genesis_hash: str | None = None  # pin the network (else the first run's genesis is kept)
    until: int | None = None  # stop once this height is indexed


@dataclass
class _SourceState:
    source: Any
    head: int | None = None
    state: str = "idle"
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0


class Indexer:
    def __init__(self, engine: Engine, cfg: IndexerConfig, metrics: IndexerMetrics | None = None,
                 progress: Callable[[int, int, float, float], None] | None = None,
                 sources: Sequence[Any] | None = None) -> None:
        """``sources`` (objects with NodeSource's methods) replace the URLs' NodeSources (benchmarks)."""
        if not cfg.urls and not sources:
            raise ConfigError("--node needs at least one node URL")
        self.engine = engine
        self.cfg = cfg
        self.metrics = metrics or IndexerMetrics()
        self.progress = progress
        self.sources = [_SourceState(x) for x in (sources or [NodeSource(u) for u in cfg.urls])]
        self.current = 0
        self.stop = threading.Event()
        self.sets: list[ValidatorSet] = []
        self.chain_id = 0
        self.head: Header | None = None
        self.writer: IndexWriter | None = None
        self.caught_up = threading.Event()
        self.rows_since_analyze = 0
        self.pops_missing = False
        self.epoch_changes_checked_at = -1  # the indexed height at which the stored proofs were last complete
        self.epoch_changes_retry_at = 0.0  # after a node could not serve them: not asked again before (monotonic)

    # -- start-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Migrate the schema, and record the network from a node's genesis on the first run."""
        apply_migrations(self.engine)
        with self.engine.begin() as conn:
            meta = get_meta(conn)
            cp = get_checkpoint(conn)
        if cp is None:
            self._initialize_from_source()
            with self.engine.begin() as conn:
                meta = get_meta(conn)
                cp = get_checkpoint(conn)
        assert cp is not None
        if self.cfg.genesis_hash and meta["genesis_hash"] != self.cfg.genesis_hash.lower():
            raise ConfigError(f"this database indexes the network with genesis {meta['genesis_hash']}, "
                              f"not {self.cfg.genesis_hash}")
        self.chain_id = int(meta["chain_id"])
        self.genesis_hash = meta["genesis_hash"]
        with self.engine.connect() as conn:
            raw = conn.execute(select(s.blocks.c.header).where(s.blocks.c.height == cp[0])).scalar_one()
            self.head = Header.from_list(codec.decode(bytes(raw)))
            self.writer = IndexWriter(conn)
            self.pops_missing = conn.execute(select(s.validator_sets.c.epoch).where(
                s.validator_sets.c.bls_pop.is_(None)).limit(1)).first() is not None
        self.metrics.indexed_height.set(cp[0])

    def _initialize_from_source(self) -> None:
        last: Exception | None = None
        for st in self._rotation():
            try:
                doc = st.source.get_genesis_document()
                genesis = parse_genesis(doc)
                block0, _, _ = compute_genesis_block(genesis)
                if self.cfg.genesis_hash and "0x" + block0.hash.hex() != self.cfg.genesis_hash.lower():
                    raise ConsensusError(f"{st.source.url} serves genesis 0x{block0.hash.hex()}, "
                                         f"expected {self.cfg.genesis_hash}")
                served = st.source.get_block(0).block
                if served.hash != block0.hash:
                    raise ConsensusError(f"{st.source.url}: block 0 is not the block its genesis document computes to")
                gset = ValidatorSet(0, 0, tuple(validator_records(genesis.validators)))
                with self.engine.begin() as conn:
                    if get_checkpoint(conn) is None:
                        initialize_index(conn, genesis, block0, gset)
                log_event(log, logging.INFO, "index initialized", genesis_hash="0x" + block0.hash.hex(),
                          chain_id=genesis.chain_id, source=st.source.url)
                return
            except (ChainshareError, ValueError, KeyError, TypeError) as exc:
                last = exc
                log_event(log, logging.WARNING, "cannot initialize from this node", url=st.source.url,
                          error=str(exc)[:300])
        raise ChainshareError(f"no node could provide a verifiable genesis: {last}")

    def _rotation(self) -> Iterator[_SourceState]:
        n = len(self.sources)
        for i in range(n):
            yield self.sources[(self.current + i) % n]

    # -- the loop ------------------------------------------------------------------------------
    def run(self, until_caught_up: bool = False) -> None:
        """Index until stopped (SIGINT/SIGTERM set ``self.stop``), or once caught up."""
        if self.head is None:
            self.prepare()
        signal_: HeadSignal | None = None
        signal_url: str | None = None
        pool = ThreadPoolExecutor(max_workers=self.cfg.fetch_workers, thread_name_prefix="fetch")
        try:
            while not self.stop.is_set():
                st = self._pick_source()
                if st is None:
                    self.stop.wait(0.5)
                    continue
                if signal_url != st.source.url:
                    if signal_ is not None:
                        signal_.close()
                    signal_ = (WebsocketHeads(st.source.url, max(self.cfg.poll_interval, 2.0), threading.Event())
                               if self.cfg.follow == "ws" else PollingHeads(self.cfg.poll_interval, self.stop))
                    signal_url = st.source.url
                try:
                    head = st.source.get_head()
                    st.head, st.state = head, "following"
                    if self.cfg.until is not None:
                        head = min(head, self.cfg.until)
                    self._record_source(st)
                    if self.pops_missing:
                        self._backfill_pops(st)
                    self._fetch_epoch_changes(st)
                    assert self.head is not None
                    self.metrics.node_head.set(head)
                    self.metrics.lag.set(max(0, head - self.head.height))
                    if head > self.head.height:
                        self._catch_up(st, pool, head)
                        continue
                    self._refresh_statistics(force=True)
                    self.caught_up.set()
                    if until_caught_up or (self.cfg.until is not None and self.head.height >= self.cfg.until):
                        return
                    assert signal_ is not None
                    signal_.wait(5.0)
                except SourceError as exc:
                    self._on_source_down(st, exc)
                except ConsensusError as exc:
                    self._on_forgery(st, exc)
                except OperationalError as exc:  # the database is down or restarting: wait, never lose data
                    log_event(log, logging.ERROR, "database unavailable; retrying", error=str(exc)[:300])
                    self.stop.wait(2.0)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if signal_ is not None:
                signal_.close()
            for st in self.sources:
                st.source.close()

    def _pick_source(self) -> _SourceState | None:
        now = time.monotonic()
        for i in range(len(self.sources)):
            idx = (self.current + i) % len(self.sources)
            if self.sources[idx].retry_at <= now:
                if idx != self.current:
                    self.metrics.failovers.inc()
                    log_event(log, logging.WARNING, "failing over to another node",
                              from_url=self.sources[self.current].source.url, to_url=self.sources[idx].source.url)
                    self.current = idx
                return self.sources[idx]
        return None

    def _on_source_down(self, st: _SourceState, exc: Exception) -> None:
        st.state, st.failures, st.last_error = "down", st.failures + 1, str(exc)[:500]
        st.retry_at = time.monotonic() + DOWN_SECONDS
        log_event(log, logging.WARNING, "node unavailable", url=st.source.url, error=str(exc)[:300])
        self._record_source(st)

    def _on_forgery(self, st: _SourceState, exc: ChainshareError) -> None:
        st.state, st.failures, st.last_error = "rejected", st.failures + 1, exc.message[:500]
        st.retry_at = time.monotonic() + REJECT_SECONDS
        self.metrics.verification_failures.labels(st.source.url).inc()
        log_event(log, logging.ERROR, "ALERT: node served a block that fails verification; nothing of it is "
                  "indexed, switching node", url=st.source.url, error=exc.message[:500])
        self._record_source(st)

    def _record_source(self, st: _SourceState) -> None:
        with self.engine.begin() as conn:
            upsert_rows(conn, s.sources, [{"url": st.source.url, "head": st.head, "state": st.state,
                                           "failures": st.failures, "last_error": st.last_error,
                                           "updated_ms": int(time.time() * 1000)}])

    def _backfill_pops(self, st: _SourceState) -> None:
        """Proofs of possession of sets indexed before migration 0004, from this node, checked against
        the indexed headers (see ``backfill_validator_pops``)."""
        sets = st.source.get_validator_sets()
        with self.engine.begin() as conn:
            filled = backfill_validator_pops(conn, sets)
            self.pops_missing = conn.execute(select(s.validator_sets.c.epoch).where(
                s.validator_sets.c.bls_pop.is_(None)).limit(1)).first() is not None
        if filled:
            log_event(log, logging.INFO, "validator proofs of possession backfilled", epochs=filled,
                      source=st.source.url)

    def _fetch_epoch_changes(self, st: _SourceState) -> None:
        """Once the indexed head is in an epoch whose epoch-change proofs are not all stored, take them from
        this node (verified from the genesis set: ``store_epoch_changes``), so a transaction page can prove
        its block's validator set from genesis. Asked again only when the head moves on."""
        assert self.head is not None
        if self.head.height == self.epoch_changes_checked_at or time.monotonic() < self.epoch_changes_retry_at:
            return
        with self.engine.connect() as conn:
            epoch = conn.execute(select(func.max(s.validator_sets.c.epoch)).where(
                s.validator_sets.c.activation_height <= self.head.height)).scalar() or 0
            stored = conn.execute(select(func.count()).select_from(s.epoch_changes)).scalar_one()
        if stored < epoch:
            try:
                raws = st.source.get_epoch_changes()
            except SourceError as exc:  # e.g. a node of a release before /epoch-changes: blocks still index
                log_event(log, logging.WARNING, "epoch-change proofs unavailable; pages of later epochs will "
                          "not verify until they are stored", url=st.source.url, error=str(exc)[:300])
                self.epoch_changes_retry_at = time.monotonic() + EPOCH_CHANGES_RETRY_SECONDS
                return
            with self.engine.begin() as conn:
                added = store_epoch_changes(conn, raws, self.chain_id)
            if added:
                log_event(log, logging.INFO, "epoch-change proofs stored", proofs=added, source=st.source.url)
            if stored + added < epoch:
                return  # this node lacks some: ask again (it, or another) when the head moves
        self.epoch_changes_checked_at = self.head.height

    def _record_gap(self, first: int, last: int, st: _SourceState, exc: ChainshareError) -> None:
        """Remember that blocks ``first..last`` exist and were not indexed, and why (filled later,
        from this node or another: ``apply_batch`` trims the gaps below the new checkpoint)."""
        if last < first:
            return
        with self.engine.begin() as conn:
            record_gap(conn, first, last, exc.message, st.source.url, int(time.time() * 1000))
        log_event(log, logging.WARNING, "missing range recorded", first=first, last=last, source=st.source.url,
                  reason=exc.message[:300])

    def _validator_set_for(self, st: _SourceState, parent: Header) -> ValidatorSet:
        if self.sets:
            vs = find_validator_set(self.sets, parent)
            if vs is not None:
                return vs
        self.sets = st.source.get_validator_sets()
        vs = find_validator_set(self.sets, parent)
        if vs is None:
            raise ConsensusError(f"block {parent.height + 1}: no validator set served by {st.source.url} hashes to "
                                 f"the set block {parent.height} commits to")
        return vs

    def _catch_up(self, st: _SourceState, pool: ThreadPoolExecutor, head: int) -> None:
        """Fetch, verify and store blocks up to ``head`` in batches; stops at the first bad block
        (the verified blocks before it are stored)."""
        t0, done0 = time.monotonic(), self.head.height if self.head else 0
        window: list[Future[tuple[FetchedBlock, BlockRows | Exception]]] = []

        def fetch(h: int) -> tuple[FetchedBlock, BlockRows | Exception]:
            fetched = st.source.get_block(h)
            # decoded here, in parallel (signature recovery releases the GIL), before verification:
            # whatever a forged block makes the decoder do is only reported after verify_block
            try:
                return fetched, compute_block_rows(fetched, None, self.chain_id)
            except Exception as exc:
                return fetched, exc

        next_h = self.head.height + 1 if self.head else 1
        ahead = self.cfg.fetch_workers * 8
        while not self.stop.is_set() and self.head is not None and self.head.height < head:
            batch: list[tuple[BlockRows, ValidatorSet]] = []
            parent = self.head
            ntx = 0
            error: ChainshareError | None = None
            while len(batch) < self.cfg.batch_blocks and ntx < self.cfg.batch_txs and parent.height < head:
                while next_h <= head and len(window) < ahead:
                    window.append(pool.submit(fetch, next_h))
                    next_h += 1
                try:
                    fetched, rows = window.pop(0).result()
                    vs = self._validator_set_for(st, parent)
                    verify_block(parent, fetched, vs, self.chain_id)
                    if isinstance(rows, Exception):  # a certified block always decodes: refuse, never crash
                        raise ConsensusError(f"block {parent.height + 1} from {st.source.url} does not decode: "
                                             f"{type(rows).__name__}: {rows}")
                except (SourceError, ConsensusError) as exc:
                    error = exc
                    break
                rows.block["epoch"] = vs.epoch
                batch.append((rows, vs))
                parent = fetched.block.header
                ntx += len(fetched.block.transactions)
            if batch:
                self._commit(batch, parent)
            if error is not None:
                for f in window:
                    f.cancel()
                self._record_gap(parent.height + 1, head, st, error)
                raise error
            if self.progress is not None:
                elapsed = time.monotonic() - t0
                self.progress(self.head.height, head, (self.head.height - done0) / max(elapsed, 1e-6), elapsed)
        for f in window:
            f.cancel()

    def _refresh_statistics(self, force: bool) -> None:
        """Refresh the planner's statistics after bulk loads (every ~200k rows, and when caught up):
        with stale ones PostgreSQL estimated 13 rows for a 150,000-transaction address history and
        sorted it whole instead of walking its index."""
        if self.rows_since_analyze == 0 or (not force and self.rows_since_analyze < 200_000):
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE" if conn.dialect.name == "postgresql" else "PRAGMA optimize")
        self.rows_since_analyze = 0

    def _commit(self, batch: list[tuple[BlockRows, ValidatorSet]], new_head: Header) -> None:
        assert self.head is not None and self.writer is not None
        expected = (self.head.height, self.head.hash)
        try:
            with self.engine.begin() as conn:
                self.writer.apply_batch(conn, expected, batch, new_head.hash)
        except Exception:
            with self.engine.connect() as conn:
                self.writer = IndexWriter(conn)  # the caches may hold rolled-back rows
            raise
        with self.engine.connect() as conn:
            self.writer = IndexWriter(conn) if any(r.events for r, _ in batch) else self.writer
        self.head = new_head
        ntx = sum(len(r.txs) for r, _ in batch)
        self.rows_since_analyze += ntx + len(batch)
        self._refresh_statistics(force=False)
        self.metrics.indexed_height.set(new_head.height)
        self.metrics.blocks.inc(len(batch))
        self.metrics.txs.inc(ntx)


class ProgressPrinter:
    """A progress bar on a terminal, a JSON line every few seconds otherwise."""

    def __init__(self, stream: Any = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.last = 0.0

    def __call__(self, height: int, head: int, rate: float, elapsed: float) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else self.every) and not (self.tty and height >= head):
            return
        self.last = now
        eta = (head - height) / rate if rate > 0 else float("inf")
        if self.tty:
            width = 30
            filled = int(width * height / max(head, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {height}/{head} blocks "
                              f"{rate:,.0f} blocks/s ETA {eta:,.0f}s ")
            if height >= head:
                self.stream.write("\n")
        else:
            self.stream.write(json.dumps({"msg": "indexing", "height": height, "head": head,
                                          "blocks_per_s": round(rate, 1),
                                          "eta_s": round(eta, 1) if eta != float("inf") else None}) + "\n")
        self.stream.flush()
