"""Envelope encryption: streaming AES-256-GCM for files, ECIES key wrapping to P-256 node keys,
and the sealed vault key.

Streaming format (version 1), one file or one delivery::

    header (17 bytes, authenticated as AAD of every chunk)
      0  magic        b"CSAE"
      4  version      0x01
      5  suite        0x01  (AES-256-GCM, STREAM nonces)
      6  chunk_size   uint32 big-endian, plaintext bytes per full chunk (256 .. 16 MiB)
     10  nonce_prefix 7 random bytes
    chunk 0, 1, ..., n-1   each AES-256-GCM(plaintext) || 16-byte tag
      nonce(i) = nonce_prefix || uint32_be(i) || last-flag (0x00, or 0x01 for the final chunk)
      AAD      = header || caller's aad (the header is fixed-length, so the split is unambiguous)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last one holds fewer
(possibly zero), so a reader knows the final chunk by its length, without look-ahead, and a file
whose size is a multiple of ``chunk_size`` ends with an empty final chunk (16 bytes of tag).
Because the counter and the last-flag are in the nonce (Hoang, Reyhanitabar, Rogaway, Vizár:
"Online authenticated-encryption and its nonce-reuse misuse-resistance", the STREAM construction),
reordered, swapped, dropped or duplicated chunks, a truncated stream and trailing bytes all fail
authentication. Each chunk is verified before any of its plaintext is released; chunks before a
failing one have been released already, so a caller that writes plaintext as it streams must
discard that output when a ``CryptoError`` is raised (``decrypt_file`` in the vault does so).

Key wrapping (ECIES, version 1)::

    0x01 || ephemeral P-256 public key (65 bytes, uncompressed SEC1) || nonce (12) || AES-256-GCM(key) || tag (16)
    wrapping key = HKDF-SHA256(ECDH(ephemeral, recipient), salt = empty,
                               info = "chainshare/ecies/v1" || epk || recipient pk || uint32_be(len ctx) || ctx)
    AAD = 0x01 || epk

The ``context`` (e.g. grant id and purpose) is bound into the key derivation, so a wrapped key
replayed under another grant does not open.
"""

from __future__ import annotations

import functools
import os
import queue
import struct
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from Crypto.Hash import keccak
from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chainshare.errors import CryptoError, InvalidInput

KEY_LEN = 32
TAG_LEN = 16
NONCE_PREFIX_LEN = 7
MAGIC = b"CSAE"
VERSION = 1
SUITE_AES256GCM_STREAM = 1
HEADER_LEN = 17
CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 256
MAX_CHUNK_SIZE = 16 << 20
MAX_CHUNKS = 1 << 32

_HEADER = struct.Struct(">4sBBI7s")
assert _HEADER.size == HEADER_LEN

WRAP_VERSION = 1
_EC_POINT_LEN = 65
_WRAP_NONCE_LEN = 12
_WRAP_OVERHEAD = 1 + _EC_POINT_LEN + _WRAP_NONCE_LEN + TAG_LEN
MIN_WRAPPED_KEY_LEN = 16
MAX_WRAPPED_KEY_LEN = 64
MAX_CONTEXT_LEN = 4096
_ECIES_INFO = b"chainshare/ecies/v1"

VAULT_KEY_CONTEXT = b"chainshare/vault-key/v1"

PrivateKeyInput = bytes | str | ec.EllipticCurvePrivateKey
PublicKeyInput = bytes | str | ec.EllipticCurvePublicKey | x509.Certificate


