"""Fuzz the canonical msgpack codec: ``decode`` (bytes from peers and users) and ``decode_stored``.

Contract (codec docstrings): any input decodes or raises ``DecodeError``, nothing else; what
``decode`` accepts is canonical (re-encoding gives the same bytes, and ``encode`` accepts the
value) and ``decode_stored`` reads it alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare"]):
    from chainshare import codec
    from chainshare.errors import DecodeError


def seeds() -> Iterable[bytes]:
    yield codec.encode(None)
    yield codec.encode([1, -1, 2**64 - 1, -(2**63), True, b"\x00" * 40, "text", []])
    yield codec.encode([[[b"x"]], ["a" * 40, 2**32, 300, -200]])
    yield codec.encode(["consensus", [1, [b"\x11" * 32, 5, 6, b"\x01", b"\x22" * 96]]])


def check(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except DecodeError:
        value = DecodeError
    try:
        stored = codec.decode_stored(data)
    except DecodeError:
        stored = DecodeError
    if value is DecodeError:
        return
    assert codec.encode(value) == data, f"decode accepted a value that does not re-encode: {data.hex()}"
    assert stored == value, f"decode_stored reads {data.hex()} differently"


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
