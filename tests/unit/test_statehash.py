"""The MuHash state commitment: order independence, inverses, and distinct states give distinct roots."""

from __future__ import annotations

import random
from hashlib import shake_256

import gmpy2
from hypothesis import given, settings
from hypothesis import strategies as st

from chainshare.ledger.statehash import (
    ACCUMULATOR_BYTES,
    IDENTITY,
    MUHASH_PRIME,
    _multiply,
    apply_state_changes,
    compute_state_root,
    decode_accumulator,
    encode_accumulator,
)

keys = st.binary(min_size=1, max_size=12)
vals = st.binary(max_size=12)
states = st.dictionaries(keys, vals, max_size=12)


def root_of(state: dict[bytes, bytes]) -> bytes:
    return compute_state_root(apply_state_changes(IDENTITY, [(k, None, v) for k, v in state.items()]))


@given(states, st.randoms(use_true_random=False))
def test_root_does_not_depend_on_insertion_order_or_batching(state: dict[bytes, bytes], rnd: random.Random) -> None:
    items = list(state.items())
    rnd.shuffle(items)
    acc = IDENTITY
    for k, v in items:  # one change at a time
        acc = apply_state_changes(acc, [(k, None, v)])
    assert compute_state_root(acc) == root_of(state)


@settings(max_examples=100)
@given(states, states)
def test_removing_what_was_added_returns_to_the_previous_root(base: dict[bytes, bytes],
                                                              extra: dict[bytes, bytes]) -> None:
    extra = {k: v for k, v in extra.items() if k not in base}
    acc0 = apply_state_changes(IDENTITY, [(k, None, v) for k, v in base.items()])
    acc1 = apply_state_changes(acc0, [(k, None, v) for k, v in extra.items()])
    acc2 = apply_state_changes(acc1, [(k, v, None) for k, v in extra.items()])
    assert acc2 == acc0
    assert compute_state_root(acc1) == root_of({**base, **extra})


@given(states, st.data())
def test_updating_a_value_equals_building_the_updated_state(state: dict[bytes, bytes], data: st.DataObject) -> None:
    if not state:
        return
    key = data.draw(st.sampled_from(sorted(state)), label="key")
    new = data.draw(vals.filter(lambda v: v != state[key]), label="new value")
    acc = apply_state_changes(IDENTITY, [(k, None, v) for k, v in state.items()])
    updated = apply_state_changes(acc, [(key, state[key], new)])
    assert compute_state_root(updated) == root_of({**state, key: new})
    assert compute_state_root(updated) != compute_state_root(acc)


@settings(max_examples=100)
@given(states, states)
def test_different_states_have_different_roots(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> None:
    assert (root_of(a) == root_of(b)) == (a == b)


def test_key_value_boundary_is_unambiguous() -> None:
    # (b"ab", b"c") and (b"a", b"bc") concatenate alike; the commitment must still tell them apart.
    assert root_of({b"ab": b"c"}) != root_of({b"a": b"bc"})
    assert root_of({b"k": b""}) != root_of({})


def test_unchanged_entries_are_ignored() -> None:
    acc = apply_state_changes(IDENTITY, [(b"k", None, b"v")])
    assert apply_state_changes(acc, [(b"k", b"v", b"v"), (b"x", None, None)]) == acc


def test_empty_state_root_is_the_root_of_the_identity() -> None:
    assert root_of({}) == compute_state_root(IDENTITY)


@given(states)
def test_accumulator_encoding_round_trips(state: dict[bytes, bytes]) -> None:
    acc = apply_state_changes(IDENTITY, [(k, None, v) for k, v in state.items()])
    raw = encode_accumulator(acc)
    assert len(raw) == ACCUMULATOR_BYTES
    assert decode_accumulator(raw) == acc


# -- the fast arithmetic against the textbook formula ---------------------------------------------

def reference_accumulator(accumulator: int, changes: list[tuple[bytes, bytes | None, bytes | None]]) -> int:
    """MuHash3072 as first written: plain integers, every product reduced with ``%``."""
    def element(key: bytes, value: bytes) -> int:
        digest = shake_256(b"chainshare/state/v1" + len(key).to_bytes(4, "big") + key + value).digest(384)
        return int.from_bytes(digest, "big") % MUHASH_PRIME or 1

    num = den = 1
    for key, old, new in changes:
        if old == new:
            continue
        if old is not None:
            den = den * element(key, old) % MUHASH_PRIME
        if new is not None:
            num = num * element(key, new) % MUHASH_PRIME
    return accumulator * num * pow(den, -1, MUHASH_PRIME) % MUHASH_PRIME


changes_lists = st.lists(st.tuples(keys, st.none() | vals, st.none() | vals), max_size=16)


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=MUHASH_PRIME - 1), changes_lists)
def test_accumulator_equals_the_reference_formula(accumulator: int,
                                                  changes: list[tuple[bytes, bytes | None, bytes | None]]) -> None:
    assert apply_state_changes(accumulator, changes) == reference_accumulator(accumulator, changes)


@given(st.integers(min_value=0, max_value=MUHASH_PRIME - 1), st.integers(min_value=0, max_value=MUHASH_PRIME - 1))
def test_modular_product_equals_the_remainder(a: int, b: int) -> None:
    assert _multiply(gmpy2.mpz(a), gmpy2.mpz(b)) == a * b % MUHASH_PRIME


def test_modular_product_at_the_edges() -> None:
    p = MUHASH_PRIME
    for a, b in ((p - 1, p - 1), (p - 1, 1), (p - 1, 2), (0, p - 1), (1, 1), (2**3071, 2**3071),
                 (2**3072 - p + 1, p - 1), ((p + 1) // 2, 2)):
        assert _multiply(gmpy2.mpz(a), gmpy2.mpz(b)) == a * b % p, (a, b)
