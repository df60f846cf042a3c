"""State views: a write overlay over a reader, with snapshots for reverting a failed call.

Stacking views (a view over a view) is how a block is executed speculatively on top of a
not-yet-finalized parent without touching the committed state.
"""

from __future__ import annotations

from typing import Protocol

_MISSING = object()


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


class StateView:
    """Buffered writes over ``parent``; ``changes()`` lists every key written since creation."""

    __slots__ = ("_parent", "_writes", "_journal")

    def __init__(self, parent: StateReader) -> None:
        self._parent = parent
        self._writes: dict[bytes, bytes | None] = {}
        self._journal: list[tuple[bytes, object]] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._parent.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        self._journal.append((key, self._writes.get(key, _MISSING) if key in self._writes else _MISSING))
        self._writes[key] = value

    def snapshot(self) -> int:
        return len(self._journal)

    def revert(self, snapshot: int) -> None:
        """Undo every write made after ``snapshot`` was taken."""
        while len(self._journal) > snapshot:
            key, previous = self._journal.pop()
            if previous is _MISSING:
                del self._writes[key]
            else:
                self._writes[key] = previous  # type: ignore[assignment]

    def changes(self) -> dict[bytes, bytes | None]:
        return dict(self._writes)

    def commit_journal(self) -> None:
        """Forget the undo log (after a transaction succeeded): keeps memory flat over a block."""
        self._journal.clear()

    @property
    def parent(self) -> StateReader:
        return self._parent


class DictReader:
    """A reader over a plain dict (genesis construction, tests)."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data = data if data is not None else {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)
