"""The static-word fast path of chainshare.execution.abi must be indistinguishable from eth_abi."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import decode as eth_decode
from eth_abi.abi import encode as eth_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from chainshare.crypto.secp import to_checksum_address
from chainshare.errors import DecodeError
from chainshare.execution import abi

TYPES = ["address", "bool", "bytes32", "uint8", "uint64", "uint256"]


def _value(t: str) -> st.SearchStrategy[Any]:
    if t == "address":
        return st.binary(min_size=20, max_size=20).map(to_checksum_address)
    if t == "bool":
        return st.booleans()
    if t == "bytes32":
        return st.binary(min_size=32, max_size=32)
    return st.integers(min_value=0, max_value=2 ** int(t[4:]) - 1)


signatures = st.lists(st.sampled_from(TYPES), min_size=1, max_size=4)


@settings(max_examples=300)
@given(st.data())
def test_fast_encoding_equals_eth_abi(data: st.DataObject) -> None:
    types = data.draw(signatures)
    values = [data.draw(_value(t)) for t in types]
    assert abi.encode_values(types, values) == eth_encode(types, values)
    assert abi.decode_values(types, eth_encode(types, values)) == tuple(eth_decode(types, eth_encode(types, values)))


@settings(max_examples=300)
@given(signatures, st.data())
def test_fast_decoding_accepts_and_refuses_exactly_what_eth_abi_does(types: list[str], data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=32 * len(types), max_size=32 * len(types)))
    try:
        expected: Any = tuple(eth_decode(types, raw, strict=True))
    except Exception:
        expected = DecodeError
    if expected is DecodeError:
        with pytest.raises(DecodeError):
            abi.decode_values(types, raw)
    else:
        assert abi.decode_values(types, raw) == expected


def test_out_of_range_values_fall_back_to_eth_abi_and_its_error() -> None:
    with pytest.raises(Exception, match="8 bits"):
        abi.encode_values(["uint8"], [256])
