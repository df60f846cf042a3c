"""The span-based RLP reader of the transaction hot path, checked against the reference ``rlp`` package
on valid and random input."""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from hypothesis import given, settings
from hypothesis import strategies as st
from rlpspan_kit import check_items, compare_with_reference

from chainshare.errors import DecodeError
from chainshare.ledger.rlpspan import encode_length, encode_uint, read_item, read_list, read_nth_item

items = st.recursive(st.binary(max_size=70), lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@settings(max_examples=100)
@given(st.lists(items, max_size=14))
def test_reader_agrees_with_rlp_on_valid_lists(value: list[Any]) -> None:
    check_items(rlp.encode(value), value)


@given(st.lists(items, max_size=14), st.integers(0, 15))
def test_the_nth_item_is_the_one_read_list_finds(value: list[Any], n: int) -> None:
    data = rlp.encode(value)
    spans, _, _ = read_list(data)
    if n < len(spans):
        assert read_nth_item(data, 0, n) == spans[n][:3]
    else:
        with pytest.raises(DecodeError, match=f"fewer than {n + 1} items"):
            read_nth_item(data, 0, n)


@given(st.binary(max_size=200), st.integers(0, 12))
def test_the_nth_item_of_random_bytes_is_read_or_refused_with_decode_error(data: bytes, n: int) -> None:
    try:
        is_list, start, end = read_nth_item(data, 0, n)
    except DecodeError:
        return
    assert 0 <= start <= end <= len(data)


@given(st.binary(max_size=200))
def test_reader_agrees_with_rlp_on_random_bytes(data: bytes) -> None:
    compare_with_reference(data)


@settings(max_examples=150)
@given(st.lists(items, min_size=1, max_size=8), st.data())
def test_reader_agrees_with_rlp_on_mutated_lists(value: list[Any], draw: st.DataObject) -> None:
    data = bytearray(rlp.encode(value))
    pos = draw.draw(st.integers(0, len(data) - 1), label="position")
    data[pos] = draw.draw(st.integers(0, 255), label="byte")
    cut = draw.draw(st.integers(0, len(data)), label="cut")
    compare_with_reference(bytes(data[:cut]))


@pytest.mark.parametrize("data,match", [
    (b"", "input ended"),
    (b"\xc2\x81\x05", "must not be length-prefixed"),  # single byte < 0x80 wrapped
    (b"\xc3\xb8\x01a", "long form used for a short item"),
    (b"\xf8\x02\x80\x80", "long form used for a short item"),
    (b"\xf9\x00\x38" + b"\x80" * 56, "leading zero"),
    (b"\xc2\x80", "past the end"),
    (b"\xc3\x82\x01", "past the end"),
    (b"\xc0\x80", "trailing bytes"),
    (b"\xc2\xb9", "past the end"),
], ids=["empty", "wrapped-byte", "long-short-string", "long-short-list", "zero-length-prefix",
        "truncated-list", "item-past-list", "trailing", "truncated-length"])
def test_malformed_or_non_canonical_rlp_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        read_list(data)
    with pytest.raises(rlp.exceptions.DecodingError):
        rlp.decode(data, strict=True)


@pytest.mark.parametrize("data", [b"\x80", b"\x05", b"\x83abc"])
def test_a_string_is_not_a_list(data: bytes) -> None:
    with pytest.raises(DecodeError, match="RLP list expected"):
        read_list(data)


def test_item_inside_a_list_may_not_reach_beyond_it() -> None:
    # Outer list claims 2 payload bytes; its item claims 3.
    with pytest.raises(DecodeError):
        read_list(b"\xc2\x83abc", whole=False)


def test_single_byte_item() -> None:
    assert read_item(b"\x7f", 0) == (False, 0, 1)
    assert read_item(b"\x81\x80", 0) == (False, 1, 2)


@given(st.integers(0, 2**256 - 1))
def test_encode_uint_is_rlp_of_the_integer(value: int) -> None:
    assert encode_uint(value) == rlp.encode(value)


@settings(max_examples=100)
@given(st.one_of(st.integers(0, 300), st.integers(0, 70_000)), st.sampled_from([0x80, 0xC0]))
def test_encode_length_is_the_rlp_prefix(length: int, offset: int) -> None:
    if offset == 0x80:
        payload = b"\x80" * length  # bytes >= 0x80: no single-byte special case
        assert encode_length(length, offset) + payload == rlp.encode(payload)
    else:
        assert encode_length(length, offset) + b"\x80" * length == rlp.encode([b""] * length)
