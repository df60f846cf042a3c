"""The chain on disk: finalized blocks, their certificates, receipts, state and indexes.

``commit_block`` writes a block, its QC, receipts, senders, state writes, the new state
accumulator, the tx-hash index, the log indexes and the new head in ONE synced batch: after a
crash the store holds either all of a block or none of it, and the head always points at a
complete block. Opening a data directory of another network or of a newer format fails.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConfigError, NotFound, StorageError
from chainshare.ledger.statehash import decode_accumulator, encode_accumulator
from chainshare.ledger.store import KeyValueStore
from chainshare.ledger.types import (
    FORMAT_VERSION,
    OLDEST_READABLE_FORMAT,
    Block,
    Log,
    QuorumCertificate,
    Receipt,
)

P_META = b"M"
P_BLOCK = b"B"
P_HASH = b"H"
P_RECEIPTS = b"R"
P_SENDERS = b"F"
P_QC = b"Q"
P_TX = b"T"
P_STATE = b"S"
P_LOG_ADDR = b"A"
P_LOG_TOPIC = b"O"

K_FORMAT = P_META + b"format"
K_CHAIN_ID = P_META + b"chain_id"
K_GENESIS = P_META + b"genesis"
K_HEAD = P_META + b"head"
K_ACC = P_META + b"acc"
K_GENESIS_DOC = P_META + b"genesis_doc"
K_FINALITY = P_META + b"finality"  # the 2-chain proof that the head is final (ledger/finality.py)
P_EPOCH_PROOF = P_META + b"epochproof:"  # + epoch (8 bytes) of the set it proves: consensus/epochs.py


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


PACKED = b"\xc1"  # the one byte msgpack never uses: a stored value that starts with it is zlib-compressed


def pack_stored(encoded: bytes) -> bytes:
    """What is stored for a block's or its receipts' canonical encoding: compressed once here (zlib level 1,
    ~0.5 GB/s) rather than by LevelDB at every compaction (``store.LevelDBStore``)."""
    return PACKED + zlib.compress(encoded, 1)


def unpack_stored(stored: bytes) -> bytes:
    """The canonical encoding behind a stored block or receipts value (format 2 stored it as it is)."""
    if stored[:1] != PACKED:
        return stored
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(memoryview(stored)[1:], codec.MAX_DECODE_BYTES)
    except zlib.error as exc:
        raise StorageError(f"a stored block or receipts value does not decompress ({exc}): the data directory "
                           "is damaged") from exc
    if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise StorageError(f"a stored block or receipts value is truncated, longer than {codec.MAX_DECODE_BYTES} "
                           "bytes or followed by other data: the data directory is damaged")
    return out


@dataclass(frozen=True)
class TxLocation:
    height: int
    index: int


_ABSENT = b"\x00absent"


class StateReaderAt:
    """Reads the committed state (the state after the head block) through a bounded cache, safely
    from any thread while the commit thread writes.

    Every state write goes through ``ChainStore.commit_block``, which calls ``update`` after the
    block's batch is on disk. A read that misses the cache loads the key from the store and keeps
    it only if no ``update`` happened meanwhile (a generation counter checked under a lock): a
    value read before a commit is never written back over the value that commit made."""

    __slots__ = ("_store", "_cache", "_limit", "_lock", "_generation")

    def __init__(self, store: KeyValueStore, cache_entries: int = 200_000) -> None:
        self._store = store
        self._cache: dict[bytes, bytes] = {}
        self._limit = cache_entries
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, key: bytes) -> bytes | None:
        v = self._cache.get(key)
        if v is not None:
            return None if v is _ABSENT else v
        generation = self._generation
        v = self._store.get(P_STATE + key)
        with self._lock:
            if generation == self._generation:  # no commit since the store read: the value is current
                if len(self._cache) >= self._limit:
                    self._cache.clear()
                self._cache[key] = _ABSENT if v is None else v
        return v

    def update(self, changes: dict[bytes, bytes | None]) -> None:
        """Make the cache show ``changes`` (already written to the store)."""
        with self._lock:
            self._generation += 1
            if len(self._cache) + len(changes) >= self._limit:
                self._cache.clear()
            for k, v in changes.items():
                self._cache[k] = _ABSENT if v is None else v


def _topics_match(have: Sequence[bytes], want: Sequence[bytes | None]) -> bool:
    """Whether topics ``have`` hold ``want`` position by position (None = any)."""
    return all(w is None or (i < len(have) and have[i] == w) for i, w in enumerate(want))


def _stored_logs(row: Any, height: int, tx_index: int) -> list[Any]:
    """The logs of one receipt as stored (``[status, cumulative gas, gas, [log, ...], output]``)."""
    if not (isinstance(row, list) and len(row) == 5 and isinstance(row[3], list)):
        raise StorageError(f"receipt {tx_index} at height {height} is malformed")
    return row[3]


@dataclass(frozen=True)
class BlockBundle:
    """A finalized block with what its receipts' views need, derived once."""

    block: Block
    receipts: list[Receipt]
    senders: list[bytes]
    tx_hashes: list[bytes]
    first_log_index: list[int]


