"""Backup stream and file (chainshare/ops/backup.py) and the loopback-only admin endpoint: a stream
round-trips record for record, a truncated or altered one is refused, a restore into a used
directory is refused, and a remote client gets 403."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chainkit import account, make_genesis, validator

from chainshare.api.admin import is_loopback_client, serve_admin
from chainshare.errors import InvalidInput
from chainshare.execution.genesis import compute_genesis_block
from chainshare.ledger.chain import K_CHAIN_ID, K_GENESIS, K_HEAD, P_BLOCK
from chainshare.ops.backup import (
    iter_snapshot_stream,
    read_backup_manifest,
    read_snapshot_stream,
    write_backup_file,
)


class FakeSource:
    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records = records

    def get(self, key: bytes) -> bytes | None:
        return self.records.get(key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self.records.items())


def _source_with_genesis() -> FakeSource:
    genesis = make_genesis([("a", [account("a").address])], [validator("v", "a")])
    block0, _, _ = compute_genesis_block(genesis)
    records = {K_HEAD: (0).to_bytes(8, "big"), P_BLOCK + (0).to_bytes(8, "big"): block0.encode(),
               K_CHAIN_ID: genesis.chain_id.to_bytes(8, "big"), K_GENESIS: block0.hash}
    records.update({b"S" + i.to_bytes(4, "big"): bytes([i % 256]) * (i % 300) for i in range(3000)})
    return FakeSource(records)


def test_stream_round_trips_every_record() -> None:
    src = _source_with_genesis()
    got: dict[bytes, bytes] = {}
    header, count, sha = read_snapshot_stream(iter_snapshot_stream(src), got.__setitem__)
    assert got == src.records and count == len(src.records)
    assert header.head_height == 0 and not header.has_finality_proof and sha.startswith("0x")


def test_truncated_stream_is_refused() -> None:
    data = b"".join(iter_snapshot_stream(_source_with_genesis()))
    with pytest.raises(InvalidInput, match="truncated"):
        read_snapshot_stream([data[:-20]], lambda k, v: None)
    with pytest.raises(InvalidInput):
        read_snapshot_stream([b"\x81\xa3foo\x01" + data], lambda k, v: None)


def test_backup_file_and_restore_refusals(tmp_path: Path) -> None:
    from chainshare.ops.backup import restore_backup

    out = tmp_path / "b.backup"
    manifest = write_backup_file(out, iter_snapshot_stream(_source_with_genesis()), "n1")
    assert read_backup_manifest(out) == manifest
    assert not list(tmp_path.glob("*.partial"))
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        restore_backup(out, used)
    with pytest.raises(InvalidInput, match="not a readable chainshare backup"):
        read_backup_manifest(used / "x")
    # a stream cut short never becomes a backup file
    data = b"".join(iter_snapshot_stream(_source_with_genesis()))
    with pytest.raises(InvalidInput, match="truncated"):
        write_backup_file(tmp_path / "cut.backup", [data[: len(data) // 2]], "n1")
    assert not (tmp_path / "cut.backup").exists()


def test_admin_endpoint_refuses_remote_clients() -> None:
    assert is_loopback_client({"client": ("127.0.0.1", 5)}) and is_loopback_client({"client": ("::1", 5)})
    assert not is_loopback_client({"client": ("10.0.0.7", 5)}) and not is_loopback_client({})
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    # X-Forwarded-For never makes a remote connection local
    scope = {"client": ("192.0.2.1", 1), "method": "GET", "path": "/admin/backup",
             "headers": [(b"x-forwarded-for", b"127.0.0.1")]}
    asyncio.run(serve_admin(object(), scope, send))
    assert sent[0]["status"] == 403
