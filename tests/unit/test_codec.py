"""The canonical codec: what it encodes, what it refuses, and that decoding never fails uncleanly."""

from __future__ import annotations

import sys
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare import codec
from chainshare.errors import DecodeError

INT_MIN, INT_MAX = -(2**63), 2**64 - 1

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=INT_MIN, max_value=INT_MAX), st.binary(max_size=300),
    st.text(max_size=300),
)
# Lists only: tuples are encoded as arrays and come back as lists.
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@given(values)
def test_allowed_values_round_trip(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@given(values)
def test_encoding_is_canonical_and_matches_the_trusted_encoder(value: Any) -> None:
    data = codec.encode(value)
    assert codec.encode(codec.decode(data)) == data
    assert codec.encode_trusted(value) == data


@given(st.lists(values, max_size=40))
def test_an_array_of_encoded_items_is_the_encoding_of_the_array(items: list[Any]) -> None:
    assert codec.encode_array_of_encoded([codec.encode(x) for x in items]) == codec.encode(items)


@pytest.mark.parametrize("n", [0, 15, 16, 65_535, 65_536])
def test_an_array_of_encoded_items_has_the_right_header_at_each_size_boundary(n: int) -> None:
    items = [None] * n
    assert codec.encode_array_of_encoded([codec.encode(None)] * n) == codec.encode(items)
    assert codec.decode(codec.encode_array_of_encoded([codec.encode(1)] * n)) == [1] * n


def test_tuples_are_encoded_as_arrays() -> None:
    assert codec.encode((1, b"x", ("a",))) == codec.encode([1, b"x", ["a"]])
    assert codec.decode(codec.encode((1, 2))) == [1, 2]


def test_bytes_and_text_stay_distinct() -> None:
    assert codec.decode(codec.encode(b"abc")) == b"abc"
    assert codec.decode(codec.encode("abc")) == "abc"
    assert codec.encode(b"abc") != codec.encode("abc")


@pytest.mark.parametrize("value", [INT_MIN, -1, 0, 1, 127, 128, 2**32, 2**63, INT_MAX])
def test_integers_at_the_edges_of_the_range_round_trip(value: int) -> None:
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("value", [INT_MIN - 1, INT_MAX + 1, 2**200, -(2**200)])
def test_out_of_range_integers_are_refused_on_encode(value: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode(value)
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode([1, [value]])


@pytest.mark.parametrize(
    "value",
    [1.5, 0.0, [1, 2.0], {"a": 1}, {}, [b"x", {"k": b"v"}], {1, 2}, bytearray(b"x"), object()],
    ids=["float", "zero-float", "nested-float", "dict", "empty-dict", "nested-dict", "set", "bytearray", "object"],
)
def test_floats_maps_and_other_types_are_refused_on_encode(value: Any) -> None:
    with pytest.raises(TypeError, match="not canonically encodable"):
        codec.encode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\xc1",  # the one never-used msgpack byte
        b"\x92\x01",  # array of 2 with one element
        b"\xa5abc",  # truncated string
        b"\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\x81\xa1a\x01",  # a map
        b"\x91\x81\x01\x02",  # a map inside an array
        b"\xcb" + bytes(8),  # float64
        b"\xca" + bytes(4),  # float32
        b"\x92\x01\xcb" + bytes(8),  # float inside an array
        b"\xd6\xff" + bytes(4),  # ext type (msgpack timestamp)
        b"\x01\x02",  # trailing bytes
        codec.encode([1, 2]) + b"\x00",  # trailing bytes after a valid value
    ],
    ids=["empty", "never-used", "short-array", "truncated-str", "bad-utf8", "map", "nested-map", "float64",
         "float32", "nested-float", "ext", "trailing", "trailing-after-array"],
)
def test_malformed_input_is_refused_with_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_oversized_input_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_DECODE_BYTES", 16)
    with pytest.raises(DecodeError, match="exceeds 16"):
        codec.decode(codec.encode(b"x" * 20))


@given(st.binary(max_size=512))
def test_decoding_random_bytes_fails_only_with_decode_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except DecodeError:
        pass


@given(values, st.binary(min_size=1, max_size=8))
def test_valid_encoding_with_trailing_bytes_is_refused(value: Any, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(codec.encode(value) + tail)


def test_empty_map_is_refused_on_decode() -> None:
    with pytest.raises(DecodeError):
        codec.decode(b"\x80")


def test_zero_length_ext_value_is_refused_on_decode() -> None:
    with pytest.raises(DecodeError):
        codec.decode(b"\xc7\x00\x05")


NON_CANONICAL = [
    b"\xcc\x01",  # 1 as uint8 instead of a positive fixint
    b"\xd0\x05",  # 5 as int8
    b"\xcd\x00\x7f",  # 127 as uint16
    b"\xd9\x01a",  # "a" as str8 instead of fixstr
    b"\xc5\x00\x01x",  # b"x" as bin16 instead of bin8
    b"\xdc\x00\x00",  # [] as array16 instead of fixarray
]


@pytest.mark.parametrize("data", NON_CANONICAL, ids=[d.hex() for d in NON_CANONICAL])
def test_non_canonical_encodings_are_refused_on_decode(data: bytes) -> None:
    # Sanity: each is a valid msgpack encoding of a value whose canonical bytes differ.
    assert msgpack.unpackb(data) is not None and codec.encode(msgpack.unpackb(data)) != data
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_deeply_nested_arrays_fail_with_decode_error_not_recursion_error() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # CPython's default (some libraries raise it while they run)
    try:
        codec.decode(b"\x91" * 1000 + b"\xc0")
    except DecodeError:
        pass
    finally:
        sys.setrecursionlimit(limit)


def _first_refusal(value: Any, depth: int = 0) -> str | None:
    """What decoding must refuse first in ``value`` (depth-first, last item first), or None."""
    if isinstance(value, float):
        return "floats are not allowed in canonical encoding"
    if not isinstance(value, list | bytes | str | int | None):
        return f"type {type(value).__name__} is not allowed in canonical encoding"
    if isinstance(value, list):
        if depth >= codec.MAX_DEPTH:
            return f"nesting deeper than {codec.MAX_DEPTH} levels"
        for item in reversed(value):
            found = _first_refusal(item, depth + 1)
            if found:
                return found
    return None


def _nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


decoded_like = st.recursive(
    st.one_of(scalars, st.floats(allow_nan=False), st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.builds(_nest, inner, st.integers(55, 70))),
    max_leaves=20)


@given(decoded_like)
def test_decoded_values_are_refused_for_the_first_problem_found(value: Any) -> None:
    expected = _first_refusal(value)
    if expected is None:
        codec._check_decoded(value)
    else:
        with pytest.raises(DecodeError) as err:
            codec._check_decoded(value)
        assert err.value.message == expected


@given(values)
def test_stored_values_decode_as_the_canonical_decoder_does(value: Any) -> None:
    """decode_stored (the ledger's own blocks and receipts) answers what decode answers for what we wrote."""
    data = codec.encode(value)
    assert codec.decode_stored(data) == codec.decode(data) == value


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\x01\x02", b"\xd4\x01\x00", b"\x92\x01", b"\xa2\xff\xfe"],
                         ids=["empty", "never-used", "map", "ext", "short-array", "bad-utf8"])
def test_a_damaged_stored_value_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode_stored(data)


@given(st.binary(max_size=512))
def test_decoding_random_stored_bytes_fails_only_with_decode_error(data: bytes) -> None:
    try:
        codec.decode_stored(data)
    except DecodeError:
        pass
