"""Binary Merkle trees in the style of RFC 6962 (Certificate Transparency), over keccak-256.

leaf hash = keccak(0x00 || leaf), node hash = keccak(0x01 || left || right), split point for n
leaves = the largest power of two smaller than n (RFC 6962's MTH). Unlike a CT log, a header does
not carry the tree size, so the root binds it: root = keccak(0x02 || uint64_be(n) || MTH); the
root of zero leaves is keccak(b""). A proof is at most ceil(log2 n) hashes, and a verifier needs
only the root from a header: a proof cannot claim another (index, size) under the same root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chainshare.crypto.hashing import EMPTY_KECCAK, keccak256, keccak256_each

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
ROOT_PREFIX = b"\x02"


def hash_leaf(leaf: bytes) -> bytes:
    """keccak(0x00 || leaf)."""
    return hash_leaves((leaf,))[0]


def hash_children(left: bytes, right: bytes) -> bytes:
    """keccak(0x01 || left || right)."""
    return _hash_pairs((left, right))[0]


# The domain separation of leaves and nodes is written here only; the batch forms hash a whole
# tree level in one call (a block's transactions and receipts).
def hash_leaves(leaves: Sequence[bytes]) -> list[bytes]:
    """``hash_leaf`` of each of ``leaves``, in order (a block's leaves in one call)."""
    return keccak256_each([LEAF_PREFIX + x for x in leaves])


def _hash_pairs(level: Sequence[bytes]) -> list[bytes]:
    """``hash_children`` of each pair (level[0], level[1]), (level[2], level[3]), ...; an odd last
    node is left out (the caller promotes it)."""
    return keccak256_each([NODE_PREFIX + level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)])


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    # Bottom-up pairing gives the same tree as RFC 6962's recursive split: an odd last node
    # is promoted unchanged to the next level.
    level = list(hashes)
    while len(level) > 1:
        nxt = _hash_pairs(level)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _bind_size(size: int, mth: bytes) -> bytes:
    return keccak256(ROOT_PREFIX + size.to_bytes(8, "big") + mth)


def compute_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of ``leaves`` (raw leaf bytes, not yet hashed), binding their count."""
    if not leaves:
        return EMPTY_KECCAK
    return _bind_size(len(leaves), _root_of_hashes(hash_leaves(leaves)))


@dataclass(frozen=True)
class InclusionProof:
    """Proof that the leaf at ``index`` of a tree of ``size`` leaves is under a root."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "size": self.size, "path": ["0x" + p.hex() for p in self.path]}


def compute_inclusion_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    """The audit path of leaf ``index`` (RFC 6962 section 2.1.1)."""
    return compute_inclusion_proof_of_hashes(hash_leaves(leaves), index)


def compute_inclusion_proof_of_hashes(leaf_hashes: Sequence[bytes], index: int) -> InclusionProof:
    """The same audit path from the leaves' hashes (``hash_leaf`` of each), e.g. as an index stores them."""
    if not 0 <= index < len(leaf_hashes):
        raise IndexError(f"leaf index {index} outside a tree of {len(leaf_hashes)} leaves")
    return InclusionProof(index, len(leaf_hashes), tuple(_path(leaf_hashes, index)))


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return _path(hashes[:k], index) + [_root_of_hashes(hashes[k:])]
    return _path(hashes[k:], index - k) + [_root_of_hashes(hashes[:k])]


def verify_inclusion_proof(leaf: bytes, proof: InclusionProof, root: bytes) -> bool:
    """True iff ``leaf`` is at ``proof.index`` of a tree of ``proof.size`` leaves with ``root``."""
    index, size = proof.index, proof.size
    if not 0 <= index < size < 2**64:
        return False
    fn, sn = index, size - 1
    r = hash_leaf(leaf)
    path = list(proof.path)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and _bind_size(size, r) == root
