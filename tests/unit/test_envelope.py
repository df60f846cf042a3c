"""Envelope encryption: streaming AES-256-GCM (STREAM nonces), ECIES key wrapping, the sealed vault key."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from chainshare.crypto.ca import NodeIdentity, init_ca, issue_node
from chainshare.crypto.envelope import (
    HEADER_LEN,
    TAG_LEN,
    EnvelopeHeader,
    StreamDecryptor,
    StreamEncryptor,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    iter_decrypt,
    iter_decrypt_pieces,
    iter_encrypt,
    new_key,
    open_vault_key,
    seal_vault_key,
    unwrap_key,
    wrap_key,
    write_chunks,
)
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, CryptoError, InvalidInput

CHUNK = 1024
KEY = bytes(range(32))
AAD = b"dataset:42"
NODE_PASSWORD = "node password"


def _seal(data: bytes, key: bytes = KEY, aad: bytes = AAD, chunk_size: int = CHUNK) -> bytes:
    dst = io.BytesIO()
    encrypt_stream(io.BytesIO(data), dst, key, aad, chunk_size=chunk_size)
    return dst.getvalue()


def _chunks(envelope: bytes, chunk_size: int = CHUNK) -> tuple[bytes, list[bytes]]:
    body = envelope[HEADER_LEN:]
    full = chunk_size + TAG_LEN
    return envelope[:HEADER_LEN], [body[i : i + full] for i in range(0, len(body), full)]


def _released(envelope: bytes, key: bytes = KEY, aad: bytes = AAD) -> tuple[bytes, Exception | None]:
    """The plaintext released before decryption stopped, and the error that stopped it."""
    released = bytearray()
    try:
        for chunk in iter_decrypt(io.BytesIO(envelope), key, aad):
            released += chunk
    except ChainshareError as exc:
        return bytes(released), exc
    return bytes(released), None


# --------------------------------------------------------------------------- streaming AEAD


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5])
def test_stream_round_trip_returns_size_and_keccak_of_plaintext(size: int) -> None:
    data = os.urandom(size)
    dst = io.BytesIO()
    n, digest = encrypt_stream(io.BytesIO(data), dst, KEY, AAD, chunk_size=CHUNK)
    envelope = dst.getvalue()
    assert (n, digest) == (size, keccak256(data))
    assert len(envelope) == ciphertext_size(size, CHUNK)
    out = io.BytesIO()
    assert decrypt_stream(io.BytesIO(envelope), out, KEY, AAD) == (size, keccak256(data))
    assert out.getvalue() == data


def test_every_chunk_but_the_last_is_full_and_the_last_is_short() -> None:
    _header, chunks = _chunks(_seal(os.urandom(2 * CHUNK)))
    assert [len(c) for c in chunks] == [CHUNK + TAG_LEN, CHUNK + TAG_LEN, TAG_LEN]


def test_header_layout_is_versioned_and_authenticated() -> None:
    envelope = _seal(b"hello")
    header = EnvelopeHeader.from_bytes(envelope[:HEADER_LEN])
    assert envelope[:4] == b"CSAE" and envelope[4] == 1 and envelope[5] == 1
    assert header.chunk_size == CHUNK and len(header.nonce_prefix) == 7
    for offset in range(HEADER_LEN):
        tampered = bytearray(envelope)
        tampered[offset] ^= 0x01
        with pytest.raises(CryptoError):
            decrypt_stream(io.BytesIO(bytes(tampered)), io.BytesIO(), KEY, AAD)


def test_unsupported_version_is_refused_with_a_clear_message() -> None:
    envelope = bytearray(_seal(b"x"))
    envelope[4] = 2
    with pytest.raises(CryptoError, match="unsupported envelope version 2"):
        decrypt_stream(io.BytesIO(bytes(envelope)), io.BytesIO(), KEY, AAD)


def test_iter_encrypt_rechunks_pieces_of_any_size() -> None:
    data = os.urandom(5 * CHUNK + 77)
    cuts = [0, 1, 3, 1500, 1501, 4096, 5000, len(data)]
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    envelope = b"".join(iter_encrypt(pieces, KEY, AAD, chunk_size=CHUNK))
    assert len(envelope) == ciphertext_size(len(data), CHUNK)
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(envelope), out, KEY, AAD)
    assert out.getvalue() == data


@pytest.mark.parametrize("victim", [0, 1, 2, 3])
def test_flipped_byte_fails_that_chunk_and_releases_nothing_of_it(victim: int) -> None:
    data = os.urandom(3 * CHUNK + 100)
    header, chunks = _chunks(_seal(data))
    tampered = bytearray(chunks[victim])
    tampered[len(tampered) // 2] ^= 0x80
    chunks[victim] = bytes(tampered)
    released, error = _released(header + b"".join(chunks))
    assert isinstance(error, CryptoError)
    assert f"chunk {victim}" in str(error)
    # Earlier chunks were released (the caller must discard them); none of the failing one.
    assert released == data[: victim * CHUNK]


def test_flipped_tag_byte_is_detected() -> None:
    envelope = bytearray(_seal(os.urandom(100)))
    envelope[-1] ^= 0x01
    assert isinstance(_released(bytes(envelope))[1], CryptoError)


def test_swapped_chunks_are_detected_before_any_plaintext() -> None:
    header, chunks = _chunks(_seal(os.urandom(3 * CHUNK + 1)))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    released, error = _released(header + b"".join(chunks))
    assert isinstance(error, CryptoError) and released == b""


def test_dropped_or_duplicated_middle_chunk_is_detected() -> None:
    header, chunks = _chunks(_seal(os.urandom(3 * CHUNK + 1)))
    assert isinstance(_released(header + b"".join([chunks[0], *chunks[2:]]))[1], CryptoError)
    assert isinstance(_released(header + b"".join([chunks[0], chunks[0], *chunks[1:]]))[1], CryptoError)


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 10])
def test_truncation_at_a_chunk_boundary_or_mid_chunk_is_detected(size: int) -> None:
    data = os.urandom(size)
    envelope = _seal(data)
    header, chunks = _chunks(envelope)
    # Drop the final chunk: everything left authenticates, but the end is missing.
    released, error = _released(header + b"".join(chunks[:-1]))
    assert isinstance(error, CryptoError) and "truncated" in str(error)
    assert released == data[: 2 * CHUNK]
    for cut in (len(envelope) - 1, len(envelope) - TAG_LEN - 1, HEADER_LEN + 5, HEADER_LEN, 3, 0):
        assert isinstance(_released(envelope[:cut])[1], CryptoError), cut


def test_trailing_data_after_the_final_chunk_is_detected() -> None:
    envelope = _seal(b"short")
    for extra in (b"\x00", os.urandom(CHUNK + TAG_LEN), envelope):
        with pytest.raises(CryptoError):
            decrypt_stream(io.BytesIO(envelope + extra), io.BytesIO(), KEY, AAD)


def test_chunk_spliced_from_another_envelope_under_the_same_key_is_detected() -> None:
    data = os.urandom(2 * CHUNK + 3)
    header_a, chunks_a = _chunks(_seal(data))
    _header_b, chunks_b = _chunks(_seal(data))
    released, error = _released(header_a + chunks_a[0] + chunks_b[1] + chunks_a[2])
    assert isinstance(error, CryptoError) and released == data[:CHUNK]


def test_wrong_key_or_wrong_aad_fails() -> None:
    envelope = _seal(b"secret rows")
    assert isinstance(_released(envelope, key=new_key())[1], CryptoError)
    assert isinstance(_released(envelope, aad=b"dataset:43")[1], CryptoError)
    assert _released(envelope) == (b"secret rows", None)


def test_encryptor_enforces_the_chunk_discipline() -> None:
    encryptor = StreamEncryptor(KEY, chunk_size=CHUNK)
    with pytest.raises(InvalidInput):
        encryptor.encrypt_chunk(b"x" * 10, last=False)
    with pytest.raises(InvalidInput):
        encryptor.encrypt_chunk(b"x" * CHUNK, last=True)
    final = encryptor.encrypt_chunk(b"end", last=True)
    with pytest.raises(CryptoError):
        encryptor.encrypt_chunk(b"", last=True)
    decryptor = StreamDecryptor(KEY, encryptor.header)
    assert decryptor.decrypt_chunk(final, last=True) == b"end"
    with pytest.raises(CryptoError, match="after its final chunk"):
        decryptor.decrypt_chunk(final, last=True)


def test_bad_keys_and_chunk_sizes_are_refused() -> None:
    with pytest.raises(CryptoError):
        StreamEncryptor(b"short")
    with pytest.raises(InvalidInput):
        StreamEncryptor(KEY, chunk_size=16)


@pytest.mark.parametrize("frame", [1, 7, HEADER_LEN, CHUNK + TAG_LEN, 5000])
def test_pieces_of_any_framing_decrypt_like_the_stream(frame: int) -> None:
    data = os.urandom(4 * CHUNK + 9)
    envelope = _seal(data)
    frames = [envelope[i : i + frame] for i in range(0, len(envelope), frame)]
    assert b"".join(iter_decrypt_pieces(frames, KEY, AAD)) == data
    header, chunks = _chunks(envelope)
    # Frames that are exactly the chunks (what export_for yields) take the no-copy path.
    assert b"".join(iter_decrypt_pieces([header, *chunks], KEY, AAD)) == data
    with pytest.raises(CryptoError, match="truncated"):
        list(iter_decrypt_pieces([header, *chunks[:-1]], KEY, AAD))
    with pytest.raises(CryptoError, match="header"):
        list(iter_decrypt_pieces([envelope[:5]], KEY, AAD))


def test_write_chunks_hashes_and_writes_many_chunks_in_order() -> None:
    data = os.urandom(40 * CHUNK + 3)
    out = io.BytesIO()
    size, digest = write_chunks(iter_decrypt_pieces([_seal(data)], KEY, AAD), out)
    assert (size, digest, out.getvalue()) == (len(data), keccak256(data), data)


def test_a_failing_write_surfaces_in_the_caller() -> None:
    class Full:
        def __init__(self) -> None:
            self.calls = 0

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls > 3:
                raise OSError(28, "No space left on device")
            return len(data)

    with pytest.raises(OSError, match="No space"):
        encrypt_stream(io.BytesIO(os.urandom(20 * CHUNK)), Full(), KEY, chunk_size=CHUNK)


@given(st.binary(max_size=300))
def test_decrypting_random_bytes_raises_only_crypto_error(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        decrypt_stream(io.BytesIO(blob), io.BytesIO(), KEY, AAD)


# --------------------------------------------------------------------------- key wrapping


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeIdentity]:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca", password=None)
    return {
        "owner": issue_node(root / "ca", None, "Owner Agency", "owner-1", root / "owner", key_password=None),
        "requester": issue_node(
            root / "ca", None, "Requester Agency", "req-1", root / "req", key_password=NODE_PASSWORD, kdf_light=True
        ),
    }


def _key_pem(node: NodeIdentity) -> bytes:
    return (Path(node.directory) / "node.key").read_bytes()


def test_wrap_to_a_node_certificate_unwraps_with_its_node_key(pki: dict[str, NodeIdentity]) -> None:
    owner = pki["owner"]
    data_key = new_key()
    wrapped = wrap_key(owner.cert_pem, data_key, b"grant:7|purpose:audit")
    assert len(wrapped) == 1 + 65 + 12 + 32 + 16
    assert unwrap_key(_key_pem(owner), wrapped, b"grant:7|purpose:audit") == data_key
    # Two wraps of the same key differ (fresh ephemeral key and nonce).
    assert wrap_key(owner.cert_pem, data_key, b"grant:7|purpose:audit") != wrapped


def test_wrap_accepts_a_public_key_pem_and_an_encrypted_node_key(pki: dict[str, NodeIdentity]) -> None:
    requester = pki["requester"]
    key_pem = _key_pem(requester)
    private = serialization.load_pem_private_key(key_pem, NODE_PASSWORD.encode())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrapped = wrap_key(public_pem, KEY, b"ctx")
    assert unwrap_key(key_pem, wrapped, b"ctx", password=NODE_PASSWORD) == KEY
    with pytest.raises(CryptoError, match="password"):
        unwrap_key(key_pem, wrapped, b"ctx", password="wrong")


def test_unwrap_with_wrong_context_or_wrong_recipient_fails(pki: dict[str, NodeIdentity]) -> None:
    wrapped = wrap_key(pki["owner"].cert_pem, KEY, b"grant:1")
    with pytest.raises(CryptoError, match="another context"):
        unwrap_key(_key_pem(pki["owner"]), wrapped, b"grant:2")
    with pytest.raises(CryptoError):
        unwrap_key(_key_pem(pki["requester"]), wrapped, b"grant:1", password=NODE_PASSWORD)


def test_any_altered_byte_of_a_wrapped_key_fails(pki: dict[str, NodeIdentity]) -> None:
    wrapped = wrap_key(pki["owner"].cert_pem, KEY, b"ctx")
    owner_key = _key_pem(pki["owner"])
    for offset in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[offset] ^= 0x04
        with pytest.raises(CryptoError):
            unwrap_key(owner_key, bytes(tampered), b"ctx")
    with pytest.raises(CryptoError):
        unwrap_key(owner_key, wrapped[:-1], b"ctx")


def test_non_p256_keys_are_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CryptoError, match="P-256"):
        wrap_key(other.public_key(), KEY, b"ctx")
    with pytest.raises(CryptoError, match="P-256"):
        unwrap_key(other, b"\x01" + b"\x00" * 125, b"ctx")
    with pytest.raises(CryptoError):
        wrap_key(b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n", KEY, b"ctx")


@given(st.binary(max_size=200))
def test_unwrapping_random_bytes_raises_only_crypto_error(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        unwrap_key(_RANDOM_RECIPIENT, blob, b"ctx")


_RANDOM_RECIPIENT = ec.generate_private_key(ec.SECP256R1())


def test_vault_key_is_sealed_to_the_node_key(pki: dict[str, NodeIdentity]) -> None:
    vault_key = new_key()
    sealed = seal_vault_key(pki["owner"].cert_pem, vault_key)
    assert open_vault_key(_key_pem(pki["owner"]), sealed) == vault_key
    with pytest.raises(CryptoError):
        open_vault_key(_key_pem(pki["requester"]), sealed, password=NODE_PASSWORD)
    # The vault-key context is distinct from any delivery context.
    with pytest.raises(CryptoError):
        unwrap_key(_key_pem(pki["owner"]), sealed, b"")
