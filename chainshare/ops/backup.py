"""Backups of a node's ledger: a consistent snapshot streamed by the running node, and the restore
that rebuilds a data directory from it.

The snapshot stream (``application/x-chainshare-snapshot``) is a msgpack sequence: a header map
(format, chain id, genesis hash, head height and hash, whether the head's finality proof is in it),
then ``[key, value]`` pairs of every LevelDB record read from ONE LevelDB snapshot (so the head, its
block and its finality proof, written in one batch, are all there or none is), then a trailer map
``{"end": true, "records": n}``. A backup file is a gzip tar holding ``manifest.json`` (the header,
record count, SHA-256 of the stream), ``ledger.snap`` (the stream) and, only when asked, ``keys/``
(the node's encrypted keystores and certificates, never its password files).

A restore writes the records into a new LevelDB beside the target, checks count and hash, checks
that the head and its finality proof are there, then renames it into place: an interrupted restore
never leaves a half data directory where the node looks for one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import msgpack

from chainshare.errors import ConfigError, InvalidInput, StorageError
from chainshare.ledger.chain import (
    K_CHAIN_ID,
    K_FINALITY,
    K_GENESIS,
    K_HEAD,
    P_BLOCK,
    ChainStore,
    unpack_stored,
)
from chainshare.ledger.store import LevelDBStore

SNAPSHOT_FORMAT = "chainshare-snapshot/1"
BACKUP_FORMAT = "chainshare-backup/1"
SNAPSHOT_MEDIA_TYPE = "application/x-chainshare-snapshot"
MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
_RESTORE_BATCH = 4096


class SnapshotSource(Protocol):
    """What a snapshot is read from: every record of one point-in-time view, in key order."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...


