"""The committed-state reader's cache stays exact while the commit thread writes and other threads
(API admission, eth_call) read: a value read before a commit is never written back after it."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable

from chainshare.ledger.chain import P_STATE, StateReaderAt
from chainshare.ledger.store import MemoryStore


class SlowStore(MemoryStore):
    """A store whose reads give up the GIL (as a LevelDB read does), with an optional hook that
    runs between reading a value and returning it."""

    def __init__(self, read_time_s: float = 0.0) -> None:
        super().__init__()
        self.read_time_s = read_time_s
        self.after_read: Callable[[bytes], None] | None = None

    def get(self, key: bytes) -> bytes | None:
        value = super().get(key)
        time.sleep(self.read_time_s)
        hook = self.after_read
        if hook is not None:
            hook(key)
        return value


def commit(store: MemoryStore, reader: StateReaderAt, changes: dict[bytes, bytes | None]) -> None:
    """What ``ChainStore.commit_block`` does with a block's state writes: store first, then cache."""
    store.write_batch({P_STATE + k: v for k, v in changes.items() if v is not None},
                      tuple(P_STATE + k for k, v in changes.items() if v is None))
    reader.update(changes)


def test_a_read_overtaken_by_a_commit_does_not_write_its_stale_value_back() -> None:
    store = SlowStore()
    reader = StateReaderAt(store)
    commit(store, reader, {b"k": b"old"})
    reader._cache.clear()  # a cold cache, as after the cache bound was hit

    def commit_meanwhile(key: bytes) -> None:
        store.after_read = None
        commit(store, reader, {b"k": b"new"})  # the commit thread runs between the read and the write-back

    store.after_read = commit_meanwhile
    assert reader.get(b"k") == b"old"  # the read began before the commit: it may answer the old value
    assert reader.get(b"k") == b"new"  # ... but the cache must not keep it
    assert reader.get(b"missing") is None


def test_cache_matches_the_store_after_concurrent_reads_and_commits() -> None:
    store = SlowStore(read_time_s=0.0002)
    reader = StateReaderAt(store, cache_entries=64)
    keys = [bytes([i]) for i in range(8)]
    commit(store, reader, {k: b"0" for k in keys})
    stop = threading.Event()
    stale: list[tuple[int, bytes]] = []

    def read_forever(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            reader.get(rng.choice(keys))

    def commit_many() -> None:
        rng = random.Random(0)
        for n in range(1, 250):
            if n % 3 == 0:
                reader._cache.clear()  # as when the bound is hit: keys are read cold again
            changes: dict[bytes, bytes | None] = {k: str(n).encode() for k in rng.sample(keys, 3)}
            changes[rng.choice(keys)] = None  # deletions too
            commit(store, reader, changes)
            time.sleep(0.002)  # reads that began before the commit finish meanwhile
            stale.extend((n, k) for k in keys if reader.get(k) != store.get(P_STATE + k))
        stop.set()

    readers = [threading.Thread(target=read_forever, args=(i,)) for i in range(2)]
    committer = threading.Thread(target=commit_many)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # hand the GIL over often, as I/O-bound threads do
    try:
        for t in readers + [committer]:
            t.start()
        for t in readers + [committer]:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not committer.is_alive()
    assert stale == []
