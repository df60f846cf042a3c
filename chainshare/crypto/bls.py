"""BLS12-381 signatures (blspy, proof-of-possession scheme) for proposals, votes and certificates."""

from __future__ import annotations

from collections.abc import Sequence

from blspy import G1Element, G2Element, PopSchemeMPL, PrivateKey

from chainshare.errors import CryptoError

PUBLIC_KEY_SIZE = 48
SIGNATURE_SIZE = 96
SECRET_KEY_SIZE = 32


def generate_secret_key(seed: bytes) -> bytes:
    """Derive a BLS secret key from >= 32 bytes of seed (EIP-2333 key_gen)."""
    if len(seed) < 32:
        raise CryptoError("BLS key seed must be at least 32 bytes")
    return bytes(PopSchemeMPL.key_gen(seed))


def public_key(secret_key: bytes) -> bytes:
    return bytes(_secret(secret_key).get_g1())


def sign(secret_key: bytes, message: bytes) -> bytes:
    return bytes(PopSchemeMPL.sign(_secret(secret_key), message))


def prove_possession(secret_key: bytes) -> bytes:
    """Proof of possession of ``secret_key``: guards aggregate verification against rogue keys."""
    return bytes(PopSchemeMPL.pop_prove(_secret(secret_key)))


def verify_possession(pk: bytes, proof: bytes) -> bool:
    try:
        return bool(PopSchemeMPL.pop_verify(_g1(pk), _g2(proof)))
    except CryptoError:
        return False


def verify(pk: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is ``pk``'s signature of ``message``; malformed input is False."""
    try:
        return bool(PopSchemeMPL.verify(_g1(pk), message, _g2(signature)))
    except CryptoError:
        return False


def aggregate(signatures: Sequence[bytes]) -> bytes:
    if not signatures:
        raise CryptoError("cannot aggregate zero signatures")
    return bytes(PopSchemeMPL.aggregate([_g2(s) for s in signatures]))


def verify_aggregate_same_message(pks: Sequence[bytes], message: bytes, signature: bytes) -> bool:
    """Verify one aggregate signature by ``pks`` (each with a verified PoP) over one message."""
    if not pks:
        return False
    try:
        return bool(PopSchemeMPL.fast_aggregate_verify([_g1(p) for p in pks], message, _g2(signature)))
    except CryptoError:
        return False


def _secret(secret_key: bytes) -> PrivateKey:
    if len(secret_key) != SECRET_KEY_SIZE:
        raise CryptoError(f"BLS secret key must be {SECRET_KEY_SIZE} bytes")
    try:
        return PrivateKey.from_bytes(secret_key)
    except Exception as exc:
        raise CryptoError(f"invalid BLS secret key: {exc}") from exc


def _g1(pk: bytes) -> G1Element:
    if len(pk) != PUBLIC_KEY_SIZE:
        raise CryptoError(f"BLS public key must be {PUBLIC_KEY_SIZE} bytes")
    try:
        return G1Element.from_bytes(pk)
    except Exception as exc:
        raise CryptoError(f"invalid BLS public key: {exc}") from exc


def _g2(sig: bytes) -> G2Element:
    if len(sig) != SIGNATURE_SIZE:
        raise CryptoError(f"BLS signature must be {SIGNATURE_SIZE} bytes")
    try:
        return G2Element.from_bytes(sig)
    except Exception as exc:
        raise CryptoError(f"invalid BLS signature: {exc}") from exc
