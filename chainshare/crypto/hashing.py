"""keccak-256, the one hash of the ledger."""

from __future__ import annotations

from Crypto.Hash import keccak as _keccak

ZERO_HASH = b"\x00" * 32


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte Keccak-256 digest of ``data`` (Ethereum's hash, not SHA3-256)."""
    return _keccak.new(data=data, digest_bits=256).digest()


EMPTY_KECCAK = keccak256(b"")
