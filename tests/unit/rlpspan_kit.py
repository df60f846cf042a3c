"""The span RLP reader (``chainshare.ledger.rlpspan``) compared with the reference ``rlp`` package, shared by
``test_rlpspan.py`` and the fuzz harness ``tests/fuzz/fuzz_txs.py`` (which finds this directory on its path).
Raises AssertionError, naming the input in hex, where the two disagree."""

from __future__ import annotations

from typing import Any

import rlp

from chainshare.errors import DecodeError
from chainshare.ledger.rlpspan import encode_length, read_list, read_nth_item

MAX_NTH_CHECKED = 16  # read_nth_item is compared with read_list on items 0..16 (and one past the last)


def check_items(data: bytes, decoded: list[Any]) -> None:
    """``read_list`` of ``data`` (the RLP of ``decoded``) finds each item of ``decoded``, nested lists too."""
    spans, _, end = read_list(data)
    assert end == len(data) and len(spans) == len(decoded), data.hex()
    for (is_list, start, stop, item_end), child in zip(spans, decoded, strict=True):
        assert is_list == isinstance(child, list), data.hex()
        assert stop == item_end, data.hex()
        if is_list:
            assert rlp.encode(child).endswith(data[start:stop]), data.hex()
            assert rlp.decode(data[start - len(encode_length(stop - start, 0xC0)):stop]) == child, data.hex()
        else:
            assert data[start:stop] == child, data.hex()


def compare_with_reference(data: bytes) -> None:
    """``read_list`` reads every list the reference decodes strictly, alike (``check_items``); a flat list it
    accepts, the reference accepts too; and ``read_nth_item`` finds what ``read_list`` does, or refuses
    exactly past the last item."""
    try:
        reference = rlp.decode(data, strict=True)
    except rlp.exceptions.DecodingError:
        reference = None
    try:
        spans, _, _ = read_list(data)
    except DecodeError:
        spans = None
    if isinstance(reference, list):
        assert spans is not None, f"rlp decodes a list read_list refuses: {data.hex()}"
        check_items(data, reference)
    elif spans is not None and not any(s[0] for s in spans):
        raise AssertionError(f"read_list accepts a flat list rlp refuses: {data.hex()}")
    if spans is not None:
        for n in range(min(len(spans), MAX_NTH_CHECKED) + 1):
            try:
                nth = read_nth_item(data, 0, n)
            except DecodeError:
                assert n == len(spans), f"read_nth_item refuses item {n} of {data.hex()}"
                continue
            assert n < len(spans) and nth == spans[n][:3], f"read_nth_item {n} of {data.hex()}"
