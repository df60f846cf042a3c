"""Key-value stores (LevelDB on disk and its in-memory twin) and the ChainStore built on them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConfigError, NotFound, StorageError
from chainshare.ledger.chain import (
    K_FORMAT,
    K_HEAD,
    P_BLOCK,
    P_RECEIPTS,
    ChainStore,
    StateReaderAt,
    pack_stored,
    unpack_stored,
)
from chainshare.ledger.store import KeyValueStore, LevelDBStore, MemoryStore, prefix_end
from chainshare.ledger.types import FORMAT_VERSION, OLDEST_READABLE_FORMAT
from chainshare.node import open_chain


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    s: KeyValueStore = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield s
    s.close()


def fill(s: KeyValueStore) -> None:
    s.write_batch({b"a": b"0", b"a\x00": b"1", b"a1": b"2", b"a2": b"3", b"a\xff": b"4", b"a\xff\xff": b"5",
                   b"b": b"6", b"b1": b"7", b"\xff\xff": b"8", b"": b"9"})


def keys(it: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [k for k, _ in it]


# -- prefix_end -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,end", [(b"a", b"b"), (b"a\x00", b"a\x01"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"),
                                        (b"\xff", None), (b"\xff\xff", None), (b"", None), (b"\x01\xfe", b"\x01\xff")])
def test_prefix_end_is_the_least_key_above_every_prefixed_key(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


# -- the two backends behave alike --------------------------------------------------------------------

def test_get_put_delete(store: KeyValueStore) -> None:
    assert store.get(b"k") is None
    store.write_batch({b"k": b"v", b"j": b""})
    assert store.get(b"k") == b"v" and store.get(b"j") == b""
    store.write_batch({}, (b"k", b"missing"))
    assert store.get(b"k") is None and store.get(b"j") == b""


def test_put_wins_over_delete_of_the_same_key_in_one_batch(store: KeyValueStore) -> None:
    store.write_batch({b"k": b"old"})
    store.write_batch({b"k": b"new"}, (b"k",))
    assert store.get(b"k") == b"new"


def test_batch_applies_all_puts_and_deletes_together(store: KeyValueStore) -> None:
    store.write_batch({b"x1": b"1", b"x2": b"2"})
    store.write_batch({b"y1": b"1", b"y2": b"2"}, (b"x1", b"x2"))
    assert keys(store.iterate(b"")) == [b"y1", b"y2"]


def test_prefix_iteration_is_ordered_and_bounded(store: KeyValueStore) -> None:
    fill(store)
    assert keys(store.iterate(b"a")) == [b"a", b"a\x00", b"a1", b"a2", b"a\xff", b"a\xff\xff"]
    assert keys(store.iterate(b"a", reverse=True)) == [b"a\xff\xff", b"a\xff", b"a2", b"a1", b"a\x00", b"a"]
    assert keys(store.iterate(b"b")) == [b"b", b"b1"]
    assert keys(store.iterate(b"\xff")) == [b"\xff\xff"]
    assert keys(store.iterate(b"c")) == []
    assert len(keys(store.iterate(b""))) == 10
    assert dict(store.iterate(b"a1")) == {b"a1": b"2"}


def test_prefix_iteration_from_a_start_key(store: KeyValueStore) -> None:
    fill(store)
    assert keys(store.iterate(b"a", start=b"a1")) == [b"a1", b"a2", b"a\xff", b"a\xff\xff"]
    assert keys(store.iterate(b"a", start=b"a15")) == [b"a2", b"a\xff", b"a\xff\xff"]
    assert keys(store.iterate(b"a", start=b"a1", reverse=True)) == [b"a1", b"a\x00", b"a"]
    assert keys(store.iterate(b"a", start=b"a15", reverse=True)) == [b"a1", b"a\x00", b"a"]
    assert keys(store.iterate(b"a\xff", start=b"a\xff\x00")) == [b"a\xff\xff"]
    assert keys(store.iterate(b"\xff", start=b"\xff")) == [b"\xff\xff"]


@pytest.mark.parametrize("backend", ["memory", "leveldb"])
def test_iteration_never_leaves_the_prefix_whatever_the_start(backend: str, tmp_path: Path) -> None:
    s: KeyValueStore = MemoryStore() if backend == "memory" else LevelDBStore(tmp_path / "db")
    try:
        fill(s)
        assert keys(s.iterate(b"b", start=b"a1")) == [b"b", b"b1"]
        assert keys(s.iterate(b"a", start=b"b5", reverse=True)) == [
            b"a\xff\xff", b"a\xff", b"a2", b"a1", b"a\x00", b"a"]
    finally:
        s.close()


@pytest.mark.parametrize("backend", ["memory", "leveldb"])
def test_failed_batch_writes_nothing(backend: str, tmp_path: Path) -> None:
    s: KeyValueStore = MemoryStore() if backend == "memory" else LevelDBStore(tmp_path / "db")
    try:
        s.write_batch({b"keep": b"1"})
        with pytest.raises(TypeError):
            s.write_batch({b"first": b"1", b"bad": "not bytes"}, (b"keep",))  # type: ignore[dict-item]
        assert s.get(b"first") is None
        assert s.get(b"keep") == b"1"
    finally:
        s.close()


def test_leveldb_data_survives_reopening(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "db")
    s.write_batch({b"k": b"v"})
    s.close()
    s = LevelDBStore(tmp_path / "db")
    try:
        assert s.get(b"k") == b"v"
    finally:
        s.close()


def test_leveldb_directory_in_use_is_a_clear_storage_error(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "db")
    try:
        with pytest.raises(StorageError, match="another node"):
            LevelDBStore(tmp_path / "db")
    finally:
        s.close()


# -- ChainStore ------------------------------------------------------------------------------------

ALICE = account("alice")
VAL = validator("v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address])], [VAL])


def anchor(nonce: int, digest: bytes) -> bytes:
    return sign_call(ALICE, NOTARY, call_data("anchor(bytes32)", digest), nonce)


def test_committed_blocks_are_readable_with_receipts_qc_and_indexes(store: KeyValueStore) -> None:
    chain = Chain(GENESIS, VAL, store)
    e1 = chain.produce([anchor(0, b"\x01" * 32), anchor(1, b"\x02" * 32)])
    chain.produce([])
    reopened = ChainStore(store)  # a fresh instance reads from the store, not from a cache
    assert reopened.head_height == 2
    assert reopened.get_block(1) == e1.block and reopened.get_block(1).hash == e1.block.hash
    assert reopened.get_receipts(1) == list(e1.receipts)
    assert reopened.get_senders(1) == [ALICE.address, ALICE.address]
    qc = reopened.get_qc(1)
    assert qc is not None and qc.block_hash == e1.block.hash and qc.height == 1
    assert reopened.get_height_by_hash(e1.block.hash) == 1
    loc = reopened.get_tx_location(keccak256(e1.block.transactions[1]))
    assert loc is not None and (loc.height, loc.index) == (1, 1)
    assert list(reopened.iter_log_heights(NOTARY, 0, 10, by_topic=False)) == [1]
    assert list(reopened.iter_log_heights(b"\x01" * 32, 0, 10, by_topic=True)) == [1]
    assert list(reopened.iter_log_heights(b"\x01" * 32, 2, 10, by_topic=True)) == []
    assert reopened.get_accumulator() == chain.accumulator
    with pytest.raises(NotFound):
        reopened.get_block(3)
    with pytest.raises(NotFound):
        reopened.get_height_by_hash(b"\x00" * 32)


def test_blocks_must_be_appended_in_order(store: KeyValueStore) -> None:
    chain = Chain(GENESIS, VAL, store)
    executed = chain.produce([])
    with pytest.raises(StorageError, match="cannot append block 1 on head 1"):
        chain.chain.commit_block(executed.block, (), (), (), {}, executed.accumulator, None)


def test_a_block_is_not_stored_with_a_wrong_number_of_transaction_hashes(store: KeyValueStore) -> None:
    """The tx-hash index is written from the hashes execution derived: a caller that passes fewer or more
    than the block's transactions gets a StorageError and nothing is written."""
    chain = Chain(GENESIS, VAL, store)
    executed, qc = chain.certify_next([anchor(0, b"\x06" * 32)])
    with pytest.raises(StorageError, match="has 1 transactions but 0 hashes"):
        chain.chain.commit_block(executed.block, executed.receipts, executed.senders, (), executed.state_changes,
                                 executed.accumulator, qc)
    assert chain.chain.head_height == 0
    assert ChainStore(store).head_height == 0