class Hasher(Protocol):
    """An incremental hash (the subset of hashlib's interface chainshare uses)."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...


def new_keccak256() -> Hasher:
    """A fresh incremental Keccak-256 (the ledger's hash; equals ``keccak256`` of all updates).

    It is pycryptodome's, not safe-pysha3's (which ``hashing.keccak256`` uses for short inputs):
    on the megabyte blocks of a stream both run at the same speed, but pycryptodome releases the
    GIL while hashing, so a stream hashes in one thread while AES runs in another."""
    hasher: Hasher = keccak.new(digest_bits=256)
    return hasher


def new_key() -> bytes:
    """A fresh random 32-byte AES-256 key (data key, delivery key or vault key)."""
    return os.urandom(KEY_LEN)


# --------------------------------------------------------------------------- streaming AEAD


@dataclass(frozen=True)
class EnvelopeHeader:
    """The authenticated header of a streaming envelope."""

    chunk_size: int
    nonce_prefix: bytes
    version: int = VERSION
    suite: int = SUITE_AES256GCM_STREAM

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.suite, self.chunk_size, self.nonce_prefix)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse a header; CryptoError unless it is a well-formed version-1 header."""
        if len(data) != HEADER_LEN:
            raise CryptoError(f"envelope is truncated: header has {len(data)} of {HEADER_LEN} bytes")
        magic, version, suite, chunk_size, prefix = _HEADER.unpack(data)
        if magic != MAGIC:
            raise CryptoError("not a chainshare envelope (bad magic)")
        if version != VERSION:
            raise CryptoError(f"unsupported envelope version {version} (this node reads version {VERSION})")
        if suite != SUITE_AES256GCM_STREAM:
            raise CryptoError(f"unsupported envelope cipher suite {suite}")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise CryptoError(f"envelope chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        return cls(chunk_size=chunk_size, nonce_prefix=prefix, version=version, suite=suite)


def _aead(key: bytes) -> AESGCM:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise CryptoError(f"an AES-256 key must be {KEY_LEN} bytes")
    return AESGCM(bytes(key))


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInput(f"chunk size must be an integer in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")


class StreamEncryptor:
    """Encrypts one stream chunk by chunk; emit ``header`` first, then each ``encrypt_chunk``."""

    def __init__(self, key: bytes, aad: bytes = b"", *, chunk_size: int = CHUNK_SIZE) -> None:
        _check_chunk_size(chunk_size)
        self._aead = _aead(key)
        self.chunk_size = chunk_size
        self.header = EnvelopeHeader(chunk_size, os.urandom(NONCE_PREFIX_LEN)).to_bytes()
        self._aad = self.header + bytes(aad)
        self._prefix = self.header[-NONCE_PREFIX_LEN:]
        self._counter = 0
        self.finished = False

    def encrypt_chunk(self, plaintext: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        """Ciphertext of the next chunk: exactly ``chunk_size`` bytes unless ``last`` (then fewer)."""
        if self.finished:
            raise CryptoError("the stream is already finished; start a new envelope")
        size = len(plaintext)
        if (not last and size != self.chunk_size) or (last and size >= self.chunk_size):
            raise InvalidInput(
                f"chunk of {size} bytes: non-final chunks hold exactly {self.chunk_size} bytes, "
                "the final one fewer"
            )
        if self._counter >= MAX_CHUNKS:
            raise InvalidInput("stream too long for one envelope (2**32 chunks)")
        nonce = self._prefix + self._counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        self._counter += 1
        self.finished = last
        return self._aead.encrypt(nonce, plaintext, self._aad)


class StreamDecryptor:
    """Decrypts one stream chunk by chunk; each chunk is authenticated before it is returned."""

    def __init__(self, key: bytes, header: bytes, aad: bytes = b"") -> None:
        parsed = EnvelopeHeader.from_bytes(header)
        self._aead = _aead(key)
        self.chunk_size = parsed.chunk_size
        self._aad = bytes(header) + bytes(aad)
        self._prefix = parsed.nonce_prefix
        self._counter = 0
        self.finished = False

    def decrypt_chunk(self, ciphertext: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        """Plaintext of the next chunk, or CryptoError if it was altered, moved, or cut short."""
        if self.finished:
            raise CryptoError("envelope has data after its final chunk")
        if len(ciphertext) < TAG_LEN:
            raise CryptoError("envelope is truncated (a chunk is shorter than its tag)")
        if self._counter >= MAX_CHUNKS:
            raise CryptoError("envelope has more than 2**32 chunks")
        nonce = self._prefix + self._counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, self._aad)
        except InvalidTag:
            raise CryptoError(
                f"envelope chunk {self._counter} failed authentication: the data was altered, "
                "reordered or truncated, or the key or context is wrong; discard any output"
            ) from None
        self._counter += 1
        self.finished = last
        return plaintext


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if data is None:
        raise InvalidInput("non-blocking sources are not supported")
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def iter_encrypt(
    pieces: Iterable[bytes | bytearray | memoryview],
    key: bytes,
    aad: bytes = b"",
    *,
    chunk_size: int = CHUNK_SIZE,
) -> Generator[bytes, None, None]:
    """The envelope of the concatenated ``pieces`` (any sizes), as header then ciphertext chunks;
    memory stays within about two chunks whatever the total length."""
    encryptor = StreamEncryptor(key, aad, chunk_size=chunk_size)
    yield encryptor.header
    buffer = bytearray()
    for piece in pieces:
        if not buffer and len(piece) == chunk_size:  # the common case: no copy
            yield encryptor.encrypt_chunk(piece, last=False)
            continue
        buffer += piece
        if len(buffer) >= chunk_size:
            yield from _drain(buffer, chunk_size, functools.partial(encryptor.encrypt_chunk, last=False))
    yield encryptor.encrypt_chunk(buffer, last=True)


def _drain(
    buffer: bytearray, size: int, process: Callable[[memoryview], bytes]
) -> Generator[bytes, None, None]:
    """Process and remove every whole ``size``-byte block at the front of ``buffer``."""
    start = 0
    with memoryview(buffer) as view:
        while len(buffer) - start >= size:
            yield process(view[start : start + size])
            start += size
    del buffer[:start]


def iter_decrypt(src: BinaryIO, key: bytes, aad: bytes = b"") -> Generator[bytes, None, None]:
    """Authenticated plaintext chunks of the envelope read from ``src``; raises CryptoError at the
    first chunk that fails (nothing of that chunk is yielded) and if the stream does not end
    exactly after its final chunk."""
    decryptor = StreamDecryptor(key, _read_exactly(src, HEADER_LEN), aad)
    full = decryptor.chunk_size + TAG_LEN
    while True:
        ciphertext = _read_exactly(src, full)
        if len(ciphertext) == full:
            yield decryptor.decrypt_chunk(ciphertext, last=False)
            continue
        if len(ciphertext) < TAG_LEN:
            raise CryptoError("envelope is truncated: its final chunk is missing")
        yield decryptor.decrypt_chunk(ciphertext, last=True)
        if src.read(1):
            raise CryptoError("envelope has trailing data after its final chunk")
        return


def iter_decrypt_pieces(
    pieces: Iterable[bytes | bytearray | memoryview], key: bytes, aad: bytes = b""
) -> Generator[bytes, None, None]:
    """``iter_decrypt`` for an envelope that arrives as byte strings of any sizes (network
    frames); the envelope ends where ``pieces`` ends."""
    buffer = bytearray()
    decryptor: StreamDecryptor | None = None
    full = 0
    for piece in pieces:
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"envelope pieces must be bytes, got {type(piece).__name__}")
        if decryptor is not None and not buffer and len(piece) == full:  # no copy
            yield decryptor.decrypt_chunk(piece, last=False)
            continue
        buffer += piece
        if decryptor is None:
            if len(buffer) < HEADER_LEN:
                continue
            decryptor = StreamDecryptor(key, bytes(buffer[:HEADER_LEN]), aad)
            full = decryptor.chunk_size + TAG_LEN
            del buffer[:HEADER_LEN]
        if len(buffer) >= full:
            # By the format, a whole chunk's worth of bytes is never the final chunk.
            yield from _drain(buffer, full, functools.partial(decryptor.decrypt_chunk, last=False))
    if decryptor is None:
        raise CryptoError(f"envelope is truncated: header has {len(buffer)} of {HEADER_LEN} bytes")
    if len(buffer) < TAG_LEN:
        raise CryptoError("envelope is truncated: its final chunk is missing")
    yield decryptor.decrypt_chunk(buffer, last=True)


class Writable(Protocol):
    """Where stream functions write: a binary file, or anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object: ...


def encrypt_stream(
    src: BinaryIO, dst: Writable, key: bytes, aad: bytes = b"", *, chunk_size: int = CHUNK_SIZE
) -> tuple[int, bytes]:
    """Encrypt everything readable from ``src`` into ``dst`` as one envelope; returns the number
    of plaintext bytes and their Keccak-256. Memory is O(chunk_size)."""
    encryptor = StreamEncryptor(key, aad, chunk_size=chunk_size)
    with _HashAndWrite(dst) as sink:
        sink.submit(None, encryptor.header)
        while True:
            plaintext = _read_exactly(src, chunk_size)
            last = len(plaintext) < chunk_size
            sink.submit(plaintext, encryptor.encrypt_chunk(plaintext, last=last))
            if last:
                return sink.finish()


def decrypt_stream(src: BinaryIO, dst: Writable, key: bytes, aad: bytes = b"") -> tuple[int, bytes]:
    """Decrypt the envelope read from ``src`` into ``dst``; returns the number of plaintext bytes
    and their Keccak-256. On CryptoError, chunks before the failing one were already written:
    the caller must discard ``dst``."""
    return write_chunks(iter_decrypt(src, key, aad), dst)


def write_chunks(chunks: Iterable[bytes], dst: Writable) -> tuple[int, bytes]:
    """Write ``chunks`` (e.g. from ``iter_decrypt_pieces``) to ``dst``; returns their total
    length and Keccak-256. The chunks must be ``bytes`` (they may be written after this returns
    to the generator, from a helper thread)."""
    with _HashAndWrite(dst) as sink:
        for chunk in chunks:
            sink.submit(chunk, chunk)
        return sink.finish()


class _HashAndWrite:
    """Hashes plaintext blocks and writes output blocks, each in order. From the third block on,
    each job runs in its own helper thread: Keccak (pycryptodome) and file writes release the GIL,
    so they overlap with each other and with AES and reads in the caller's thread. At most
    ``depth`` blocks wait per helper (bounded memory); a helper's error surfaces at the next
    ``submit`` or at ``finish``."""

    def __init__(self, dst: Writable, depth: int = 2) -> None:
        self._hasher = new_keccak256()
        self._jobs: tuple[Callable[[bytes], object], ...] = (self._hasher.update, dst.write)
        self._total = 0
        self._depth = depth
        self._inline = 2  # the header and a first chunk: small envelopes never start a thread
        self._lanes: list[tuple[queue.Queue[bytes | None], threading.Thread]] = []
        self._error: BaseException | None = None

    def submit(self, hash_block: bytes | None, write_block: bytes | None) -> None:
        if self._error is not None:
            raise self._error
        if hash_block is not None:
            self._total += len(hash_block)
        blocks = (hash_block, write_block)
        if not self._lanes and self._inline:
            self._inline -= 1
            for job, block in zip(self._jobs, blocks, strict=True):
                if block is not None:
                    job(block)
            return
        if not self._lanes:
            for job in self._jobs:
                lane: queue.Queue[bytes | None] = queue.Queue(maxsize=self._depth)
                thread = threading.Thread(target=self._run, args=(lane, job), name="chainshare-envelope-io", daemon=True)
                thread.start()
                self._lanes.append((lane, thread))
        for (lane, _thread), block in zip(self._lanes, blocks, strict=True):
            if block is not None:
                lane.put(block)

    def _run(self, lane: queue.Queue[bytes | None], job: Callable[[bytes], object]) -> None:
        while True:
            block = lane.get()
            if block is None:
                return
            if self._error is None:
                try:
                    job(block)
                except BaseException as exc:  # handed over to the caller's thread
                    self._error = exc

    def _stop(self) -> None:
        for lane, _thread in self._lanes:
            lane.put(None)
        for _lane, thread in self._lanes:
            thread.join()
        self._lanes = []

    def finish(self) -> tuple[int, bytes]:
        """Wait for every block; the total hashed length and its Keccak-256."""
        self._stop()
        if self._error is not None:
            raise self._error
        return self._total, self._hasher.digest()

    def __enter__(self) -> _HashAndWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()


def ciphertext_size(plaintext_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Exact size of the envelope of ``plaintext_size`` bytes."""
    return HEADER_LEN + plaintext_size + (plaintext_size // chunk_size + 1) * TAG_LEN


# --------------------------------------------------------------------------- ECIES key wrapping


def load_private_key(key: PrivateKeyInput, password: str | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM (PKCS#8 or SEC1, encrypted if ``password`` is given)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        private = key
    else:
        pem = key.encode("ascii") if isinstance(key, str) else bytes(key)
        try:
            loaded = serialization.load_pem_private_key(
                pem, password=password.encode("utf-8") if password is not None else None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CryptoError(
                "cannot load the node private key: not a PEM private key, or a wrong/missing password"
            ) from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise CryptoError("the node private key is not an elliptic-curve (P-256) key")
        private = loaded
    if not isinstance(private.curve, ec.SECP256R1):
        raise CryptoError(f"the node private key is on {private.curve.name}, expected P-256 (secp256r1)")
    return private


def load_public_key(recipient: PublicKeyInput) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from a PEM certificate, a PEM public key, or the objects themselves.
    It does not check who certified it: verify a certificate with ``ca.verify_certificate`` first."""
    public: object
    if isinstance(recipient, ec.EllipticCurvePublicKey):
        public = recipient
    elif isinstance(recipient, x509.Certificate):
        public = recipient.public_key()
    else:
        pem = recipient.encode("ascii") if isinstance(recipient, str) else bytes(recipient)
        try:
            if b"-----BEGIN CERTIFICATE-----" in pem:
                public = x509.load_pem_x509_certificate(pem).public_key()
            else:
                public = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CryptoError(
                "the recipient is not a PEM certificate or PEM public key (give the node's node.crt)"
            ) from exc
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise CryptoError("the recipient key is not a P-256 (secp256r1) public key")
    return public


def _point(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _check_context(context: bytes) -> bytes:
    if not isinstance(context, (bytes, bytearray)):
        raise InvalidInput("key-wrapping context must be bytes (e.g. b'grant:<id>:<purpose>')")
    if len(context) > MAX_CONTEXT_LEN:
        raise InvalidInput(f"key-wrapping context exceeds {MAX_CONTEXT_LEN} bytes")
    return bytes(context)


def _wrapping_key(shared: bytes, epk: bytes, recipient: bytes, context: bytes) -> bytes:
    info = _ECIES_INFO + epk + recipient + len(context).to_bytes(4, "big") + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(shared)


def wrap_key(recipient: PublicKeyInput, key: bytes, context: bytes) -> bytes:
    """``key`` encrypted so that only the holder of the recipient's P-256 private key, asking
    under the same ``context``, can recover it (ECIES: ephemeral ECDH + HKDF-SHA256 + AES-256-GCM)."""
    if not isinstance(key, (bytes, bytearray)) or not MIN_WRAPPED_KEY_LEN <= len(key) <= MAX_WRAPPED_KEY_LEN:
        raise InvalidInput(f"a wrapped key must be {MIN_WRAPPED_KEY_LEN}..{MAX_WRAPPED_KEY_LEN} bytes")
    context = _check_context(context)
    public = load_public_key(recipient)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    epk = _point(ephemeral.public_key())
    wrapping = _wrapping_key(ephemeral.exchange(ec.ECDH(), public), epk, _point(public), context)
    nonce = os.urandom(_WRAP_NONCE_LEN)
    prefix = bytes([WRAP_VERSION]) + epk
    return prefix + nonce + AESGCM(wrapping).encrypt(nonce, bytes(key), prefix)


def unwrap_key(
    private_key: PrivateKeyInput, wrapped: bytes, context: bytes, *, password: str | None = None
) -> bytes:
    """The key inside ``wrapped``; CryptoError if it was altered, wrapped to another key, or
    wrapped under another context."""
    context = _check_context(context)
    if not isinstance(wrapped, (bytes, bytearray)):
        raise CryptoError("wrapped key must be bytes")
    wrapped = bytes(wrapped)
    if not _WRAP_OVERHEAD + MIN_WRAPPED_KEY_LEN <= len(wrapped) <= _WRAP_OVERHEAD + MAX_WRAPPED_KEY_LEN:
        raise CryptoError(f"wrapped key has a wrong length ({len(wrapped)} bytes)")
    if wrapped[0] != WRAP_VERSION:
        raise CryptoError(f"unsupported wrapped-key version {wrapped[0]}")
    private = load_private_key(private_key, password)
    prefix = wrapped[: 1 + _EC_POINT_LEN]
    epk = prefix[1:]
    nonce = wrapped[len(prefix) : len(prefix) + _WRAP_NONCE_LEN]
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
    except ValueError:
        raise CryptoError("wrapped key holds an invalid ephemeral public key") from None
    wrapping = _wrapping_key(
        private.exchange(ec.ECDH(), ephemeral), epk, _point(private.public_key()), context
    )
    try:
        return AESGCM(wrapping).decrypt(nonce, wrapped[len(prefix) + _WRAP_NONCE_LEN :], prefix)
    except InvalidTag:
        raise CryptoError(
            "cannot unwrap the key: it was wrapped to another node key or under another context "
            "(grant/purpose), or it was altered"
        ) from None


# --------------------------------------------------------------------------- the vault key

# Design choice: the vault key is a random key sealed (ECIES) to the node's own P-256 key and
# stored beside the vault, rather than derived from the node key's bytes. Node certificates
# expire (825 days) and keys get rotated or re-issued: with a sealed key, rotation re-seals one
# 126-byte file instead of re-encrypting every dataset; a wrong node key fails loudly at unseal
# instead of silently deriving a different key; and the ECDSA key is never used as KDF input
# material outside ECDH. The cost is one more file to back up (losing it loses the vault, exactly
# as losing the node key would).


def seal_vault_key(node_key: PublicKeyInput | ec.EllipticCurvePrivateKey, vault_key: bytes) -> bytes:
    """``vault_key`` sealed to the node's P-256 key (give its certificate, public or private key)."""
    public = node_key.public_key() if isinstance(node_key, ec.EllipticCurvePrivateKey) else node_key
    if len(vault_key) != KEY_LEN:
        raise InvalidInput(f"a vault key must be {KEY_LEN} bytes")
    return wrap_key(public, vault_key, VAULT_KEY_CONTEXT)


def open_vault_key(node_private_key: PrivateKeyInput, sealed: bytes, *, password: str | None = None) -> bytes:
    """The vault key sealed by ``seal_vault_key``; CryptoError for another node's key or a damaged file."""
    key = unwrap_key(node_private_key, sealed, VAULT_KEY_CONTEXT, password=password)
    if len(key) != KEY_LEN:
        raise CryptoError("sealed vault key has a wrong length")
    return key
