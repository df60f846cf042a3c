"""Ledger types: canonical encodings round-trip, the block hash is the header hash, and every decoder
refuses malformed input with DecodeError only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.errors import DecodeError
from chainshare.ledger.types import (
    EMPTY_BLOOM,
    Block,
    Header,
    Log,
    QuorumCertificate,
    Receipt,
    bloom_contains,
    compute_header_hash,
    compute_logs_bloom,
    make_bitmap,
)

HEADER = Header(b"\x01" * 32, 7, 9, 1_700_000_000_123, b"\x02" * 20, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32,
                EMPTY_BLOOM, b"\x06" * 32, 60_000_000, 45_000, b"\x07" * 32)
QC = QuorumCertificate(b"\x08" * 32, 6, 8, b"\x0d", b"\x09" * 96)
LOG = Log(b"\x0a" * 20, (b"\x0b" * 32, b"\x0c" * 32), b"data")
RECEIPT = Receipt(1, 50_000, 45_000, (LOG,), b"out")


def test_header_encoding_round_trips_and_hashes_to_the_block_hash() -> None:
    encoded = HEADER.encode()
    assert Header.from_list(codec.decode(encoded)) == HEADER
    assert HEADER.hash == compute_header_hash(HEADER) == keccak256(encoded)
    block = Block(HEADER, (b"tx1", b"tx2"), QC, None, b"sig")
    assert block.hash == HEADER.hash


@pytest.mark.parametrize("field", list(Header.__dataclass_fields__))
def test_every_header_field_is_committed_to_by_the_hash(field: str) -> None:
    value = getattr(HEADER, field)
    changed = value + 1 if isinstance(value, int) else bytes([value[0] ^ 1]) + value[1:]
    assert Header(**{**HEADER.__dict__, field: changed}).hash != HEADER.hash


def test_block_qc_receipt_and_log_round_trip() -> None:
    block = Block(HEADER, (b"tx1", b"tx2"), QC, b"tc", b"sig")
    decoded = Block.decode(block.encode())
    assert decoded == block and decoded.hash == block.hash
    assert Block.decode(Block(HEADER, (), None).encode()).justify is None
    assert QuorumCertificate.from_list(codec.decode(QC.encode())) == QC
    assert Receipt.from_list(codec.decode(RECEIPT.encode())) == RECEIPT
    assert Log.from_list(LOG.to_list()) == LOG


def test_bitmap_marks_exactly_the_signers() -> None:
    assert make_bitmap([0, 2, 3], 4) == b"\x0d"
    assert make_bitmap([8], 9) == b"\x00\x01"
    assert QuorumCertificate(b"\x00" * 32, 1, 1, make_bitmap([1, 9, 10], 11), b"\x00" * 96).signer_indices() == [1, 9, 10]


def test_logs_bloom_contains_addresses_and_topics_of_the_logs() -> None:
    bloom = compute_logs_bloom([LOG])
    assert bloom != EMPTY_BLOOM and len(bloom) == 256
    assert all(bloom_contains(bloom, x) for x in (LOG.address, *LOG.topics))
    assert compute_logs_bloom([]) == EMPTY_BLOOM
    assert not bloom_contains(EMPTY_BLOOM, LOG.address)


@pytest.mark.parametrize("mutate", [
    lambda f: f.__setitem__(0, b"\x01" * 31),  # parent hash length
    lambda f: f.__setitem__(1, -1),  # negative height
    lambda f: f.__setitem__(1, True),  # bool is not an integer here
    lambda f: f.__setitem__(4, b"\x02" * 21),  # proposer length
    lambda f: f.__setitem__(8, b"\x00" * 255),  # bloom length
    lambda f: f.__setitem__(10, "60000000"),  # gas limit type
    lambda f: f.pop(),  # 12 fields
    lambda f: f.append(b""),  # 14 fields
], ids=["parent-hash", "negative-height", "bool-height", "proposer", "bloom", "gas-limit-type", "short", "long"])
def test_malformed_headers_are_decode_errors(mutate: Any) -> None:
    fields = HEADER.to_list()
    mutate(fields)
    with pytest.raises(DecodeError):
        Header.from_list(fields)


def test_log_with_more_than_four_topics_is_refused() -> None:
    with pytest.raises(DecodeError, match="at most 4"):
        Log.from_list([b"\x0a" * 20, [b"\x00" * 32] * 5, b""])


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40), st.text(max_size=5)),
    lambda inner: st.lists(inner, max_size=14), max_leaves=40)

DECODERS = [Header.from_list, Block.from_list, QuorumCertificate.from_list, Receipt.from_list, Log.from_list]


@given(values)
def test_decoders_refuse_arbitrary_values_with_decode_error_only(value: Any) -> None:
    for decode in DECODERS:
        try:
            decode(value)
        except DecodeError:
            pass


@given(st.binary(max_size=400))
def test_block_decoding_of_random_bytes_fails_only_with_decode_error(data: bytes) -> None:
    try:
        Block.decode(data)
    except DecodeError:
        pass


@given(st.data())
def test_mutated_block_encodings_fail_only_with_decode_error(data: st.DataObject) -> None:
    encoded = bytearray(Block(HEADER, (b"tx1",), QC, None, b"sig").encode())
    pos = data.draw(st.integers(0, len(encoded) - 1))
    encoded[pos] = data.draw(st.integers(0, 255))
    try:
        Block.decode(bytes(encoded))
    except DecodeError:
        pass


def _textbook_bloom(logs: list[Log]) -> bytes:
    """Yellow paper M3:2048, written out: for each address and topic, bits from the first three byte pairs
    of its keccak."""
    bloom = 0
    for lg in logs:
        for item in (lg.address, *lg.topics):
            h = keccak256(item)
            for i in (0, 2, 4):
                bloom |= 1 << (int.from_bytes(h[i:i + 2], "big") % 2048)
    return bloom.to_bytes(256, "big")


@given(st.lists(st.builds(Log, st.binary(min_size=20, max_size=20),
                          st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple), st.binary(max_size=8)),
                max_size=6))
def test_logs_bloom_is_the_textbook_bloom_whatever_the_cache_holds(logs: list[Log]) -> None:
    assert compute_logs_bloom(logs) == _textbook_bloom(logs)
    assert compute_logs_bloom(logs + logs) == _textbook_bloom(logs)  # repeated items (cached) change nothing
    assert all(bloom_contains(_textbook_bloom(logs), item) for lg in logs for item in (lg.address, *lg.topics))


@given(st.integers(0, 2**64 - 1), st.lists(st.binary(max_size=200), max_size=20))
def test_a_stored_blocks_height_is_read_from_its_header_alone(height: int, txs: list[bytes]) -> None:
    block = Block(Header(**{**HEADER.__dict__, "height": height}), tuple(txs), QC, None, b"sig")
    assert Block.read_stored_height(block.encode()) == height == Block.decode(block.encode()).height


@given(st.binary(max_size=400))
def test_reading_a_height_from_random_bytes_fails_only_with_decode_error(data: bytes) -> None:
    try:
        Block.read_stored_height(data)
    except DecodeError:
        pass


@pytest.mark.parametrize("data", [b"", b"\x90", b"\x81\x01\x02", b"\x95\xc0", b"\x95\x93\x01\x02\x03",
                                  codec.encode([[1] * 13, [], None, None, b""])],
                         ids=["empty", "empty-array", "map", "no-header", "short-header", "bad-fields"])
def test_a_stored_value_without_a_header_has_no_height(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Block.read_stored_height(data)