def test_state_changes_are_committed_and_deletions_applied(store: KeyValueStore) -> None:
    executed = Chain(GENESIS, VAL, store).produce([anchor(0, b"\x05" * 32)])
    for k, v in executed.state_changes.items():
        assert ChainStore(store).state.get(k) == v
    block2 = dataclasses.replace(executed.block, header=dataclasses.replace(
        executed.block.header, height=2, parent_hash=executed.block.hash), hash=b"")
    key = next(iter(executed.state_changes))
    ChainStore(store).commit_block(block2, (), (), executed.tx_hashes, {key: None}, 5, None)
    assert ChainStore(store).state.get(key) is None
    assert store.get(K_HEAD) == (2).to_bytes(8, "big")


def test_a_transaction_is_located_only_once_its_state_is_visible(store: KeyValueStore) -> None:
    """commit_block writes the batch, then shows the state, then moves the head; another thread that
    polls get_tx_location in between (a joint job waiting for its own transaction) must not find the
    transaction before its state changes are readable."""
    chain = Chain(GENESIS, VAL, store)
    seen: list[object] = []
    tx = keccak256(anchor(0, b"\x07" * 32))

    class LookingReader(StateReaderAt):
        def update(self, changes: dict[bytes, bytes | None]) -> None:
            seen.append(chain.chain.get_tx_location(tx))  # on disk already, state not yet shown
            super().update(changes)

    chain.chain.state = LookingReader(store)
    executed = chain.produce([anchor(0, b"\x07" * 32)])
    assert seen == [None]
    loc = chain.chain.get_tx_location(tx)
    assert loc is not None and loc.height == executed.block.height
    assert all(chain.chain.state.get(k) == v for k, v in executed.state_changes.items())