def _make_bundle(block: Block, receipts: list[Receipt], senders: list[bytes], tx_hashes: list[bytes]) -> BlockBundle:
    offsets, n = [], 0
    for r in receipts:
        offsets.append(n)
        n += len(r.logs)
    return BlockBundle(block, receipts, senders, tx_hashes, offsets)


class ChainStore:
    """Finalized chain over a key-value store; all reads are of committed data only."""

    def __init__(self, store: KeyValueStore, cache_blocks: int = 64) -> None:
        self.store = store
        self.state = StateReaderAt(store)
        self._blocks: OrderedDict[int, Block] = OrderedDict()
        self._receipts: OrderedDict[int, list[Receipt]] = OrderedDict()
        self._bundles: OrderedDict[int, BlockBundle] = OrderedDict()
        # tx hash -> location for the most recent blocks: receipt polls mostly ask about those.
        self._recent_tx: OrderedDict[bytes, TxLocation] = OrderedDict()
        self._recent_tx_limit = 50_000
        self._cache = cache_blocks
        head = store.get(K_HEAD)
        self._head = int.from_bytes(head, "big") if head is not None else -1

    # -- identity ---------------------------------------------------------------------------
    def check_identity(self, chain_id: int, genesis_hash: bytes) -> None:
        """Refuse a data dir of another format, another chain id or another genesis."""
        fmt = self.store.get(K_FORMAT)
        if fmt is None:
            if self._head >= 0:
                raise StorageError("data directory has blocks but no format marker: refusing to guess")
            return
        fmt_v = int.from_bytes(fmt, "big")
        if fmt_v > FORMAT_VERSION:
            raise ConfigError(f"data directory was written in ledger format {fmt_v}; this node reads up to "
                              f"{FORMAT_VERSION}: upgrade chainshare")
        if fmt_v < OLDEST_READABLE_FORMAT:
            raise ConfigError(f"data directory was written in ledger format {fmt_v}, whose consensus signatures "
                              f"carry no validator-set epoch; this node reads formats {OLDEST_READABLE_FORMAT}.."
                              f"{FORMAT_VERSION}: start from a "
                              "new data directory and sync the chain")
        stored_chain = int.from_bytes(self.store.get(K_CHAIN_ID) or b"", "big")
        if stored_chain != chain_id:
            raise ConfigError(f"data directory belongs to chain id {stored_chain}, the configuration says "
                              f"{chain_id}: point data_dir at this network's directory")
        if self.store.get(K_GENESIS) != genesis_hash:
            raise ConfigError("data directory was created from a different genesis (genesis hash mismatch): "
                              "point data_dir at this network's directory, or use the genesis file it was "
                              "created with")

    def upgrade_format(self) -> None:
        """Mark a data directory of an older readable format (2: blocks and receipts stored uncompressed) as
        ``FORMAT_VERSION`` before anything of the new format is written into it, so that a release that
        cannot read it refuses it instead of failing on its values."""
        fmt = self.store.get(K_FORMAT)
        if fmt is not None and int.from_bytes(fmt, "big") < FORMAT_VERSION:
            self.store.write_batch({K_FORMAT: FORMAT_VERSION.to_bytes(4, "big")}, sync=True)

    def initialize(self, genesis_block: Block, state: dict[bytes, bytes], accumulator: int, chain_id: int,
                   genesis_document: bytes) -> None:
        """Write block 0, the genesis state and the genesis document (once, on an empty store)."""
        puts = {P_STATE + k: v for k, v in state.items()}
        puts.update({
            K_GENESIS_DOC: genesis_document,
            K_FORMAT: FORMAT_VERSION.to_bytes(4, "big"),
            K_CHAIN_ID: chain_id.to_bytes(8, "big"),
            K_GENESIS: genesis_block.hash,
        })
        self._put_block(puts, genesis_block, [], [], [], None, accumulator)
        self.store.write_batch(puts, sync=True)
        self._head = 0

    # -- writes -----------------------------------------------------------------------------
    def _put_block(self, puts: dict[bytes, bytes], block: Block, receipts: Sequence[Receipt],
                   senders: Sequence[bytes], tx_hashes: Sequence[bytes], qc: QuorumCertificate | None,
                   accumulator: int) -> None:
        """Add a block's records to ``puts``."""
        h = _h(block.height)
        puts[P_BLOCK + h] = pack_stored(block.encode())
        puts[P_HASH + block.hash] = h
        puts[P_RECEIPTS + h] = pack_stored(codec.encode_array_of_encoded([r.encode() for r in receipts]))
        puts[P_SENDERS + h] = b"".join(senders)
        if qc is not None:
            puts[P_QC + h] = qc.encode()
        for i, tx_hash in enumerate(tx_hashes):
            puts[P_TX + tx_hash] = h + i.to_bytes(4, "big")
        for r in receipts:
            for lg in r.logs:
                puts[P_LOG_ADDR + lg.address + h] = b""
                for t in lg.topics:
                    puts[P_LOG_TOPIC + t + h] = b""
        puts[K_ACC] = encode_accumulator(accumulator)
        puts[K_HEAD] = h

    def commit_block(self, block: Block, receipts: tuple[Receipt, ...], senders: tuple[bytes, ...],
                     tx_hashes: tuple[bytes, ...], state_changes: dict[bytes, bytes | None], accumulator: int,
                     qc: QuorumCertificate | None, finality_proof: bytes | None = None,
                     extra: dict[bytes, bytes] | None = None) -> None:
        """Durably append a finalized block (one synced batch; ``tx_hashes`` are the hashes of its raw
        transactions, as execution derived them), with the proof that it is final when
        given (so that a crash can never leave a head without its proof) and the caller's ``extra``
        records (the epoch-change proof of a validator set's last block)."""
        if block.height != self._head + 1:
            raise StorageError(f"cannot append block {block.height} on head {self._head}")
        puts: dict[bytes, bytes] = {}
        deletes = []
        for k, v in state_changes.items():
            if v is None:
                deletes.append(P_STATE + k)
            else:
                puts[P_STATE + k] = v
        if len(tx_hashes) != len(block.transactions):
            raise StorageError(f"block {block.height} has {len(block.transactions)} transactions but "
                               f"{len(tx_hashes)} hashes were given")
        self._put_block(puts, block, receipts, senders, tx_hashes, qc, accumulator)
        if finality_proof is not None:
            puts[K_FINALITY] = finality_proof
        puts.update(extra or {})
        self.store.write_batch(puts, tuple(deletes), sync=True)
        self.state.update(state_changes)
        self._head = block.height
        self._remember(block, list(receipts), list(senders), list(tx_hashes))

    def store_qc(self, height: int, qc: QuorumCertificate) -> None:
        self.store.write_batch({P_QC + _h(height): qc.encode()}, sync=True)

    def _remember(self, block: Block, receipts: list[Receipt], senders: list[bytes],
                  tx_hashes: list[bytes]) -> None:
        for i, tx_hash in enumerate(tx_hashes):
            self._recent_tx[tx_hash] = TxLocation(block.height, i)
        while len(self._recent_tx) > self._recent_tx_limit:
            self._recent_tx.popitem(last=False)
        self._blocks[block.height] = block
        self._receipts[block.height] = receipts
        while len(self._blocks) > self._cache:
            self._blocks.popitem(last=False)
        while len(self._receipts) > self._cache:
            self._receipts.popitem(last=False)
        self._cache_bundle(_make_bundle(block, receipts, senders, tx_hashes))

    def _cache_bundle(self, bundle: BlockBundle) -> None:
        self._bundles[bundle.block.height] = bundle
        while len(self._bundles) > self._cache:
            self._bundles.popitem(last=False)

    # -- reads ------------------------------------------------------------------------------
    @property
    def head_height(self) -> int:
        return self._head

    def get_genesis_document(self) -> bytes:
        raw = self.store.get(K_GENESIS_DOC)
        if raw is None:
            raise StorageError("data directory holds no genesis document")
        return raw

    def get_accumulator(self) -> int:
        raw = self.store.get(K_ACC)
        if raw is None:
            raise StorageError("state accumulator missing: the data directory is incomplete")
        return decode_accumulator(raw)

    def get_block(self, height: int) -> Block:
        cached = self._blocks.get(height)
        if cached is not None:
            return cached
        raw = self.store.get(P_BLOCK + _h(height)) if 0 <= height <= self._head else None
        if raw is None:
            raise NotFound(f"no block at height {height} (head is {self._head})")
        return Block.decode_stored(unpack_stored(raw))

    def get_head(self) -> Block:
        return self.get_block(self._head)

    def get_height_by_hash(self, block_hash: bytes) -> int:
        raw = self.store.get(P_HASH + block_hash)
        if raw is None:
            raise NotFound(f"no block with hash 0x{block_hash.hex()}")
        return int.from_bytes(raw, "big")

    def get_receipts(self, height: int) -> list[Receipt]:
        cached = self._receipts.get(height)
        if cached is not None:
            return cached
        return [Receipt.from_list(r) for r in self._read_receipt_rows(height)]

    def _read_receipt_rows(self, height: int) -> list[Any]:
        raw = self.store.get(P_RECEIPTS + _h(height))
        if raw is None:
            raise NotFound(f"no receipts at height {height}")
        rows = codec.decode_stored(unpack_stored(raw))
        if not isinstance(rows, list):
            raise StorageError(f"receipts at height {height} are malformed")
        return rows

    def iter_matching_logs(self, height: int, address: bytes,
                           topics: Sequence[bytes | None]) -> Iterator[tuple[int, int, Log]]:
        """(transaction index, log index in the block, log) of every log at ``height`` from ``address``
        whose topics match (None = any), in order. Read from disk, only the matching logs are built as
        objects: a subject's events are a few of a block's hundreds of logs."""
        log_index = 0
        cached = self._receipts.get(height)
        if cached is not None:
            for tx_index, receipt in enumerate(cached):
                for lg in receipt.logs:
                    if lg.address == address and _topics_match(lg.topics, topics):
                        yield tx_index, log_index, lg
                    log_index += 1
            return
        for tx_index, row in enumerate(self._read_receipt_rows(height)):
            for entry in _stored_logs(row, height, tx_index):
                if (isinstance(entry, list) and len(entry) == 3 and entry[0] == address
                        and isinstance(entry[1], list) and _topics_match(entry[1], topics)):
                    yield tx_index, log_index, Log.from_list(entry)
                log_index += 1

    def peek_bundle(self, height: int) -> BlockBundle | None:
        """The bundle of ``height`` if it is cached (recent blocks are, from their commit), else None."""
        return self._bundles.get(height)

    def get_bundle(self, height: int) -> BlockBundle:
        """Block, receipts, senders, tx hashes and log offsets of a finalized height (cached)."""
        bundle = self.peek_bundle(height)
        if bundle is not None:
            return bundle
        block = self.get_block(height)
        bundle = _make_bundle(block, self.get_receipts(height), self.get_senders(height),
                              [keccak256(raw) for raw in block.transactions])
        self._cache_bundle(bundle)
        return bundle

    def get_senders(self, height: int) -> list[bytes]:
        raw = self.store.get(P_SENDERS + _h(height)) or b""
        return [raw[i:i + 20] for i in range(0, len(raw), 20)]

    def get_finality_proof(self) -> bytes | None:
        """The encoded proof (ledger/finality.py) that the head is final, as the replica kept it; None on
        a single-validator chain, whose blocks are final by their 1-of-1 QC."""
        return self.store.get(K_FINALITY)

    def get_epoch_change_proofs(self) -> list[bytes]:
        """The encoded epoch-change proofs this node keeps (consensus/epochs.py), from epoch 1 on and
        without a gap (stopping before the first epoch it lacks)."""
        out: list[bytes] = []
        while (raw := self.store.get(P_EPOCH_PROOF + (len(out) + 1).to_bytes(8, "big"))) is not None:
            out.append(raw)
        return out

    def put_finality_proof(self, proof: bytes, deletes: tuple[bytes, ...] = ()) -> None:
        """Keep a newer proof for the head already stored (and drop ``deletes`` in the same batch)."""
        self.store.write_batch({K_FINALITY: proof}, deletes, sync=False)

    def get_qc(self, height: int) -> QuorumCertificate | None:
        raw = self.store.get(P_QC + _h(height))
        return QuorumCertificate.from_list(codec.decode(raw)) if raw else None

    def get_recent_tx_height(self, tx_hash: bytes) -> int | None:
        """Height of ``tx_hash`` if it is in one of the most recent blocks (memory only, no disk)."""
        loc = self._recent_tx.get(tx_hash)
        return loc.height if loc is not None else None

    def get_tx_location(self, tx_hash: bytes) -> TxLocation | None:
        """Where ``tx_hash`` is, once its block is the head or below: a block being committed on another
        thread (on disk, its state not yet in ``state``) does not count yet, so a caller that sees the
        location also sees the transaction's effects in ``state``."""
        recent = self._recent_tx.get(tx_hash)
        if recent is not None:
            return recent
        raw = self.store.get(P_TX + tx_hash)
        if raw is None:
            return None
        loc = TxLocation(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:12], "big"))
        return loc if loc.height <= self._head else None

    def iter_log_heights(self, key: bytes, from_height: int, to_height: int, by_topic: bool) -> Iterator[int]:
        """Heights in [from, to] with a log from address ``key`` (or with topic ``key``)."""
        prefix = (P_LOG_TOPIC if by_topic else P_LOG_ADDR) + key
        for k, _ in self.store.iterate(prefix, start=prefix + _h(from_height)):
            h = int.from_bytes(k[len(prefix):], "big")
            if h > to_height:
                break
            yield h
