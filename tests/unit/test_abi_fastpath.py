"""The fast paths of chainshare.execution.abi (static words, string, bytes, T[]) must be
indistinguishable from eth_abi."""

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


DYNAMIC = ["string", "bytes", "string[]", "bytes[]", "uint256[]", "address[]", "bool[]", "string[][]"]


def _any_value(t: str) -> st.SearchStrategy[Any]:
    if t.endswith("[]"):
        return st.lists(_any_value(t[:-2]), max_size=4)
    if t == "string":
        return st.text(max_size=70)
    if t == "bytes":
        return st.binary(max_size=70)
    return _value(t)


mixed_signatures = st.lists(st.sampled_from(TYPES + DYNAMIC), min_size=1, max_size=5)


@settings(max_examples=400)
@given(st.data())
def test_fast_dynamic_encoding_and_decoding_equal_eth_abi(data: st.DataObject) -> None:
    types = data.draw(mixed_signatures)
    values = [data.draw(_any_value(t)) for t in types]
    expected = eth_encode(types, values)
    assert abi.encode_values(types, values) == expected
    assert abi.decode_values(types, expected) == tuple(eth_decode(types, expected, strict=True))


@settings(max_examples=600)
@given(st.data())
def test_fast_decoding_of_damaged_dynamic_data_agrees_with_eth_abi(data: st.DataObject) -> None:
    """Flipped bytes, cut or extended data (bad offsets, lengths, padding, UTF-8): the fast path
    returns what eth_abi returns, or both refuse."""
    types = data.draw(mixed_signatures)
    raw = bytearray(eth_encode(types, [data.draw(_any_value(t)) for t in types]))
    for _ in range(data.draw(st.integers(0, 3))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    raw += data.draw(st.binary(max_size=40)) if data.draw(st.booleans()) else b""
    try:
        expected: Any = tuple(eth_decode(types, bytes(raw), strict=True))
    except Exception:
        expected = DecodeError
    if expected is DecodeError:
        with pytest.raises(DecodeError):
            abi.decode_values(types, bytes(raw))
    else:
        assert abi.decode_values(types, bytes(raw)) == expected


@pytest.mark.parametrize(("types", "values", "error"), [
    (["string"], [b"not text"], "TextStringEncoder"),
    (["bytes"], ["not bytes"], "ByteStringEncoder"),
    (["string[]"], [["ok", 7]], "TextStringEncoder"),
    (["uint256[]"], ["12"], "DynamicArrayEncoder"),
    (["address"], ["0x" + "00" * 19 + "  "], "AddressEncoder"),  # bytes.fromhex would skip the spaces
])
def test_values_the_fast_path_does_not_recognise_get_eth_abis_error(types: list[str], values: list[Any],
                                                                     error: str) -> None:
    with pytest.raises(Exception, match=error):
        abi.encode_values(types, values)


def test_a_lone_surrogate_in_a_string_is_left_to_eth_abi() -> None:
    with pytest.raises(UnicodeEncodeError):
        abi.encode_values(["string"], ["\ud800"])


@settings(max_examples=300)
@given(st.data())
def test_a_compiled_encoder_equals_eth_abi(data: st.DataObject) -> None:
    types = data.draw(mixed_signatures)
    encode = abi.compile_encoder(types)
    for _ in range(3):  # one encoder, several value tuples
        values = [data.draw(_any_value(t)) for t in types]
        assert encode(values) == eth_encode(types, values)


@settings(max_examples=300)
@given(st.sampled_from(TYPES + DYNAMIC), st.data())
def test_a_compiled_value_encoder_equals_eth_abi(typ: str, data: st.DataObject) -> None:
    encode = abi.compile_value_encoder(typ)
    for _ in range(3):
        value = data.draw(_any_value(typ))
        assert encode(value) == eth_encode([typ], [value])


def test_a_compiled_encoder_leaves_what_it_does_not_recognise_to_eth_abi() -> None:
    with pytest.raises(Exception, match="TextStringEncoder"):
        abi.compile_encoder(["string[]"])([["ok", 7]])
    with pytest.raises(Exception, match="8 bits"):
        abi.compile_encoder(["uint8"])([256])
    assert abi.compile_encoder(["int256", "uint8[2]"])([-1, [1, 2]]) == eth_encode(["int256", "uint8[2]"], [-1, [1, 2]])
    with pytest.raises(Exception, match="8 bits"):
        abi.compile_value_encoder("uint8")(256)
    assert abi.compile_value_encoder("int256")(-5) == eth_encode(["int256"], [-5])


@settings(max_examples=300)
@given(st.lists(st.sampled_from(TYPES + DYNAMIC), max_size=5), st.data())
def test_an_event_log_is_its_topics_and_its_abi_data(types: list[str], data: st.DataObject) -> None:
    """Solidity's layout, computed independently: topic 0 the signature hash, an indexed string or
    bytes hashed, any other indexed value ABI-encoded, the rest ABI-encoded together as the data."""
    from chainshare.crypto.hashing import keccak256
    from chainshare.execution.runtime import event

    indexed = set(data.draw(st.permutations(range(len(types))))[:3])  # at most 3 indexed, as in Solidity
    spec = event("E(" + ", ".join(f"{t}{' indexed' if i in indexed else ''} p{i}" for i, t in enumerate(types)) + ")")
    values = [data.draw(_any_value(t)) for t in types]
    topics, log_data = spec.encode_log(values)
    expected_topics = [keccak256(("E(" + ",".join(types) + ")").encode())]
    for i, t in enumerate(types):
        if i in indexed:
            v = values[i]
            expected_topics.append(keccak256(v.encode() if isinstance(v, str) else v) if t in ("string", "bytes")
                                   else eth_encode([t], [v]))
    plain = [i for i in range(len(types)) if i not in indexed]
    assert topics == tuple(expected_topics)
    assert log_data == (eth_encode([types[i] for i in plain], [values[i] for i in plain]) if plain else b"")
    with pytest.raises(ValueError):
        spec.encode_log(values + [0])


def _decoded_or_error(decode: Any, raw: bytes) -> Any:
    try:
        return decode(raw)
    except DecodeError as exc:
        return DecodeError, exc.message


@settings(max_examples=400)
@given(st.lists(st.sampled_from(TYPES + DYNAMIC), max_size=4), st.data())
def test_a_compiled_decoder_equals_decode_values(types: list[str], data: st.DataObject) -> None:
    """Same values and same refusals (and messages) as decode_values, on valid and damaged data of every
    length around the static size."""
    values = [data.draw(_any_value(t)) for t in types]
    valid = eth_encode(types, values)
    raws = [valid, data.draw(st.binary(max_size=32 * len(types) + 40)),
            data.draw(st.binary(min_size=32 * len(types), max_size=32 * len(types)))]
    if valid:
        at = data.draw(st.integers(0, len(valid) - 1))
        raws += [valid[:at] + bytes([valid[at] ^ data.draw(st.integers(1, 255))]) + valid[at + 1:], valid[:-1],
                 valid + b"\x00"]
    decode = abi.compile_decoder(types)
    for raw in raws:
        assert _decoded_or_error(decode, raw) == _decoded_or_error(lambda r: abi.decode_values(types, r), raw)