@dataclass(frozen=True)
class SnapshotHeader:
    chain_id: int
    genesis_hash: str
    head_height: int
    head_hash: str
    has_finality_proof: bool

    def to_json(self) -> dict[str, Any]:
        return {"format": SNAPSHOT_FORMAT, "chain_id": self.chain_id, "genesis_hash": self.genesis_hash,
                "head_height": self.head_height, "head_hash": self.head_hash,
                "has_finality_proof": self.has_finality_proof}

    @classmethod
    def from_json(cls, d: Any) -> SnapshotHeader:
        if not isinstance(d, dict) or d.get("format") != SNAPSHOT_FORMAT:
            raise InvalidInput(f"not a chainshare snapshot (expected format {SNAPSHOT_FORMAT})")
        try:
            return cls(int(d["chain_id"]), str(d["genesis_hash"]), int(d["head_height"]), str(d["head_hash"]),
                       bool(d["has_finality_proof"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"snapshot header is malformed: {exc}") from exc


def compute_snapshot_header(source: SnapshotSource) -> SnapshotHeader:
    """The header of a snapshot: which chain and which head it holds."""
    head = source.get(K_HEAD)
    if head is None:
        raise StorageError("the ledger has no head block: nothing to back up")
    block = source.get(P_BLOCK + head)
    if block is None:
        raise StorageError("the ledger's head block is missing: the data directory is damaged")
    from chainshare.ledger.types import Block

    return SnapshotHeader(int.from_bytes(source.get(K_CHAIN_ID) or b"", "big"),
                          "0x" + (source.get(K_GENESIS) or b"").hex(), int.from_bytes(head, "big"),
                          "0x" + Block.decode(unpack_stored(block)).hash.hex(), source.get(K_FINALITY) is not None)


def iter_snapshot_stream(source: SnapshotSource) -> Generator[bytes, None, None]:
    """The snapshot stream of ``source`` in chunks of about 1 MiB."""
    packer = msgpack.Packer(use_bin_type=True)
    buf = io.BytesIO()
    buf.write(packer.pack(compute_snapshot_header(source).to_json()))
    count = 0
    for k, v in source.items():
        buf.write(packer.pack([k, v]))
        count += 1
        if buf.tell() >= _CHUNK:
            yield buf.getvalue()
            buf = io.BytesIO()
    buf.write(packer.pack({"end": True, "records": count}))
    yield buf.getvalue()


class LevelDBSnapshot:
    """A point-in-time view of a LevelDB store (plyvel snapshot): later writes are invisible to it."""

    def __init__(self, store: LevelDBStore) -> None:
        self._snapshot = store.snapshot()

    def get(self, key: bytes) -> bytes | None:
        return self._snapshot.get(key)  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self._snapshot.iterator()

    def close(self) -> None:
        self._snapshot.close()


# -- the backup file -----------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupManifest:
    header: SnapshotHeader
    records: int
    sha256: str
    created_at: int
    node: str
    keys: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": BACKUP_FORMAT, **{k: v for k, v in self.header.to_json().items() if k != "format"},
                "records": self.records, "sha256": self.sha256, "created_at": self.created_at,
                "node": self.node, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, d: Any) -> BackupManifest:
        if not isinstance(d, dict) or d.get("format") != BACKUP_FORMAT:
            raise InvalidInput(f"not a chainshare backup (expected a manifest of format {BACKUP_FORMAT})")
        header = SnapshotHeader.from_json({**d, "format": SNAPSHOT_FORMAT})
        try:
            return cls(header, int(d["records"]), str(d["sha256"]), int(d["created_at"]), str(d["node"]),
                       tuple(str(k) for k in d["keys"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"backup manifest is malformed: {exc}") from exc


def read_snapshot_stream(chunks: Iterable[bytes], on_record: Callable[[bytes, bytes], None],
                         sink: IO[bytes] | None = None) -> tuple[SnapshotHeader, int, str]:
    """Parse a snapshot stream, calling ``on_record`` for each record (and copying the raw bytes to
    ``sink``); returns the header, the record count and the stream's SHA-256. Raises InvalidInput
    on a malformed or truncated stream (no trailer, or a count that differs from the trailer's)."""
    unpacker = msgpack.Unpacker(use_list=True, raw=False, max_buffer_size=2 * MAX_VALUE_BYTES,
                                max_bin_len=MAX_VALUE_BYTES, max_str_len=MAX_KEY_BYTES, max_map_len=64,
                                max_array_len=2)
    digest = hashlib.sha256()
    header: SnapshotHeader | None = None
    count = 0
    ended = False
    for chunk in chunks:
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        unpacker.feed(chunk)
        try:
            for obj in unpacker:
                if ended:
                    raise InvalidInput("snapshot stream has data after its trailer")
                if header is None:
                    header = SnapshotHeader.from_json(obj)
                elif isinstance(obj, dict):
                    if obj.get("end") is not True or obj.get("records") != count:
                        raise InvalidInput(f"snapshot trailer says {obj.get('records')} records, the stream had "
                                           f"{count}")
                    ended = True
                elif (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], bytes)
                      and isinstance(obj[1], bytes) and len(obj[0]) <= MAX_KEY_BYTES):
                    on_record(obj[0], obj[1])
                    count += 1
                else:
                    raise InvalidInput("snapshot stream holds a record that is not [key, value] bytes")
        except (msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError, msgpack.exceptions.StackError,
                ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"snapshot stream is malformed: {exc}") from exc
    if header is None or not ended:
        raise InvalidInput("snapshot stream is truncated (no trailer): the backup did not complete")
    return header, count, "0x" + digest.hexdigest()


def write_backup_file(out: Path, chunks: Iterable[bytes], node_name: str,
                      key_files: dict[str, Path] | None = None) -> BackupManifest:
    """Write the backup file ``out`` (gzip tar) from a snapshot stream, checking the stream as it
    arrives; ``key_files`` (archive name -> path) are added under ``keys/``. Written to a temporary
    file first, then renamed: ``out`` is complete or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_snap = out.with_name(out.name + ".snap.partial")
    tmp_out = out.with_name(out.name + ".partial")
    try:
        with tmp_snap.open("wb") as sink:
            header, count, sha = read_snapshot_stream(chunks, lambda k, v: None, sink)
        keys = tuple(sorted(key_files or {}))
        manifest = BackupManifest(header, count, sha, int(time.time()), node_name, keys)
        with tarfile.open(tmp_out, "w:gz", compresslevel=1) as tar:
            data = json.dumps(manifest.to_json(), indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mtime, info.mode = len(data), manifest.created_at, 0o600
            tar.addfile(info, io.BytesIO(data))
            tar.add(tmp_snap, arcname="ledger.snap", filter=_private)
            for name in keys:
                tar.add((key_files or {})[name], arcname=f"keys/{name}", filter=_private)
        with tmp_out.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_out, 0o600)
        tmp_out.replace(out)
        return manifest
    finally:
        tmp_snap.unlink(missing_ok=True)
        tmp_out.unlink(missing_ok=True)


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    return info


def read_backup_manifest(path: Path) -> BackupManifest:
    """The manifest of the backup file ``path`` (InvalidInput if it is not one)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise InvalidInput(f"{path} is not a chainshare backup (no manifest.json)")
            return BackupManifest.from_json(json.loads(member.read(1024 * 1024)))
    except FileNotFoundError as exc:
        raise InvalidInput(f"backup file {path} does not exist") from exc
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"{path} is not a readable chainshare backup: {exc}") from exc


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    manifest: BackupManifest
    keys_written: tuple[Path, ...]


