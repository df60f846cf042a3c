"""The node's one HTTP port: JSON-RPC at ``POST /``, REST under ``/api/v1``, ``/healthz``, ``/metrics``.

A thin ASGI router keeps the JSON-RPC hot path free of framework overhead; bodies are read with
a hard size limit (413 beyond it) before anything parses them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from chainshare.api.jsonrpc import JsonRpc
from chainshare.api.rest import create_rest_app
from chainshare.api.sharing import collect_sharing_metrics
from chainshare.node import Node

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


# Routes that stream large request bodies themselves (with their own size limit).
STREAMING_PATHS = frozenset({"/api/v1/vault"})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands over an already-read body once, then waits for disconnect."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _NodeCollector:
    """Prometheus view of the node, read at scrape time: gauges for levels, counters (``*_total``)
    for what only grows while the process runs, and the consensus replica's figures when it has one."""

    def __init__(self, node: Node, rpc: JsonRpc) -> None:
        self.node = node
        self.rpc = rpc

    def collect(self) -> Iterator[Any]:
        node, stats = self.node, self.node.stats
        yield GaugeMetricFamily("chainshare_head_height", "Height of the latest finalized block",
                                value=node.chain.head_height)
        yield GaugeMetricFamily("chainshare_mempool_transactions", "Transactions waiting in the mempool",
                                value=len(node.mempool))
        yield GaugeMetricFamily("chainshare_uptime_seconds", "Seconds since the node started",
                                value=time.time() - node.started_at)
        yield GaugeMetricFamily("chainshare_last_block_build_ms", "Time to build and commit the last block",
                                value=stats["last_block_ms"])
        yield CounterMetricFamily("chainshare_blocks_produced", "Blocks this node produced since start",
                                  value=stats["blocks"])
        yield CounterMetricFamily("chainshare_transactions_finalized", "Transactions finalized since start",
                                  value=stats["txs"])
        yield CounterMetricFamily("chainshare_transactions_rejected", "Transactions refused at admission",
                                  value=stats["rejected"])
        yield CounterMetricFamily("chainshare_rpc_errors", "JSON-RPC requests answered with an error",
                                  value=self.rpc.error_count)
        calls = CounterMetricFamily("chainshare_rpc_requests", "JSON-RPC requests by method", labels=["method"])
        for method, count in list(self.rpc.counts.items()):
            calls.add_metric([method], count)
        yield calls
        replica = node.replica
        if replica is not None:
            rs = replica.stats
            yield GaugeMetricFamily("chainshare_validator_set_epoch", "Epoch of the validator set in force",
                                    value=rs["epoch"])
            for key, what in (("commits", "Blocks finalized by consensus"), ("timeouts", "Local view timeouts"),
                              ("synced_blocks", "Blocks fetched by block sync"),
                              ("evidence", "Equivocations caught"),
                              ("invalid_blocks", "Proposals that failed re-execution")):
                yield CounterMetricFamily(f"chainshare_consensus_{key}", f"{what} since start", value=rs[key])
        yield from collect_sharing_metrics(node)


def _metrics_registry(node: Node, rpc: JsonRpc) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(_NodeCollector(node, rpc))
    return reg


def create_app(node: Node) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    rpc = JsonRpc(node, node.cfg.api.max_batch)
    rest = create_rest_app(node, rpc)
    registry = _metrics_registry(node, rpc)
    limit = node.cfg.api.max_body_bytes

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await hub.serve(scope, receive, send, answer_ws)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/":
            if method != "POST":
                await _respond(send, 405, b'{"error":"JSON-RPC takes POST /"}')
                return
            try:
                body = await _read_body(receive, limit)
            except BodyTooLarge:
                await _respond(send, 413, orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32600, "message": f"request body exceeds {limit} bytes"}}))
                return
            except ConnectionResetError:
                return
            out = rpc.handle_body(body)
            await _respond(send, 200, out if out is not None else b"")
            return
        if path == "/healthz":
            await _respond(send, 200, orjson.dumps({"status": "ok", "head": node.chain.head_height}))
            return
        if path == "/metrics":
            await _respond(send, 200, generate_latest(registry), b"text/plain; version=0.0.4")
            return
        if path == "/api/v1" or path.startswith("/api/v1/"):
            too_large = b'{"error":{"type":"InvalidInput","message":"request body too large"}}'
            try:
                declared = int(dict(scope.get("headers", [])).get(b"content-length", b"0") or 0)
            except ValueError:
                await _respond(send, 400, b'{"error":{"type":"InvalidInput","message":"bad content-length"}}')
                return
            sub = dict(scope)
            sub["root_path"] = scope.get("root_path", "") + "/api/v1"
            if path in STREAMING_PATHS:
                await rest(sub, receive, send)  # type: ignore[arg-type]  # enforces its own limit
                return
            if declared > limit:
                await _respond(send, 413, too_large)
                return
            try:
                body = await _read_body(receive, limit)  # chunked bodies have no content-length
            except BodyTooLarge:
                await _respond(send, 413, too_large)
                return
            except ConnectionResetError:
                return
            await rest(sub, _replay(body, receive), send)  # type: ignore[arg-type]
            return
        await _respond(send, 404, b'{"error":{"type":"NotFound","message":"no such endpoint"}}')

    # JSON-RPC over a websocket at ws://host:port/ with eth_subscribe (api/subscriptions.py)
    from chainshare.api.subscriptions import attach_subscriptions

    hub = attach_subscriptions(rpc, node)
    registry.register(hub)  # ws_* metrics

    async def answer_ws(body: bytes) -> bytes | None:
        """A websocket frame is answered as an HTTP JSON-RPC body is."""
        return rpc.handle_body(body)

    return app
