"""Key-value storage: LevelDB (plyvel) on disk and an in-memory twin for unit tests.

Both implement ``KeyValueStore``. ``write_batch`` applies puts and deletes atomically; on
LevelDB it is one ``WriteBatch`` written with ``sync=True``, so once it returns the data survives
a crash of the process or the machine.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from chainshare.errors import StorageError


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return None
    b[-1] += 1
    return bytes(b)


class KeyValueStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: tuple[bytes, ...] = (), sync: bool = True) -> None: ...

    def iterate(self, prefix: bytes, start: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...


class LevelDBStore:
    """LevelDB on disk. Only one process may open a directory (LevelDB's LOCK file enforces it)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        import plyvel

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            # No LevelDB compression: LevelDB snappy-compresses every byte again at each compaction, and
            # with compression its background thread's CPU per credit record grew with the chain (profiled
            # in-process: snappy ~70% of that thread). The bulky write-once values (blocks, receipts) are
            # compressed once by ChainStore instead. Tables written with snappy stay readable.
            self._db = plyvel.DB(
                str(path), create_if_missing=create, compression=None,
                write_buffer_size=16 * 1024 * 1024, lru_cache_size=32 * 1024 * 1024,
                bloom_filter_bits=10, max_open_files=256,
            )
        except plyvel.IOError as exc:
            if "No space left" in str(exc) or "Disk quota" in str(exc):
                raise StorageError(f"disk full: cannot open the ledger at {path} ({exc}): free space on that "
                                   "filesystem and start the node again") from exc
            raise StorageError(
                f"cannot open the ledger at {path}: {exc} (is another node already using this data dir?)"
            ) from exc
        except plyvel.Error as exc:
            raise StorageError(f"the ledger at {path} is corrupted or unreadable: {exc}") from exc

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` or None; StorageError when LevelDB cannot read it (an I/O error, a corrupted
        table, a closed database): a failure of this node, never of what is being executed."""
        try:
            return self._db.get(key)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 (plyvel.IOError/CorruptionError, RuntimeError when closed)
            raise self._read_failed(exc) from exc

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: tuple[bytes, ...] = (), sync: bool = True) -> None:
        # transaction=True: a batch that fails part-way (bad value) writes nothing at all.
        import plyvel

        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                for k in deletes:
                    wb.delete(k)
                for k, v in puts.items():
                    wb.put(k, v)
        except plyvel.IOError as exc:
            # LevelDB refuses every later write once one failed: the node must stop and be started again.
            # The failed batch is not in the ledger (it is written whole or not at all).
            if "No space left" in str(exc) or "Disk quota" in str(exc):
                raise StorageError(f"disk full: the ledger at {self.path} cannot be written ({exc}); nothing of the "
                                   "failed block was kept: free space on that filesystem and start the node again "
                                   "(a supervisor's restart policy does this once space returns)") from exc
            raise StorageError(f"cannot write the ledger at {self.path}: {exc}") from exc

    def iterate(self, prefix: bytes, start: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """The items under ``prefix`` from ``start`` on, in key order (or reversed); StorageError as ``get``."""
        try:
            yield from self._iterate(prefix, start, reverse)
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 (as in get)
            raise self._read_failed(exc) from exc

    def _read_failed(self, exc: Exception) -> StorageError:
        return StorageError(f"cannot read the ledger at {self.path}: {exc}")

    def _iterate(self, prefix: bytes, start: bytes | None, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        if start is None:
            yield from self._db.iterator(prefix=prefix, reverse=reverse)
            return
        end = prefix_end(prefix)
        if reverse:
            # keys k with prefix <= k <= start, restricted to the prefix
            it = self._db.iterator(start=prefix, stop=start, include_stop=True, reverse=True)
        else:
            lo = max(start, prefix)
            it = self._db.iterator(start=lo, stop=end) if end is not None else self._db.iterator(start=lo)
        for k, v in it:
            if k.startswith(prefix):
                yield k, v

    def snapshot(self) -> Any:
        """A plyvel snapshot: a consistent point-in-time view for reads while writes go on."""
        return self._db.snapshot()

    def close(self) -> None:
        self._db.close()


class MemoryStore:
    """In-memory store with the same interface (unit tests only: nothing survives the process)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: tuple[bytes, ...] = (), sync: bool = True) -> None:
        for k, v in puts.items():  # validate everything first: a failing batch changes nothing
            if not isinstance(k, bytes) or not isinstance(v, bytes | bytearray):
                raise TypeError("keys and values must be bytes")
        if not all(isinstance(k, bytes) for k in deletes):
            raise TypeError("keys must be bytes")
        with self._lock:
            for k in deletes:
                if self._data.pop(k, None) is not None:
                    self._keys.pop(bisect.bisect_left(self._keys, k))
            for k, v in puts.items():
                if k not in self._data:
                    bisect.insort(self._keys, k)
                self._data[k] = bytes(v)

    def iterate(self, prefix: bytes, start: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        with self._lock:
            lo = bisect.bisect_left(self._keys, prefix)
            keys = []
            for k in self._keys[lo:]:
                if not k.startswith(prefix):
                    break
                keys.append(k)
        if reverse:
            keys.reverse()
            if start is not None:
                keys = [k for k in keys if k <= start]
        elif start is not None:
            keys = [k for k in keys if k >= start]
        for k in keys:
            v = self._data.get(k)
            if v is not None:
                yield k, v

    def close(self) -> None:
        pass
