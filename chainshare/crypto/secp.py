"""secp256k1 accounts: signing, sender recovery (coincurve) and Ethereum addresses."""

from __future__ import annotations

import coincurve

from chainshare.crypto.hashing import keccak256
from chainshare.errors import CryptoError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


def address_of_public_key(public_key: coincurve.PublicKey) -> bytes:
    """The 20-byte Ethereum address of a public key."""
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def address_of_private_key(private_key: bytes) -> bytes:
    return address_of_public_key(coincurve.PrivateKey(private_key).public_key)


def sign_hash(private_key: bytes, msg_hash: bytes) -> tuple[int, int, int]:
    """Sign a 32-byte hash; returns (y_parity, r, s) with low s (EIP-2)."""
    sig = coincurve.PrivateKey(private_key).sign_recoverable(msg_hash, hasher=None)
    r = int.from_bytes(sig[0:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    return sig[64], r, s


def recover_address(msg_hash: bytes, y_parity: int, r: int, s: int) -> bytes:
    """Recover the signer's address; refuses out-of-range or high-s signatures."""
    if y_parity not in (0, 1):
        raise CryptoError(f"signature recovery id must be 0 or 1, got {y_parity}")
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N):
        raise CryptoError("signature r/s out of range (high-s signatures are refused, EIP-2)")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([y_parity])
    try:
        pub = coincurve.PublicKey.from_signature_and_message(sig, msg_hash, hasher=None)
    except Exception as exc:
        raise CryptoError(f"signature does not recover to a public key: {exc}") from exc
    return address_of_public_key(pub)


def to_checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex form of a 20-byte address."""
    hex_addr = address.hex()
    digest = keccak256(hex_addr.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_addr))
