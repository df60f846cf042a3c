"""Canonical msgpack encoding: the one encoder for everything chainshare hashes or stores.

Allowed values: None, bool, int (-2**63 .. 2**64-1), bytes, str, lists/tuples of allowed values.
Floats and maps are refused: a map's key order and a float's rounding would make two honest
nodes hash the same value differently. Structured values are encoded as arrays in field order.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
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


def encode_array_of_encoded(items: Sequence[bytes]) -> bytes:
    """The encoding of a list whose items are already encoded (by ``encode``/``encode_trusted``): equal to
    encoding the list of the items' values, without encoding them again (msgpack: an array header, then the
    items' encodings one after another)."""
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


MAX_DEPTH = 64


def _refuse_map(_: Any) -> Any:
    raise DecodeError("maps are not allowed in canonical encoding")


def _refuse_ext(code: int, _: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed in canonical encoding")


def decode(data: bytes) -> Any:
    """Decode canonical bytes; malformed, trailing or non-canonical input (maps, ext types,
    floats, over-long forms, nesting deeper than ``MAX_DEPTH``) raises DecodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("encoded value must be bytes")
    if len(data) > MAX_DECODE_BYTES:
        raise DecodeError(f"encoded value of {len(data)} bytes exceeds {MAX_DECODE_BYTES}")
    try:
        value = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True,
            object_pairs_hook=_refuse_map, ext_hook=_refuse_ext,
        )
    except (DecodeError, MemoryError):
        raise  # out of memory is this node's failure, not the input's
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    _check_decoded(value)
    try:
        canonical = msgpack.packb(value, use_bin_type=True)
    except Exception as exc:
        raise DecodeError(f"value cannot be re-encoded canonically: {exc}") from exc
    if canonical != bytes(data):
        raise DecodeError("non-canonical msgpack encoding (a shorter form exists)")
    return value


def decode_stored(data: bytes) -> Any:
    """Decode bytes this node wrote to its own ledger with ``encode``/``encode_trusted`` (blocks and receipts
    read back from the data directory; LevelDB's block checksums and zlib's adler32 guard them on disk).
    Maps and ext types are still refused (msgpack's own timestamp type aside: the typed decoders of
    ledger/types.py refuse it) and malformed input still raises DecodeError, but the canonical
    re-encoding check of ``decode`` (a second full pass, ~40% of reading a 200 KB block) is skipped: what
    comes from a peer or a user goes through ``decode``."""
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                               object_pairs_hook=_refuse_map, ext_hook=_refuse_ext)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"stored value is not msgpack: {exc}") from exc


def decode_stored_first(data: bytes) -> Any:
    """The first item of an array this node stored (as ``decode_stored`` gives it), without decoding the items
    after it: a stored block's header without its transactions. DecodeError if ``data`` does not start with a
    non-empty msgpack array."""
    # Read from a stream in small steps: only the bytes up to the end of the first item are copied and parsed.
    unpacker = msgpack.Unpacker(io.BytesIO(data), read_size=1024, raw=False, use_list=True, strict_map_key=True,
                                object_pairs_hook=_refuse_map, ext_hook=_refuse_ext, max_buffer_size=MAX_DECODE_BYTES)
    try:
        if unpacker.read_array_header() < 1:
            raise DecodeError("stored value is an empty array")
        return unpacker.unpack()
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"stored value is not a msgpack array: {exc}") from exc


_PLAIN = frozenset({bytes, str, int, bool, type(None)})  # exact types msgpack decodes to; always allowed


def _check_decoded(value: Any) -> None:
    """Iteratively refuse floats and too-deep nesting (no recursion: hostile input cannot
    exhaust the stack). Scalars of the plain types are never pushed (profiling: the walk cost
    ~7 us of a 10 us state read); the others are visited, and refused, in the same order."""
    if type(value) in _PLAIN:
        return
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if type(v) is list:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
            stack.extend((x, depth + 1) for x in v if type(x) not in _PLAIN)
            continue
        if isinstance(v, float):
            raise DecodeError("floats are not allowed in canonical encoding")
        if not isinstance(v, list | bytes | str | int | None):  # bool is an int; e.g. msgpack Timestamp
            raise DecodeError(f"type {type(v).__name__} is not allowed in canonical encoding")
        if isinstance(v, list):
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
            stack.extend((x, depth + 1) for x in v)
