"""A strict, allocation-light RLP reader for the transaction hot path.

Profiling showed the generic ``rlp`` package spending ~60 us per transaction on decoding and
re-encoding the signing payload. Ethereum's signing payloads are contiguous byte ranges of the
raw encoding, so reading item *spans* lets the node hash them without re-encoding. The reader
enforces canonical RLP (shortest length forms, no single byte < 0x80 wrapped) and raises
``DecodeError`` on anything else; tests check it against ``rlp`` on valid and random input.
"""

from __future__ import annotations

from chainshare.errors import DecodeError


def _length(data: bytes, pos: int, n: int) -> int:
    if pos + n > len(data):
        raise DecodeError("RLP length prefix runs past the end of the input")
    if data[pos] == 0:
        raise DecodeError("RLP length has leading zero bytes (non-canonical)")
    # one length byte (an item of 56-255 bytes: a transaction's list, its data): read as it is
    length = data[pos] if n == 1 else int.from_bytes(data[pos:pos + n], "big")
    if length < 56:
        raise DecodeError("RLP long form used for a short item (non-canonical)")
    return length


def read_item(data: bytes, pos: int) -> tuple[bool, int, int]:
    """Read the item at ``pos``: (is_list, payload start, payload end)."""
    size = len(data)
    if pos >= size:
        raise DecodeError("RLP item expected, input ended")
    b = data[pos]
    if b < 0x80:
        return False, pos, pos + 1
    if b < 0xB8:
        start, end = pos + 1, pos + 1 + b - 0x80
        if b == 0x81 and end <= size and data[start] < 0x80:
            raise DecodeError("RLP single byte below 0x80 must not be length-prefixed (non-canonical)")
        is_list = False
    elif b < 0xC0:
        n = b - 0xB7
        start = pos + 1 + n
        end = start + _length(data, pos + 1, n)
        is_list = False
    elif b < 0xF8:
        start, end = pos + 1, pos + 1 + b - 0xC0
        is_list = True
    else:
        n = b - 0xF7
        start = pos + 1 + n
        end = start + _length(data, pos + 1, n)
        is_list = True
    if end > size:
        raise DecodeError("RLP item runs past the end of the input")
    return is_list, start, end


def read_list(data: bytes, pos: int = 0, whole: bool = True) -> tuple[list[tuple[bool, int, int, int]], int, int]:
    """Read a list at ``pos``: ([(is_list, payload start, payload end, item end)], payload start, list end).

    With ``whole`` the list must span the rest of ``data`` exactly.
    """
    is_list, start, end = read_item(data, pos)
    if not is_list:
        raise DecodeError("RLP list expected")
    if whole and end != len(data):
        raise DecodeError("trailing bytes after the RLP list")
    items: list[tuple[bool, int, int, int]] = []
    append = items.append
    p = start
    while p < end:
        b = data[p]
        if b < 0x80:  # the common items read inline (a single byte, a short string): as read_item reads them
            e = p + 1
            append((False, p, e, e))
        elif b < 0xB8:
            s = p + 1
            e = s + b - 0x80
            if e > end:
                raise DecodeError("RLP item runs past the end of the input" if e > len(data)
                                  else "RLP item runs past the end of its list")
            if b == 0x81 and data[s] < 0x80:
                raise DecodeError("RLP single byte below 0x80 must not be length-prefixed (non-canonical)")
            append((False, s, e, e))
        else:
            il, s, e = read_item(data, p)
            if e > end:
                raise DecodeError("RLP item runs past the end of its list")
            append((il, s, e, e))
        p = e
    return items, start, end


def read_nth_item(data: bytes, pos: int, n: int) -> tuple[bool, int, int]:
    """Read item ``n`` (from 0) of the list at ``pos`` without reading the items after it:
    (is_list, payload start, payload end)."""
    is_list, p, end = read_item(data, pos)
    if not is_list:
        raise DecodeError("RLP list expected")
    for _ in range(n):
        if p >= end:
            break
        b = data[p]  # a single byte or a short string (0x81's canonical form aside) is stepped over inline
        p = p + 1 if b < 0x80 else p + 1 + b - 0x80 if b < 0xB8 and b != 0x81 else read_item(data, p)[2]
    if p >= end:
        raise DecodeError(f"RLP list has fewer than {n + 1} items")
    item = read_item(data, p)
    if item[2] > end:
        raise DecodeError("RLP item runs past the end of its list")
    return item


def encode_length(length: int, offset: int) -> bytes:
    """An RLP length prefix (offset 0x80 for strings, 0xC0 for lists)."""
    if length < 56:
        return bytes([offset + length])
    lb = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(lb)]) + lb


def encode_uint(value: int) -> bytes:
    if value == 0:
        return b"\x80"
    b = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return b if len(b) == 1 and b[0] < 0x80 else encode_length(len(b), 0x80) + b
