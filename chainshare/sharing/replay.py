"""Replay protection that survives a restart: the keys of requests already accepted, on disk.

``ReplayStore.claim(key, now)`` checks and remembers a key in one step under a lock (no await, no
second call in between), and appends it to an append-only file with ``fsync`` before it returns:
a request accepted once is refused ever after, even by a node killed right after accepting it.
Keys are kept for ``retention`` seconds (callers refuse requests older than half of that by their
signed or stated time, so an expired key can never be replayed); the file is compacted at start
and whenever it holds many more lines than live keys.

File format: one line per accepted key, ``<key hex> <unix seconds accepted>``; a torn last line
(a crash mid-write) is ignored.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from chainshare.errors import StorageError

_COMPACT_SLACK = 4096  # compact when the file holds this many more lines than live keys (and twice as many)


class ReplayStore:
    """Keys (at most 128 bytes each) of accepted requests, kept for ``retention`` seconds."""

    def __init__(self, path: Path | None, retention: float) -> None:
        self.retention = retention
        self._path = path
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lines = 0
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, key: bytes, now: float) -> bool:
        """Remember ``key`` as accepted at ``now`` (durably) and return True, or return False if it
        was accepted before (nothing changes). Atomic: of two concurrent claims of one key, one wins."""
        if not isinstance(key, bytes) or not 1 <= len(key) <= 128:
            raise ValueError("a replay key is 1..128 bytes")
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            if self._path is not None:
                self._append(self._path, key, now)
            self._seen[key] = now
            if self._path is not None and self._lines > max(2 * len(self._seen), _COMPACT_SLACK):
                self._rewrite(self._path)
            return True

    def _expire(self, now: float) -> None:
        while self._seen:
            _key, seen_at = next(iter(self._seen.items()))
            if seen_at >= now - self.retention:
                break
            self._seen.popitem(last=False)

    def _load(self, path: Path) -> None:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise StorageError(f"cannot read the replay record {path}: {exc.strerror}") from exc
        entries = []
        for line in lines:
            parts = line.split()
            try:
                entries.append((bytes.fromhex(parts[0]), float(parts[1])))
            except (IndexError, ValueError):
                continue  # a torn line from a crash mid-write, or an older format
        for key, seen_at in sorted(entries, key=lambda e: e[1]):
            self._seen[key] = seen_at
        self._expire(time.time())
        self._rewrite(path)

    def _append(self, path: Path, key: bytes, now: float) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, f"{key.hex()} {now:.3f}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot write the replay record {path}: {exc.strerror}") from exc
        self._lines += 1

    def _rewrite(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, "".join(f"{k.hex()} {t:.3f}\n" for k, t in self._seen.items()).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write the replay record {path}: {exc.strerror}") from exc
        self._lines = len(self._seen)


__all__ = ["ReplayStore"]