def test_matching_logs_are_those_of_the_receipts_read_from_disk_or_cache(store: KeyValueStore) -> None:
    """iter_matching_logs filters a height's logs by address and topics without decoding every receipt:
    the same logs, with the same transaction and block log indexes, as a filter over get_receipts."""
    chain = Chain(GENESIS, VAL, store)
    digests = [bytes([i]) * 32 for i in range(1, 5)]
    executed = chain.produce([anchor(i, d) for i, d in enumerate(digests)])
    height = executed.block.height

    def expected(address: bytes, topics: list[bytes | None]) -> list[tuple[int, int, Any]]:
        out, k = [], 0
        for i, receipt in enumerate(executed.receipts):
            for lg in receipt.logs:
                if lg.address == address and all(t is None or (j < len(lg.topics) and lg.topics[j] == t)
                                                  for j, t in enumerate(topics)):
                    out.append((i, k, lg))
                k += 1
        return out

    cases = [(NOTARY, []), (NOTARY, [None, digests[2]]), (NOTARY, [None, b"\x09" * 32]), (b"\x01" * 20, [])]
    cached, cold = chain.chain, ChainStore(store)  # the committing instance caches; a fresh one reads the disk
    for address, topics in cases:
        want = expected(address, topics)
        assert list(cached.iter_matching_logs(height, address, topics)) == want
        assert list(cold.iter_matching_logs(height, address, topics)) == want
    assert len(expected(NOTARY, [])) == 4 and len(expected(NOTARY, [None, digests[2]])) == 1
    with pytest.raises(NotFound):
        list(cold.iter_matching_logs(height + 5, NOTARY, []))


def test_data_dir_of_another_chain_id_is_refused(store: KeyValueStore) -> None:
    open_chain(store, GENESIS)
    other = dataclasses.replace(GENESIS, chain_id=GENESIS.chain_id + 1)
    with pytest.raises(ConfigError, match=r"chain id 4242.*4243.*data_dir"):
        open_chain(store, other)


def test_data_dir_of_another_genesis_is_refused(store: KeyValueStore) -> None:
    open_chain(store, GENESIS)
    other = dataclasses.replace(GENESIS, timestamp_ms=GENESIS.timestamp_ms + 1)
    with pytest.raises(ConfigError, match="different genesis"):
        open_chain(store, other)


def test_genesis_mismatch_message_says_what_to_do() -> None:
    s = MemoryStore()
    open_chain(s, GENESIS)
    with pytest.raises(ConfigError, match="data_dir"):
        open_chain(s, dataclasses.replace(GENESIS, timestamp_ms=1))