def restore_backup(path: Path, data_dir: Path, *, keys_dir: Path | None = None,
                   expect_chain: tuple[int, bytes] | None = None) -> RestoreResult:
    """Rebuild ``data_dir`` (which must not exist or be empty) from the backup file ``path``;
    ``expect_chain`` (chain id, genesis hash) refuses a backup of another network; ``keys_dir``
    receives the backup's keys, if it has any. The result holds the head the backup had; the node
    started on it verifies its store and catches up from its peers."""
    manifest = read_backup_manifest(path)
    if expect_chain is not None:
        chain_id, genesis_hash = expect_chain
        if manifest.header.chain_id != chain_id or manifest.header.genesis_hash != "0x" + genesis_hash.hex():
            raise ConfigError(f"the backup is of chain {manifest.header.chain_id} (genesis "
                              f"{manifest.header.genesis_hash}), the configuration's genesis is of chain {chain_id} "
                              f"(0x{genesis_hash.hex()}): restore it for the network it came from")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidInput(f"{data_dir} exists and is not empty: restore into a new directory (move the old one "
                           "aside first)")
    staging = data_dir.with_name(data_dir.name + ".restoring")
    if staging.exists():
        shutil.rmtree(staging)
    store = LevelDBStore(staging)
    try:
        puts: dict[bytes, bytes] = {}

        def on_record(k: bytes, v: bytes) -> None:
            puts[k] = v
            if len(puts) >= _RESTORE_BATCH:
                store.write_batch(dict(puts), sync=False)
                puts.clear()

        with tarfile.open(path, "r:gz") as tar:
            snap = tar.extractfile("ledger.snap")
            if snap is None:
                raise InvalidInput(f"{path} has no ledger.snap")
            try:
                header, count, sha = read_snapshot_stream(iter(lambda: snap.read(_CHUNK), b""), on_record)
            except InvalidInput as exc:
                raise InvalidInput(f"{path} is damaged: {exc.message}") from exc
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise InvalidInput(f"{path} is damaged: {exc}") from exc
        store.write_batch(puts, sync=True)
        if (count, sha) != (manifest.records, manifest.sha256) or header != manifest.header:
            raise InvalidInput(f"{path} is damaged: its ledger does not match its manifest ({count} records, "
                               f"sha256 {sha}; manifest: {manifest.records}, {manifest.sha256})")
        chain = ChainStore(store)
        if chain.head_height != header.head_height or "0x" + chain.get_head().hash.hex() != header.head_hash:
            raise InvalidInput(f"{path} is damaged: its head is not block {header.head_height}")
        if header.head_height > 0 and chain.get_finality_proof() is None and chain.get_qc(header.head_height) is None:
            raise InvalidInput(f"{path} holds no certificate for its head block")
    except BaseException:
        store.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    store.close()
    if data_dir.exists():
        data_dir.rmdir()
    staging.replace(data_dir)
    written: list[Path] = []
    if keys_dir is not None and manifest.keys:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tarfile.open(path, "r:gz") as tar:
            for name in manifest.keys:
                member = tar.extractfile(f"keys/{name}")
                if member is None or "/" in name or name.startswith("."):
                    raise InvalidInput(f"{path}: key entry {name!r} is missing or not a plain file name")
                target = keys_dir / name
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(member, f)
                written.append(target)
    return RestoreResult(data_dir, manifest, tuple(written))
