"""The owner node's encrypted dataset vault, and both ends of a delivery.

On disk (directory 0700, every file 0600)::

    <vault>/vault.key                the vault key, sealed (ECIES) to the node's P-256 key
    <vault>/pseudonym.secret         the owner's pseudonym secret (``pseudonym.derive_pseudonym_key``),
                                     sealed the same way: it never leaves the owner's node
    <vault>/datasets/<id>.enc        the dataset as a streaming envelope (crypto/envelope.py) under
                                     its own random data key; AAD "chainshare/vault/v1\\0" || id
    <vault>/datasets/<id>.json       {"version", "dataset_key_id", "fmt", "content_hash", "size",
                                      "wrapped_data_key"}: the data key under the vault key
                                     (AES-256-GCM, AAD = canonical encoding of id, fmt, hash, size)
    <vault>/records/<name>.sealed    a small secret of this node (e.g. a joint job's commitment
                                     opening) under the vault key (AES-256-GCM, AAD names it)

The metadata is authenticated by the data-key wrap, and the dataset by its envelope, so any change
on disk fails with CryptoError instead of yielding different data. An entry exists once its
``.json`` exists: the ciphertext is renamed into place first, so a crash leaves at worst an
orphan ``.enc`` and never an entry without its data.

A delivery (``export_for`` → network → ``receive_delivery``) re-encrypts the dataset under a fresh
delivery key wrapped to the requester node's certified P-256 key, so the at-rest keys never leave
the owner. Both ends stream: memory stays at a few chunks whatever the dataset size.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chainshare import codec
from chainshare.crypto.envelope import (
    CHUNK_SIZE,
    KEY_LEN,
    PrivateKeyInput,
    PublicKeyInput,
    encrypt_stream,
    iter_decrypt,
    iter_decrypt_pieces,
    iter_encrypt,
    load_private_key,
    load_public_key,
    new_keccak256,
    new_key,
    open_vault_key,
    seal_vault_key,
    unwrap_key,
    wrap_key,
    write_chunks,
)
from chainshare.crypto.keystore import write_secret_file
from chainshare.errors import CryptoError, InvalidInput, NotFound, StorageError
from chainshare.sharing.pseudonym import ACTION_READ_IDENTIFIED, check_action, transform_stream
from chainshare.sharing.schema import Schema, check_format, open_dataset

VAULT_KEY_FILE = "vault.key"
PSEUDONYM_SECRET_FILE = "pseudonym.secret"
DATASETS_DIR = "datasets"
CIPHERTEXT_SUFFIX = ".enc"
METADATA_SUFFIX = ".json"
METADATA_VERSION = 1
DIR_MODE = 0o700
FILE_MODE = 0o600

_ID_RE = re.compile(r"[0-9a-f]{32}")
_AT_REST_AAD = b"chainshare/vault/v1\x00"
_DATA_KEY_AAD = "chainshare/vault-entry/v1"
_DELIVERY_AAD = b"chainshare/delivery/v1\x00"
_WRAP_NONCE_LEN = 12
RECORDS_DIR = "records"
RECORD_SUFFIX = ".sealed"
MAX_RECORD_BYTES = 1 << 20
_RECORD_AAD = b"chainshare/vault-record/v1\x00"
_RECORD_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class VaultEntry:
    """One dataset in the vault; ``content_hash`` is Keccak-256 of its plaintext (the on-chain hash)."""

    dataset_key_id: str
    content_hash: bytes
    size: int
    fmt: str
    path: Path

    @property
    def content_hash_hex(self) -> str:
        return "0x" + self.content_hash.hex()

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_key_id": self.dataset_key_id,
            "content_hash": self.content_hash_hex,
            "size": self.size,
            "fmt": self.fmt,
            "path": str(self.path),
        }


# --------------------------------------------------------------------------- vault key file


def load_or_create_vault_key(
    directory: Path | str, node_private_key: PrivateKeyInput, *, password: str | None = None
) -> bytes:
    """The vault key of the vault in ``directory``, unsealed with the node's private key (PEM of
    ``node.key``); a new random one is created and sealed to that key if the vault has none."""
    return _load_or_create_sealed(Path(directory), VAULT_KEY_FILE, "vault key", node_private_key, password)


def load_or_create_pseudonym_secret(
    directory: Path | str, node_private_key: PrivateKeyInput, *, password: str | None = None
) -> bytes:
    """The owner's pseudonym secret of the vault in ``directory`` (unsealed with the node's private
    key; created at random on first use). Every pseudonym key of this owner's ``read`` deliveries
    derives from it, so it must stay on this node (copy it, sealed, only to another node of the
    same agency that serves the same datasets)."""
    return _load_or_create_sealed(Path(directory), PSEUDONYM_SECRET_FILE, "pseudonym secret", node_private_key,
                                  password)


def _load_or_create_sealed(
    directory: Path, name: str, what: str, node_private_key: PrivateKeyInput, password: str | None
) -> bytes:
    _make_private_dir(directory)
    path = directory / name
    private = load_private_key(node_private_key, password)
    try:
        sealed = path.read_bytes()
    except FileNotFoundError:
        key = new_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:  # another process created it first: use theirs
            return open_vault_key(private, path.read_bytes())
        try:
            os.write(fd, seal_vault_key(private, key))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(directory)
        return key
    except OSError as exc:
        raise StorageError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    try:
        return open_vault_key(private, sealed)
    except CryptoError as exc:
        raise CryptoError(
            f"cannot open the {what} {path}: it was sealed to another node key, or it is damaged "
            "(after a node key rotation, run reseal_vault_key with the old key)"
        ) from exc


def reseal_vault_key(
    directory: Path | str,
    old_private_key: PrivateKeyInput,
    new_node_key: PublicKeyInput,
    *,
    password: str | None = None,
    new_private_key: PrivateKeyInput | None = None,
) -> list[str]:
    """Seal the vault key (and the pseudonym secret, if any) to a new node key (key rotation); the
    datasets, and the pseudonyms grantees receive, stay as they are. With ``new_private_key`` (the
    new key's private half, same ``password``), a file it already opens is left as it is, so a
    rotation interrupted half-way can be run again. Returns the names of the files re-sealed."""
    directory = Path(directory)
    resealed = []
    for name in (VAULT_KEY_FILE, PSEUDONYM_SECRET_FILE):
        path = directory / name
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            if name == VAULT_KEY_FILE:
                raise StorageError(f"cannot read the vault key {path}: no such file") from None
            continue
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        if new_private_key is not None and _opens(new_private_key, sealed, password):
            continue
        key = open_vault_key(old_private_key, sealed, password=password)
        write_secret_file(path, seal_vault_key(load_public_key(new_node_key), key))
        resealed.append(name)
    return resealed


def _opens(private_key: PrivateKeyInput, sealed: bytes, password: str | None) -> bool:
    try:
        open_vault_key(private_key, sealed, password=password)
    except CryptoError:
        return False
    return True


def _make_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o777 != DIR_MODE:
            directory.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise StorageError(f"cannot create the vault directory {directory}: {exc.strerror}") from exc


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the vault


class Vault:
    """Datasets encrypted at rest under per-dataset data keys, themselves under ``vault_key``."""

    def __init__(self, directory: Path | str, vault_key: bytes) -> None:
        if not isinstance(vault_key, (bytes, bytearray)) or len(vault_key) != KEY_LEN:
            raise CryptoError(f"the vault key must be {KEY_LEN} bytes")
        self.directory = Path(directory)
        self._datasets = self.directory / DATASETS_DIR
        _make_private_dir(self.directory)
        _make_private_dir(self._datasets)
        self._key = AESGCM(bytes(vault_key))

    @classmethod
    def open(
        cls, directory: Path | str, node_private_key: PrivateKeyInput, *, password: str | None = None
    ) -> Vault:
        """The vault in ``directory`` with its key unsealed by the node key (created if new)."""
        return cls(directory, load_or_create_vault_key(directory, node_private_key, password=password))

    # ---- sealed records (small secrets of this node)

    def seal_record(self, name: str, data: bytes) -> None:
        """Keep ``data`` sealed under the vault key as record ``name`` (written atomically, 0600)."""
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidInput(f"a vault record holds at most {MAX_RECORD_BYTES} bytes")
        nonce = secrets.token_bytes(_WRAP_NONCE_LEN)
        records = self.directory / RECORDS_DIR
        _make_private_dir(records)
        write_secret_file(self._record_path(name), nonce + self._key.encrypt(nonce, data, _RECORD_AAD + name.encode()))

    def open_record(self, name: str) -> bytes:
        """Record ``name`` as sealed; NotFound if absent, CryptoError if it was altered on disk."""
        path = self._record_path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"this node's vault holds no record {name!r}") from None
        except OSError as exc:
            raise StorageError(f"cannot read vault record {path}: {exc.strerror}") from exc
        try:
            return self._key.decrypt(blob[:_WRAP_NONCE_LEN], blob[_WRAP_NONCE_LEN:], _RECORD_AAD + name.encode())
        except (InvalidTag, ValueError):
            raise CryptoError(f"vault record {name!r} was altered on disk or the vault key is wrong") from None

    def _record_path(self, name: str) -> Path:
        if not _RECORD_NAME_RE.fullmatch(name):
            raise InvalidInput(f"a vault record name is 1..64 of a-z, 0-9 and '-', got {name[:80]!r}")
        return self.directory / RECORDS_DIR / (name + RECORD_SUFFIX)

    # ---- writing

    def put(self, source_path: Path | str, fmt: str) -> VaultEntry:
        """Encrypt the dataset file at ``source_path`` into the vault (streaming, fresh data key).
        Putting the same bytes in the same format again returns the existing entry."""
        fmt = check_format(fmt)
        with open_dataset(source_path) as src:
            return self.put_stream(src, fmt)

    def put_stream(self, src: BinaryIO, fmt: str) -> VaultEntry:
        """``put`` for a dataset read from a binary stream."""
        fmt = check_format(fmt)
        entry_id = secrets.token_hex(16)
        data_key = new_key()
        final = self._datasets / (entry_id + CIPHERTEXT_SUFFIX)
        tmp = self._datasets / f".{entry_id}{CIPHERTEXT_SUFFIX}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with open(fd, "wb") as dst:
                size, content_hash = encrypt_stream(src, dst, data_key, _AT_REST_AAD + entry_id.encode())
                dst.flush()
                os.fsync(dst.fileno())
            existing = self._find(content_hash, fmt)
            if existing is not None:
                tmp.unlink()
                return existing
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write the vault entry {final}: {exc.strerror}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        entry = VaultEntry(entry_id, content_hash, size, fmt, final)
        nonce = os.urandom(_WRAP_NONCE_LEN)
        wrapped = nonce + self._key.encrypt(nonce, data_key, _entry_aad(entry))
        metadata = {
            "version": METADATA_VERSION,
            "dataset_key_id": entry_id,
            "fmt": fmt,
            "content_hash": entry.content_hash_hex,
            "size": size,
            "wrapped_data_key": "0x" + wrapped.hex(),
        }
        try:
            write_secret_file(self._metadata_path(entry_id), json.dumps(metadata, indent=2) + "\n")
        except BaseException as exc:
            final.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write the vault metadata of {entry_id}: {exc.strerror}") from exc
            raise
        return entry

    def remove(self, entry: VaultEntry) -> None:
        """Delete the entry (metadata first, so a crash never leaves an entry without its data)."""
        self._metadata_path(_check_id(entry.dataset_key_id)).unlink(missing_ok=True)
        self._ciphertext_path(entry.dataset_key_id).unlink(missing_ok=True)
        _fsync_dir(self._datasets)

    # ---- reading

    def get(self, dataset_key_id: str) -> VaultEntry:
        """The entry with this id; NotFound if the vault has none."""
        entry_id = _check_id(dataset_key_id)
        entry, _wrapped = self._load_metadata(entry_id)
        return entry

    def find(self, content_hash: bytes | str, fmt: str | None = None) -> VaultEntry:
        """The entry whose plaintext has this Keccak-256 (bytes or 0x-hex); NotFound if none."""
        digest = _parse_hash(content_hash)
        entry = self._find(digest, check_format(fmt) if fmt is not None else None)
        if entry is None:
            raise NotFound(f"no dataset with content hash 0x{digest.hex()} in the vault {self.directory}")
        return entry

    def entries(self) -> list[VaultEntry]:
        """Every entry, ordered by id."""
        found = []
        for path in sorted(self._datasets.glob("*" + METADATA_SUFFIX)):
            entry_id = path.name[: -len(METADATA_SUFFIX)]
            if _ID_RE.fullmatch(entry_id):
                found.append(self._load_metadata(entry_id)[0])
        return found

    @contextmanager
    def open_plaintext(self, entry: VaultEntry) -> Iterator[BinaryIO]:
        """A buffered binary reader of the entry's plaintext, decrypted and authenticated chunk by
        chunk as it is read; CryptoError if the stored data was altered."""
        raw = self._open_raw(entry)
        reader = io.BufferedReader(raw, buffer_size=CHUNK_SIZE)
        try:
            yield reader
        finally:
            reader.close()

    def _open_raw(self, entry: VaultEntry) -> _DecryptingReader:
        stored, wrapped = self._load_metadata(_check_id(entry.dataset_key_id))
        if stored != VaultEntry(entry.dataset_key_id, entry.content_hash, entry.size, entry.fmt, stored.path):
            raise CryptoError(f"vault entry {entry.dataset_key_id} does not match the stored metadata")
        data_key = self._unwrap_data_key(stored, wrapped)
        try:
            file = stored.path.open("rb")
        except FileNotFoundError:
            raise StorageError(
                f"vault entry {entry.dataset_key_id} has lost its data file {stored.path}"
            ) from None
        try:
            return _DecryptingReader(file, data_key, _AT_REST_AAD + stored.dataset_key_id.encode(), stored.size)
        except BaseException:
            file.close()
            raise

    # ---- delivery (owner side)

    def export_for(
        self,
        entry: VaultEntry,
        schema: Schema,
        action: str,
        recipient_cert_pem: PublicKeyInput,
        context: bytes,
        *,
        pseudonym_key: bytes | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> Delivery:
        """The entry as a delivery to the recipient node: personal columns pseudonymized for
        ``read`` (``pseudonym_key``: ``derive_pseudonym_key`` for this owner, grantee and dataset), raw for ``read_identified``; encrypted
        under a fresh delivery key that is wrapped to ``recipient_cert_pem`` (verify that
        certificate with ``ca.verify_certificate`` first) under ``context`` (grant id and purpose).
        Call only after re-checking the grant on this node's own chain."""
        check_action(action)
        if not isinstance(schema, Schema):
            raise InvalidInput("export_for needs the dataset's validated Schema")
        delivery_key = new_key()
        wrapped_key = wrap_key(recipient_cert_pem, delivery_key, context)
        raw = self._open_raw(entry)
        try:
            pieces: Iterator[bytes]
            if action == ACTION_READ_IDENTIFIED:
                # Delivered bytes = stored bytes, whose hash the (authenticated) metadata records.
                pieces = raw.iter_chunks()
                tally = _Tally(known_hash=entry.content_hash)
            else:
                reader = io.BufferedReader(raw, buffer_size=CHUNK_SIZE)
                pieces = transform_stream(reader, entry.fmt, schema, action, pseudonym_key)
                tally = _Tally(known_hash=None)
            stream = iter_encrypt(
                tally.count(pieces), delivery_key, _DELIVERY_AAD + bytes(context), chunk_size=chunk_size
            )
            header = next(stream)
        except BaseException:
            raw.close()
            raise
        return Delivery(wrapped_key, header, stream, tally, raw.close)

    # ---- internals

    def _metadata_path(self, entry_id: str) -> Path:
        return self._datasets / (entry_id + METADATA_SUFFIX)

    def _ciphertext_path(self, entry_id: str) -> Path:
        return self._datasets / (entry_id + CIPHERTEXT_SUFFIX)

    def _find(self, content_hash: bytes, fmt: str | None) -> VaultEntry | None:
        for entry in self.entries():
            if entry.content_hash == content_hash and (fmt is None or entry.fmt == fmt):
                return entry
        return None

    def _load_metadata(self, entry_id: str) -> tuple[VaultEntry, bytes]:
        path = self._metadata_path(entry_id)
        try:
            with path.open("rb") as file:
                data = file.read(_MAX_METADATA_BYTES + 1)
        except FileNotFoundError:
            raise NotFound(f"no dataset {entry_id} in the vault {self.directory}") from None
        except OSError as exc:
            raise StorageError(f"cannot read vault metadata {path}: {exc.strerror}") from exc
        try:
            meta = json.loads(data)
            if not isinstance(meta, dict) or meta.get("version") != METADATA_VERSION:
                raise ValueError("unsupported version")
            if meta.get("dataset_key_id") != entry_id:
                raise ValueError("id does not match the file name")
            size = meta["size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError("bad size")
            entry = VaultEntry(
                dataset_key_id=entry_id,
                content_hash=_parse_hash(meta["content_hash"]),
                size=size,
                fmt=check_format(meta["fmt"]),
                path=self._ciphertext_path(entry_id),
            )
            wrapped = bytes.fromhex(str(meta["wrapped_data_key"]).removeprefix("0x"))
        except (ValueError, KeyError, TypeError, InvalidInput) as exc:
            raise StorageError(f"vault metadata {path} is damaged: {exc}") from None
        return entry, wrapped

    def _unwrap_data_key(self, entry: VaultEntry, wrapped: bytes) -> bytes:
        try:
            key = self._key.decrypt(wrapped[:_WRAP_NONCE_LEN], wrapped[_WRAP_NONCE_LEN:], _entry_aad(entry))
        except (InvalidTag, ValueError):
            raise CryptoError(
                f"cannot unwrap the data key of vault entry {entry.dataset_key_id}: its metadata was "
                "altered or the vault key is wrong"
            ) from None
        if len(key) != KEY_LEN:
            raise CryptoError(f"vault entry {entry.dataset_key_id} holds a malformed data key")
        return key


def _entry_aad(entry: VaultEntry) -> bytes:
    return codec.encode([_DATA_KEY_AAD, entry.dataset_key_id, entry.fmt, entry.content_hash, entry.size])


def _check_id(dataset_key_id: str) -> str:
    if not isinstance(dataset_key_id, str) or not _ID_RE.fullmatch(dataset_key_id):
        raise InvalidInput(f"invalid vault dataset id {dataset_key_id!r}: expected 32 lowercase hex digits")
    return dataset_key_id


def _parse_hash(value: bytes | str) -> bytes:
    if isinstance(value, str):
        text = value.removeprefix("0x")
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise InvalidInput(f"content hash {value!r} is not hex") from None
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInput("a content hash is 32 bytes (Keccak-256), as 0x-prefixed hex or bytes")
    return value


class _DecryptingReader(io.RawIOBase):
    """Raw reader of an at-rest envelope: each chunk is authenticated before any of it is read,
    and the end is checked (final chunk present, no trailing data, the recorded size)."""

    def __init__(self, file: BinaryIO, key: bytes, aad: bytes, expected_size: int) -> None:
        super().__init__()
        self._file = file
        self._chunks = iter_decrypt(file, key, aad)
        self._expected_size = expected_size
        self._size = 0
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def iter_chunks(self) -> Iterator[bytes]:
        """The plaintext chunk by chunk (no copy), for whole-file consumers."""
        for chunk in self._chunks:
            self._size += len(chunk)
            yield chunk
        self._check_end()

    def _check_end(self) -> None:
        if self._size != self._expected_size:
            raise CryptoError(
                f"vault data holds {self._size} bytes where its metadata records {self._expected_size}"
            )

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._current:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._check_end()
                return 0
            self._size += len(chunk)
            self._current = memoryview(chunk)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._file.close()
        super().close()


class _Tally:
    """Counts (and, unless the hash is known, hashes) the plaintext of a delivery as it streams."""

    def __init__(self, known_hash: bytes | None) -> None:
        self.size = 0
        self._known_hash = known_hash
        self._hasher = new_keccak256() if known_hash is None else None

    def count(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.size += len(piece)
            if self._hasher is not None:
                self._hasher.update(piece)
            yield piece

    def digest(self) -> bytes:
        if self._known_hash is not None:
            return self._known_hash
        assert self._hasher is not None
        return self._hasher.digest()


class Delivery:
    """One outgoing delivery. Send ``wrapped_key``, then every block of iterating this object: the
    envelope, its header first and then ciphertext chunks (frame them any way; the receiver needs
    only their concatenation). Once iteration has ended, ``plaintext_size`` and ``content_hash``
    (Keccak-256 of the delivered plaintext) are what to record on chain. Iterate once; ``close``
    (or use as a context manager) when abandoning a delivery half way."""

    def __init__(
        self,
        wrapped_key: bytes,
        header: bytes,
        stream: Generator[bytes, None, None],
        tally: _Tally,
        closer: Callable[[], None],
    ) -> None:
        self.wrapped_key = wrapped_key
        self.header = header
        self.ciphertext_size = 0
        self._stream = stream
        self._tally = tally
        self._closer = closer
        self._started = False
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise InvalidInput("a delivery can be streamed only once; export it again")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[bytes]:
        try:
            self.ciphertext_size = len(self.header)
            yield self.header
            for block in self._stream:
                self.ciphertext_size += len(block)
                yield block
            self._finished = True
        finally:
            self.close()

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def plaintext_size(self) -> int:
        """Bytes of plaintext delivered (final once ``finished``)."""
        return self._tally.size

    @property
    def content_hash(self) -> bytes:
        """Keccak-256 of the delivered plaintext; only once the whole delivery has been streamed."""
        if not self._finished:
            raise InvalidInput("a delivery's content hash is known only after it has been streamed")
        return self._tally.digest()

    def close(self) -> None:
        self._stream.close()
        self._closer()

    def __enter__(self) -> Delivery:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- delivery (requester side)


def compute_delivery_context(grant_id: str | int, content_hash: bytes | str, action: str) -> bytes:
    """A canonical context binding a delivery's wrapped key and envelope to one grant, one
    dataset and one action; both nodes compute it from the chain."""
    check_action(action)
    if isinstance(grant_id, bool) or not isinstance(grant_id, (str, int)):
        raise InvalidInput("grant id must be a string or an integer")
    return codec.encode(["chainshare/delivery-context/v1", grant_id, _parse_hash(content_hash), action])


def receive_delivery(
    chunks: Iterable[bytes | bytearray | memoryview],
    wrapped_key: bytes,
    node_private_key_pem: PrivateKeyInput,
    context: bytes,
    dst_path: Path | str,
    *,
    password: str | None = None,
    expected_hash: bytes | str | None = None,
) -> tuple[int, bytes]:
    """Decrypt a delivery (the envelope bytes in ``chunks``, in any framing) with this node's key
    and write the plaintext to ``dst_path`` (0600); returns (bytes, Keccak-256). Nothing is left at
    ``dst_path`` unless every chunk authenticated and, if given, the hash equals ``expected_hash``
    (the hash recorded on chain)."""
    expected = _parse_hash(expected_hash) if expected_hash is not None else None
    delivery_key = unwrap_key(node_private_key_pem, wrapped_key, context, password=password)
    dst_path = Path(dst_path)
    tmp = dst_path.with_name(f".{dst_path.name}.{secrets.token_hex(4)}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError as exc:
        raise StorageError(f"cannot write the delivery to {dst_path}: {exc.strerror}") from exc
    try:
        with open(fd, "wb") as dst:
            size, digest = write_chunks(
                iter_decrypt_pieces(chunks, delivery_key, _DELIVERY_AAD + bytes(context)), dst
            )
            if expected is not None and digest != expected:
                raise CryptoError(
                    f"delivered content hash 0x{digest.hex()} differs from the expected 0x{expected.hex()}"
                )
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, dst_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst_path.parent)
    return size, digest