def test_data_dir_of_a_newer_format_is_refused(store: KeyValueStore) -> None:
    open_chain(store, GENESIS)
    store.write_batch({K_FORMAT: (FORMAT_VERSION + 1).to_bytes(4, "big")})
    with pytest.raises(ConfigError, match=f"format {FORMAT_VERSION + 1}.*upgrade chainshare"):
        open_chain(store, GENESIS)


def test_data_dir_of_an_older_format_is_refused(store: KeyValueStore) -> None:
    open_chain(store, GENESIS)
    store.write_batch({K_FORMAT: (OLDEST_READABLE_FORMAT - 1).to_bytes(4, "big")})
    with pytest.raises(ConfigError, match=f"format {OLDEST_READABLE_FORMAT - 1}, whose consensus signatures carry "
                       "no validator-set epoch.*new data directory"):
        open_chain(store, GENESIS)


def test_blocks_and_receipts_are_stored_compressed_and_read_back(store: KeyValueStore) -> None:
    chain = Chain(GENESIS, VAL, store)
    e1 = chain.produce([anchor(n, bytes([n]) * 32) for n in range(20)])
    h = (1).to_bytes(8, "big")
    stored_block, stored_receipts = store.get(P_BLOCK + h), store.get(P_RECEIPTS + h)
    assert stored_block is not None and stored_receipts is not None
    assert unpack_stored(stored_block) == e1.block.encode() and len(stored_block) < len(e1.block.encode())
    assert codec.decode(unpack_stored(stored_receipts)) == [r.to_list() for r in e1.receipts]
    assert ChainStore(store).get_block(1) == e1.block


def test_format_2_data_dir_is_read_as_it_is_and_marked_with_the_current_format(store: KeyValueStore) -> None:
    """A data directory written before blocks and receipts were compressed (format 2) holds them as their plain
    encodings: it opens, reads them, and is marked with the current format before new blocks go in."""
    chain = Chain(GENESIS, VAL, store)
    e1 = chain.produce([anchor(0, b"\x01" * 32)])
    h = (1).to_bytes(8, "big")
    store.write_batch({K_FORMAT: (2).to_bytes(4, "big"), P_BLOCK + h: e1.block.encode(),
                       P_RECEIPTS + h: codec.encode([r.to_list() for r in e1.receipts])})
    reopened = open_chain(store, GENESIS)
    assert store.get(K_FORMAT) == FORMAT_VERSION.to_bytes(4, "big")
    assert reopened.get_block(1) == e1.block and reopened.get_receipts(1) == list(e1.receipts)


def test_damaged_compressed_value_is_a_storage_error() -> None:
    packed = pack_stored(b"\x93\x01\x02\x03" * 100)
    for bad in (packed[:-4], packed + b"x"):
        with pytest.raises(StorageError, match="data directory is damaged"):
            unpack_stored(bad)


def test_data_dir_with_blocks_but_no_format_marker_is_refused(store: KeyValueStore) -> None:
    open_chain(store, GENESIS)
    store.write_batch({}, (K_FORMAT,))
    with pytest.raises(StorageError, match="no format marker"):
        open_chain(store, GENESIS)


def test_reopening_the_same_data_dir_keeps_the_chain(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "chain")
    chain = Chain(GENESIS, VAL, s)
    head = chain.produce([anchor(0, b"\x09" * 32)]).block
    s.close()
    s = LevelDBStore(tmp_path / "chain")
    try:
        reopened = open_chain(s, GENESIS)
        assert reopened.head_height == 1 and reopened.get_head().hash == head.hash
        with pytest.raises(ConfigError, match="chain id"):
            open_chain(s, dataclasses.replace(GENESIS, chain_id=7))
    finally:
        s.close()


def test_a_read_leveldb_cannot_make_is_a_storage_error_of_this_node(tmp_path: Path) -> None:
    """plyvel's own errors (here: the database closed under the reader) never reach execution as they are,
    where a contract's failures revert: a ledger that cannot be read stops the block instead."""
    store = LevelDBStore(tmp_path / "db")
    store.write_batch({b"k1": b"v"})
    store.close()
    with pytest.raises(StorageError) as by_get:
        store.get(b"k1")
    with pytest.raises(StorageError) as by_iterate:
        list(store.iterate(b"k"))
    for failed in (by_get.value, by_iterate.value):
        assert failed.message == f"cannot read the ledger at {tmp_path / 'db'}: {failed.__cause__}"
        assert isinstance(failed.__cause__, RuntimeError)  # plyvel's, for a closed database
