"""The state commitment: a MuHash3072 multiset hash over every (key, value) pair of the state.

Why not a Merkle-Patricia trie: re-hashing a path of 256 nodes per write costs more than the
whole transaction budget in Python. MuHash (Bellare-Micciancio; the UTXO-set hash of Bitcoin Core)
commits to the entire state, is order-independent, and updates in O(changed keys): each entry
maps to an element of Z_p* (p = 2^3072 - 1103717) and the accumulator is their product. Its
security rests on discrete logarithms in that group. The state root in a header is
keccak-256 of the 384-byte accumulator. It proves equality of whole states, not membership of
one key (no per-key proofs).
"""

from __future__ import annotations

from hashlib import shake_256

from chainshare.crypto.hashing import keccak256

MUHASH_PRIME = 2**3072 - 1103717
ACCUMULATOR_BYTES = 384
IDENTITY = 1


def _element(key: bytes, value: bytes) -> int:
    data = len(key).to_bytes(4, "big") + key + value
    return int.from_bytes(shake_256(b"chainshare/state/v1" + data).digest(ACCUMULATOR_BYTES), "big") % MUHASH_PRIME or 1


def apply_state_changes(accumulator: int, changes: list[tuple[bytes, bytes | None, bytes | None]]) -> int:
    """Fold (key, old value or None, new value or None) changes into the accumulator."""
    num, den = 1, 1
    for key, old, new in changes:
        if old == new:
            continue
        if old is not None:
            den = den * _element(key, old) % MUHASH_PRIME
        if new is not None:
            num = num * _element(key, new) % MUHASH_PRIME
    if den != 1:
        num = num * pow(den, -1, MUHASH_PRIME) % MUHASH_PRIME
    return accumulator * num % MUHASH_PRIME


def compute_state_root(accumulator: int) -> bytes:
    return keccak256(accumulator.to_bytes(ACCUMULATOR_BYTES, "big"))


def encode_accumulator(accumulator: int) -> bytes:
    return accumulator.to_bytes(ACCUMULATOR_BYTES, "big")


def decode_accumulator(data: bytes) -> int:
    return int.from_bytes(data, "big")
