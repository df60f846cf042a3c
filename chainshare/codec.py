"""Canonical msgpack encoding: the one encoder for everything chainshare hashes or stores.

Allowed values: None, bool, int (-2**63 .. 2**64-1), bytes, str, lists/tuples of allowed values.
Floats and maps are refused: a map's key order and a float's rounding would make two honest
nodes hash the same value differently. Structured values are encoded as arrays in field order.
"""

from __future__ import annotations

from typing import Any

import msgpack

from chainshare.errors import DecodeError

MAX_DECODE_BYTES = 64 * 1024 * 1024


def _check(value: Any) -> None:
    if value is None or isinstance(value, (bool, bytes, str)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"integer {value} does not fit the canonical encoding (64 bits)")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check(item)
        return
    raise TypeError(f"type {type(value).__name__} is not canonically encodable")


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically; equal values always give equal bytes."""
    _check(value)
    return msgpack.packb(value, use_bin_type=True, strict_types=False)  # type: ignore[no-any-return]


def encode_trusted(value: Any) -> bytes:
    """Encode a value built by chainshare itself (already canonical); skips the type walk."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> Any:
    """Decode canonical bytes; any malformed, trailing or non-canonical input raises DecodeError."""
    if len(data) > MAX_DECODE_BYTES:
        raise DecodeError(f"encoded value of {len(data)} bytes exceeds {MAX_DECODE_BYTES}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    if isinstance(value, float) or _has_float(value):
        raise DecodeError("floats are not allowed in canonical encoding")
    return value


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False
