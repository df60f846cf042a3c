"""keccak-256, the one hash of the ledger (safe-pysha3's C Keccak: ~7x faster than pycryptodome's)."""

from __future__ import annotations

from collections.abc import Iterable

from sha3 import keccak_256

ZERO_HASH = b"\x00" * 32


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte Keccak-256 digest of ``data`` (Ethereum's hash, not SHA3-256)."""
    return keccak_256(data).digest()  # type: ignore[no-any-return]


def keccak256_each(items: Iterable[bytes]) -> list[bytes]:
    """The keccak-256 digest of each item, in order (a whole Merkle level in one call)."""
    return [keccak_256(x).digest() for x in items]


EMPTY_KECCAK = keccak256(b"")
