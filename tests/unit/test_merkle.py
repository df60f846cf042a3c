"""RFC 6962 Merkle trees over keccak-256, checked against an independent reference implementation."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest
from eth_utils import keccak as ref_keccak  # an independent keccak-256 implementation
from hypothesis import given
from hypothesis import strategies as st

from chainshare.ledger.merkle import (
    InclusionProof,
    compute_inclusion_proof,
    compute_root,
    hash_children,
    hash_leaf,
    hash_leaves,
    verify_inclusion_proof,
)

SIZES = range(1, 71)


# -- an independent, literal transcription of RFC 6962 section 2.1 --------------------------------

def ref_split(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n])."""
    return _ref_mth(tuple(d))


def ref_root(d: Sequence[bytes]) -> bytes:
    """chainshare's root: RFC 6962 MTH bound to the leaf count, keccak(0x02 || uint64_be(n) || MTH)."""
    if not d:
        return ref_keccak(b"")
    return ref_keccak(b"\x02" + len(d).to_bytes(8, "big") + ref_mth(d))


@functools.lru_cache(maxsize=65536)
def _ref_mth(d: tuple[bytes, ...]) -> bytes:
    n = len(d)
    if n == 0:
        return ref_keccak(b"")
    if n == 1:
        return ref_keccak(b"\x00" + d[0])
    k = ref_split(n)
    return ref_keccak(b"\x01" + _ref_mth(d[:k]) + _ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


@functools.lru_cache(maxsize=16384)
def ref_shape(m: int, n: int) -> tuple[str, ...]:
    """Side of each audit-path sibling (leaf upwards) for leaf m of a tree of n leaves."""
    if n == 1:
        return ()
    k = ref_split(n)
    if m < k:
        return (*ref_shape(m, k), "right")
    return (*ref_shape(m - k, n - k), "left")


def leaves_of(n: int) -> list[bytes]:
    return [b"leaf-%d" % i for i in range(n)]


# -- structure --------------------------------------------------------------------------------

def test_empty_tree_root_is_keccak_of_nothing() -> None:
    assert compute_root([]) == ref_keccak(b"")


def test_small_trees_have_the_rfc6962_shape() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (ref_keccak(b"\x00" + x) for x in (a, b, c))
    def bound(n: int, mth: bytes) -> bytes:
        return ref_keccak(b"\x02" + n.to_bytes(8, "big") + mth)

    assert compute_root([a]) == bound(1, la)
    assert compute_root([a, b]) == bound(2, ref_keccak(b"\x01" + la + lb))
    # Three leaves: the left subtree is the largest power of two (2), the third leaf is promoted.
    assert compute_root([a, b, c]) == bound(3, ref_keccak(b"\x01" + ref_keccak(b"\x01" + la + lb) + lc))
    assert hash_leaf(a) == la and hash_children(la, lb) == ref_keccak(b"\x01" + la + lb)


@pytest.mark.parametrize("n", range(0, 71))
def test_root_matches_the_reference_mth(n: int) -> None:
    leaves = leaves_of(n)
    assert compute_root(leaves) == ref_root(leaves)


def test_hash_leaves_hashes_each_leaf_in_order() -> None:
    leaves = [b"", b"a", b"\x00" * 40, b"a"]
    assert hash_leaves(leaves) == [ref_keccak(b"\x00" + x) for x in leaves] == [hash_leaf(x) for x in leaves]
    assert hash_leaves([]) == []


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    la, lb = hash_leaf(b"a"), hash_leaf(b"b")
    # A one-leaf tree whose leaf is the concatenation of two leaf hashes is not the two-leaf tree.
    assert compute_root([la + lb]) != compute_root([b"a", b"b"])
    # And an interior node cannot be passed off as a leaf.
    root = compute_root([b"a", b"b", b"c", b"d"])
    proof = compute_inclusion_proof([b"a", b"b", b"c", b"d"], 0)
    assert not verify_inclusion_proof(la + lb, InclusionProof(0, 2, proof.path[1:]), root)


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_are_the_rfc6962_audit_paths_and_verify(n: int) -> None:
    leaves = leaves_of(n)
    root = compute_root(leaves)
    for i in range(n):
        proof = compute_inclusion_proof(leaves, i)
        assert (proof.index, proof.size) == (i, n)
        assert list(proof.path) == ref_path(i, leaves)
        assert verify_inclusion_proof(leaves[i], proof, root)


def test_proof_json_form_is_hex() -> None:
    proof = compute_inclusion_proof([b"a", b"b", b"c"], 2)
    assert proof.to_json() == {"index": 2, "size": 3, "path": ["0x" + p.hex() for p in proof.path]}


# -- tampering ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", SIZES)
def test_tampered_leaf_or_root_fails(n: int) -> None:
    leaves = leaves_of(n)
    root = compute_root(leaves)
    other_root = compute_root(leaves + [b"extra"])
    for i in range(n):
        proof = compute_inclusion_proof(leaves, i)
        assert not verify_inclusion_proof(leaves[i] + b"!", proof, root)
        assert not verify_inclusion_proof(leaves[(i + 1) % n] if n > 1 else b"x", proof, root)
        assert not verify_inclusion_proof(leaves[i], proof, other_root)


@pytest.mark.parametrize("n", SIZES)
def test_tampered_index_fails(n: int) -> None:
    leaves = leaves_of(n)
    root = compute_root(leaves)
    for i in range(n):
        proof = compute_inclusion_proof(leaves, i)
        for j in {*range(max(0, i - 3), min(n, i + 4)), 0, n - 1, i ^ 1, i ^ 2}:
            if j != i and 0 <= j < n:
                assert not verify_inclusion_proof(leaves[i], InclusionProof(j, n, proof.path), root), (i, j)
        for j in (-1, n, n + 1, 2**64):
            assert not verify_inclusion_proof(leaves[i], InclusionProof(j, n, proof.path), root)


@pytest.mark.parametrize("n", SIZES)
def test_tampered_path_fails(n: int) -> None:
    leaves = leaves_of(n)
    root = compute_root(leaves)
    for i in range(n):
        path = list(compute_inclusion_proof(leaves, i).path)
        tampered: list[list[bytes]] = [path + [bytes(32)], path + [root]]
        if path:
            tampered += [path[:-1], path[1:]]
            for k in range(len(path)):
                flipped = bytearray(path[k])
                flipped[k % 32] ^= 0x01
                tampered.append(path[:k] + [bytes(flipped)] + path[k + 1:])
            if len(path) > 1 and path[0] != path[1]:
                tampered.append([path[1], path[0], *path[2:]])
        for bad in tampered:
            assert not verify_inclusion_proof(leaves[i], InclusionProof(i, n, tuple(bad)), root)


@pytest.mark.parametrize("n", SIZES)
def test_tampered_size_is_never_accepted(n: int) -> None:
    """The root binds the leaf count, so no wrong size verifies, even one whose audit path has the
    same shape as the true one (plain RFC 6962 MTH would accept those)."""
    leaves = leaves_of(n)
    root = compute_root(leaves)
    for i in range(n):
        proof = compute_inclusion_proof(leaves, i)
        shape = ref_shape(i, n)
        for n2 in range(0, 80):
            if n2 == n:
                continue
            accepted = verify_inclusion_proof(leaves[i], InclusionProof(i, n2, proof.path), root)
            assert not accepted, (i, n, n2, shape == ref_shape(i, n2) if i < n2 else None)


def test_proof_cannot_claim_another_position_under_the_same_root() -> None:
    leaves = [b"a", b"b", b"c"]
    root = compute_root(leaves)
    proof = compute_inclusion_proof(leaves, 2)
    assert not verify_inclusion_proof(b"c", InclusionProof(1, 2, proof.path), root)


def test_out_of_range_proof_request_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        compute_inclusion_proof([b"a"], 1)
    with pytest.raises(IndexError):
        compute_inclusion_proof([], 0)


# -- properties -------------------------------------------------------------------------------

# Distinct leaves: with repeated leaves a mirrored index legitimately verifies.
leaf_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=90, unique=True)


