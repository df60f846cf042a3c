"""Gossip bookkeeping: which items this node has already received or forwarded.

A gossiped item is identified by the keccak-256 of its canonical payload, so every node computes the
same id for the same item and no peer can make a node drop an item by announcing a false id.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.p2p.framing import encode_payload

_RECEIVED = 1
_FORWARDED = 2


def compute_gossip_id(msg_type: str, body: Any) -> bytes:
    """The 32-byte id of a gossiped item: keccak-256 of the canonical payload ``[msg_type, body]``."""
    return keccak256(encode_payload(msg_type, body))


class GossipFilter:
    """A bounded LRU of gossip ids (at most ``capacity``; the least recently used is forgotten first).

    While an id is remembered it is delivered to the application at most once (``mark_received``
    says whether it is new) and forwarded at most once (``is_forwarded`` / ``mark_forwarded``); an
    item this node has sent counts as received, so it is not delivered back to it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("gossip filter capacity must be at least 1")
        self.capacity = capacity
        self._flags: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flags)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._flags

    def mark_received(self, item_id: bytes) -> bool:
        """Remember ``item_id`` as received; True if it was new (deliver it), False for a duplicate."""
        flags = self._flags.get(item_id)
        self._set(item_id, (flags or 0) | _RECEIVED)
        return flags is None

    def is_forwarded(self, item_id: bytes) -> bool:
        """Whether this node has already sent ``item_id`` to its peers (while it is remembered)."""
        return bool(self._flags.get(item_id, 0) & _FORWARDED)

    def mark_forwarded(self, item_id: bytes) -> None:
        """Remember that this node has sent ``item_id`` to its peers (it also counts as received)."""
        self._set(item_id, self._flags.get(item_id, 0) | _RECEIVED | _FORWARDED)

    def _set(self, item_id: bytes, flags: int) -> None:
        self._flags[item_id] = flags
        self._flags.move_to_end(item_id)
        while len(self._flags) > self.capacity:
            self._flags.popitem(last=False)
