"""Operator endpoints of the node's HTTP port, served to loopback clients only.

``GET /admin/backup`` streams a consistent snapshot of the node's ledger (chainshare/ops/backup.py)
while the node keeps running: one LevelDB snapshot, read on its own thread, so consensus and the API
go on. Only a client on the node's own machine may call it (the connection's peer address, never a
forwarded header): ledger data is the consortium's, not the public's, and a snapshot costs a full
read of the store. Key files are never in it (the CLI adds them from disk when asked).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from chainshare.logs import log_event
from chainshare.ops.backup import SNAPSHOT_MEDIA_TYPE, LevelDBSnapshot, iter_snapshot_stream

log = logging.getLogger("chainshare.api.admin")
ADMIN_PATHS = frozenset({"/admin/backup"})


def is_loopback_client(scope: dict[str, Any]) -> bool:
    """True iff the connection comes from this machine (127.0.0.0/8 or ::1)."""
    peer = scope.get("client")
    if not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False


async def serve_admin(node: Any, scope: dict[str, Any], send: Any) -> None:
    """Answer an ``ADMIN_PATHS`` request (403 for a remote client, 405 for a wrong method)."""

    async def respond(status: int, kind: str, message: str) -> None:
        body = orjson.dumps({"error": {"type": kind, "message": message}})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    if not is_loopback_client(scope):
        await respond(403, "Unauthorized", "operator endpoints answer loopback clients only: run the command on "
                      "the node's machine (or inside its container)")
        return
    if scope["method"] != "GET":
        await respond(405, "InvalidInput", f"{scope['path']} takes GET")
        return
    store = node.chain.store
    if not hasattr(store, "snapshot"):
        await respond(409, "InvalidInput", "this node's store cannot take snapshots")
        return
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup")
    snapshot = LevelDBSnapshot(store)  # taken now, on the loop: the point in time of the backup
    stream = iter_snapshot_stream(snapshot)
    sent = 0
    try:
        first = await loop.run_in_executor(executor, next, stream, None)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", SNAPSHOT_MEDIA_TYPE.encode()), (b"cache-control", b"no-store")]})
        chunk = first
        while chunk is not None:
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            chunk = await loop.run_in_executor(executor, next, stream, None)
        await send({"type": "http.response.body", "body": b""})
        log_event(log, logging.INFO, "backup snapshot served", bytes=sent, head=node.chain.head_height)
    finally:
        await loop.run_in_executor(executor, stream.close)
        await loop.run_in_executor(executor, snapshot.close)
        executor.shutdown(wait=False)