@given(leaf_lists, st.data())
def test_any_proof_verifies_and_any_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    root = compute_root(leaves)
    assert root == ref_root(leaves)
    proof = compute_inclusion_proof(leaves, i)
    assert verify_inclusion_proof(leaves[i], proof, root)

    other_leaf = data.draw(st.binary(max_size=40).filter(lambda x: x != leaves[i]), label="other leaf")
    assert not verify_inclusion_proof(other_leaf, proof, root)
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i), label="other index")
        assert not verify_inclusion_proof(leaves[i], InclusionProof(j, n, proof.path), root)
        k = data.draw(st.integers(0, len(proof.path) - 1), label="path element")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = bytearray(proof.path[k])
        bad[bit // 8] ^= 1 << (bit % 8)
        path = proof.path[:k] + (bytes(bad),) + proof.path[k + 1:]
        assert not verify_inclusion_proof(leaves[i], InclusionProof(i, n, path), root)


@given(leaf_lists, st.integers(0, 2**70), st.integers(-5, 2**70),
       st.lists(st.binary(min_size=32, max_size=32), max_size=80))
def test_verifier_never_raises_on_arbitrary_proofs(leaves: list[bytes], index: int, size: int,
                                                   path: list[bytes]) -> None:
    root = compute_root(leaves)
    assert verify_inclusion_proof(leaves[0], InclusionProof(index, size, tuple(path)), root) in (True, False)
