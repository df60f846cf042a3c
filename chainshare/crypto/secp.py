"""secp256k1 accounts: signing, sender recovery (coincurve) and Ethereum addresses."""

from __future__ import annotations

import threading

import coincurve
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT

from chainshare.crypto.hashing import keccak256
from chainshare.errors import CryptoError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


def address_of_public_key(public_key: coincurve.PublicKey) -> bytes:
    """The 20-byte Ethereum address of a public key."""
    return address_of_uncompressed_key(public_key.format(compressed=False))


def address_of_uncompressed_key(key: bytes) -> bytes:
    """The 20-byte Ethereum address of a 65-byte uncompressed public key (0x04 || x || y)."""
    return keccak256(key[1:])[12:]


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
    return address_of_uncompressed_key(_recover_uncompressed_key(r.to_bytes(32, "big") + s.to_bytes(32, "big"),
                                                                 y_parity, msg_hash))


# Sender recovery runs once per transaction per node (four times a transaction on four validators), so
# it calls coincurve's own libsecp256k1 binding (cffi, the pinned coincurve release) with the C types
# resolved once, instead of ``PublicKey.from_signature_and_message(...).format()``, which parses type
# strings and builds two wrapper objects per call: ~15 k fewer instructions a recovery (~3%), the same
# three library calls. A coincurve release that moved these names fails at import, not silently.
_CTX = GLOBAL_CONTEXT.ctx
_RECOVERABLE_SIG = _ffi.typeof("secp256k1_ecdsa_recoverable_signature *")
_PUBKEY = _ffi.typeof("secp256k1_pubkey *")
_UNCOMPRESSED = _ffi.typeof("unsigned char[65]")
_SIZE = _ffi.typeof("size_t *")
_EC_UNCOMPRESSED = _lib.SECP256K1_EC_UNCOMPRESSED


class _Scratch(threading.local):
    """One thread's C buffers for a recovery, allocated once per thread instead of four ``ffi.new`` a
    recovery (~6 k instructions). Per thread: the library calls release the GIL, so two threads recovering
    at once must not share them; within a thread a recovery never re-enters another."""

    def __init__(self) -> None:
        self.sig = _ffi.new(_RECOVERABLE_SIG)
        self.pub = _ffi.new(_PUBKEY)
        self.out = _ffi.new(_UNCOMPRESSED)
        self.out_bytes = _ffi.buffer(self.out)
        self.size = _ffi.new(_SIZE)


_SCRATCH = _Scratch()


def _recover_uncompressed_key(sig64: bytes, recovery_id: int, msg_hash: bytes) -> bytes:
    """The 65-byte uncompressed public key that signed ``msg_hash``; CryptoError if none does."""
    if len(msg_hash) != 32:
        raise CryptoError(f"message hash must be 32 bytes, got {len(msg_hash)}")
    scratch = _SCRATCH
    sig, pub, size = scratch.sig, scratch.pub, scratch.size
    if not _lib.secp256k1_ecdsa_recoverable_signature_parse_compact(_CTX, sig, sig64, recovery_id):
        raise CryptoError("signature does not recover to a public key: the signature cannot be parsed")
    if not _lib.secp256k1_ecdsa_recover(_CTX, pub, sig, msg_hash):
        raise CryptoError("signature does not recover to a public key")
    size[0] = 65
    _lib.secp256k1_ec_pubkey_serialize(_CTX, scratch.out, size, pub, _EC_UNCOMPRESSED)
    key: bytes = scratch.out_bytes[:]
    return key


def to_checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex form of a 20-byte address."""
    hex_addr = address.hex()
    digest = keccak256(hex_addr.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_addr))
