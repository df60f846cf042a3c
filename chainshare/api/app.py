"""The node's one HTTP port: JSON-RPC at ``POST /``, REST under ``/api/v1``, ``/healthz``, ``/metrics``.

A thin ASGI router keeps the JSON-RPC hot path free of framework overhead; bodies are read with
a hard size limit (413 beyond it) before anything parses them.

The event loop that serves this port also runs consensus, so API work does not run on it: JSON-RPC
bodies and REST reads run on the API worker threads (``ApiWorkers``), under work budgets, and each
client (remote address) has a token bucket of API CPU time; a client over it gets HTTP 429 with
JSON-RPC -32005 (or a REST error body) and Retry-After. Only cheap single requests (chain id, block
number, nonce, sending a transaction) are answered on the loop itself.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, GCCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from chainshare.api.admin import ADMIN_PATHS, serve_admin
from chainshare.api.errors import http_error, rpc_error
from chainshare.api.jsonrpc import JsonRpc
from chainshare.api.limits import ApiLimits, ApiWorkers, ClientLimiter, Usage, current_usage
from chainshare.api.rest import create_rest_app
from chainshare.api.sharing import collect_sharing_metrics
from chainshare.errors import RateLimited
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


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json",
                   extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})


# A JSON-RPC body this small is parsed on the loop, so a cheap single request skips the thread hop.
INLINE_PARSE_BYTES = 16 * 1024


def compute_client_id(scope: Scope, trusted_proxies: frozenset[str]) -> str:
    """The client a request is charged to: its remote address, or, from a trusted reverse proxy, the
    last address of X-Forwarded-For (the one that proxy saw)."""
    peer = scope.get("client")
    host: str = str(peer[0]) if peer else "unknown"
    if host in trusted_proxies:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                last = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                if last:
                    return str(last[:64])
    return host


def _retry_after(exc: RateLimited) -> tuple[tuple[bytes, bytes], ...]:
    wait = exc.data.get("retryAfter", 1) if isinstance(exc.data, dict) else 1
    return ((b"retry-after", str(max(1, int(wait + 0.999))).encode()),)


class _NodeCollector:
    """Prometheus view of the node, read at scrape time: gauges for levels, counters (``*_total``)
    for what only grows while the process runs, and the consensus replica's figures when it has one."""

    def __init__(self, node: Node, rpc: JsonRpc, clients: ClientLimiter, workers: tuple[ApiWorkers, ...]) -> None:
        self.node = node
        self.rpc = rpc
        self.clients = clients
        self.workers = workers

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
        refused = CounterMetricFamily("chainshare_api_refused", "API requests refused by a per-client limit or "
                                      "because the API workers were busy", labels=["limit"])
        for limit, count in list(self.clients.refused.items()):
            refused.add_metric([limit], count)
        refused.add_metric(["max_queued"], sum(w.busy_refusals for w in self.workers))
        yield refused
        yield GaugeMetricFamily("chainshare_gc_frozen_objects", "Objects moved out of the garbage collector's reach "
                                "when the node had started (chainshare.gcpolicy)", value=gc.get_freeze_count())
        yield GaugeMetricFamily("chainshare_api_queued", "API jobs running or waiting on the API worker threads",
                                value=sum(w.pending for w in self.workers))
        replica = node.replica
        if replica is not None:
            rs = replica.stats
            yield GaugeMetricFamily("chainshare_validator_set_epoch", "Epoch of the validator set in force",
                                    value=rs["epoch"])
            for key, what in (("commits", "Blocks finalized by consensus"), ("timeouts", "Local view timeouts"),
                              ("synced_blocks", "Blocks fetched by block sync"),
                              ("evidence", "Equivocations caught"),
                              ("invalid_blocks", "Proposals that failed re-execution"),
                              ("failed_checks", "Consensus signatures and certificates that failed to verify"),
                              ("muted_messages", "Consensus messages dropped unverified: their peer was over "
                               "its budget of failed checks")):
                yield CounterMetricFamily(f"chainshare_consensus_{key}", f"{what} since start", value=rs[key])
            yield from _p2p_metrics(replica.transport.get_metrics())
        yield from collect_sharing_metrics(node)


def _p2p_metrics(figures: dict[str, int | dict[str, int]]) -> Iterator[Any]:
    """The P2P transport's figures (``P2PNode.get_metrics``): levels as gauges, the rest as counters,
    disconnects by reason."""
    for key, value in figures.items():
        if isinstance(value, dict):
            by_reason = CounterMetricFamily(f"chainshare_p2p_{key}", f"P2P {key} since start, by reason",
                                            labels=["reason"])
            for reason, count in value.items():
                by_reason.add_metric([reason], count)
            yield by_reason
        elif key in ("peers", "connections"):
            yield GaugeMetricFamily(f"chainshare_p2p_{key}", f"P2P {key} now (peers: authenticated and connected)", value=value)
        else:
            yield CounterMetricFamily(f"chainshare_p2p_{key}", f"P2P {key.replace('_', ' ')} since start",
                                      value=value)


def _metrics_registry(node: Node, rpc: JsonRpc, clients: ClientLimiter,
                      workers: tuple[ApiWorkers, ...]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(_NodeCollector(node, rpc, clients, workers))
    GCCollector(registry=reg)  # python_gc_collections_total / python_gc_objects_collected_total by generation
    return reg


def create_app(node: Node) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    api = node.cfg.api
    rpc = JsonRpc(node, ApiLimits.from_config(api))
    workers = ApiWorkers(api.workers, api.max_queued, cpu_ms_per_s=api.max_cpu_ms_per_s)
    # Single requests of bounded cost (one block at most) have their own thread, so that they never
    # wait behind batches and range queries.
    light = ApiWorkers(1, api.max_queued, name="api-light")
    clients = ClientLimiter(api.rate_limit_cpu_ms, api.rate_limit_burst_ms, api.max_inflight_per_client)
    trusted_proxies = frozenset(api.trusted_proxies)
    rest = create_rest_app(node, rpc, workers)
    registry = _metrics_registry(node, rpc, clients, (workers, light))
    limit = node.cfg.api.max_body_bytes

    async def answer_jsonrpc(body: bytes) -> bytes | None:
        """Answer a JSON-RPC body: a cheap single request on the loop, anything else on a worker."""
        if len(body) > INLINE_PARSE_BYTES:
            return await workers.run(rpc.handle_body, body)
        t0 = time.thread_time()
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return rpc.handle_body(body)  # the parse error answer
        inline = rpc.is_loop_request(req)
        out = rpc.handle_parsed(req) if inline else None
        usage = current_usage.get()
        if usage is not None:
            usage.cpu_ms += (time.thread_time() - t0) * 1000
        if inline:
            return out
        return await (light if rpc.is_light_request(req) else workers).run(rpc.handle_parsed, req)

    async def admitted(scope: Scope, send: Send, on_refused: Callable[[RateLimited], bytes],
                       serve: Callable[[], Awaitable[None]]) -> None:
        """Run ``serve`` charged to the request's client, or answer 429 when the client is over its limits."""
        rpc.bind_loop(asyncio.get_running_loop())
        client = compute_client_id(scope, trusted_proxies)
        try:
            clients.admit(client)
        except RateLimited as exc:
            await _respond(send, 429, on_refused(exc), extra_headers=_retry_after(exc))
            return
        usage = Usage(client)
        token = current_usage.set(usage)
        try:
            await serve()
        except RateLimited as exc:  # every API worker busy
            await _respond(send, 429, on_refused(exc), extra_headers=_retry_after(exc))
        finally:
            current_usage.reset(token)
            clients.release(client, usage.cpu_ms)

    def rpc_refusal(exc: RateLimited) -> bytes:
        return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": rpc_error(exc)})

    def rest_refusal(exc: RateLimited) -> bytes:
        return orjson.dumps(http_error(exc)[1])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await hub.serve(scope, receive, send, lambda body: answer_ws(scope, body))
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

            async def serve_rpc() -> None:
                out = await answer_jsonrpc(body)
                await _respond(send, 200, out if out is not None else b"")

            await admitted(scope, send, rpc_refusal, serve_rpc)
            return
        if path == "/healthz":
            halted = getattr(node, "upgrade_required", None)  # halted before a protocol version it lacks
            if halted is not None:
                await _respond(send, 503, orjson.dumps({**halted.to_json(), "head": node.chain.head_height}))
                return
            await _respond(send, 200, orjson.dumps({"status": "ok", "head": node.chain.head_height}))
            return
        if path == "/metrics":
            await _respond(send, 200, generate_latest(registry), b"text/plain; version=0.0.4")
            return
        if path in ADMIN_PATHS:  # operator endpoints (loopback clients only): api/admin.py
            await serve_admin(node, scope, send)
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
                await admitted(scope, send, rest_refusal,
                               lambda: rest(sub, receive, send))  # type: ignore[arg-type]  # own size limit
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
            await admitted(scope, send, rest_refusal,
                           lambda: rest(sub, _replay(body, receive), send))  # type: ignore[arg-type]
            return
        await _respond(send, 404, b'{"error":{"type":"NotFound","message":"no such endpoint"}}')

    # JSON-RPC over a websocket at ws://host:port/ with eth_subscribe (api/subscriptions.py)
    from chainshare.api.subscriptions import attach_subscriptions

    hub = attach_subscriptions(rpc, node)
    registry.register(hub)  # ws_* metrics

    async def answer_ws(scope: Scope, body: bytes) -> bytes | None:
        """A websocket frame is answered as an HTTP JSON-RPC body is: charged to its client and off the
        consensus loop unless cheap; a client over its limits gets -32005 (with ``retryAfter``) for each
        request of the frame, by id, instead of HTTP 429."""
        rpc.bind_loop(asyncio.get_running_loop())
        client = compute_client_id(scope, trusted_proxies)
        try:
            clients.admit(client)
        except RateLimited as exc:
            return ws_refusal(body, exc)
        usage = Usage(client)
        token = current_usage.set(usage)
        try:
            return await answer_jsonrpc(body)
        except RateLimited as exc:  # every API worker busy
            return ws_refusal(body, exc)
        finally:
            current_usage.reset(token)
            clients.release(client, usage.cpu_ms)

    def ws_refusal(body: bytes, exc: RateLimited) -> bytes:
        error = rpc_error(exc)
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req = None

        def refused(r: Any) -> dict[str, Any]:
            rid = r.get("id") if isinstance(r, dict) else None
            return {"jsonrpc": "2.0", "id": rid if isinstance(rid, (int, str)) else None, "error": error}

        if isinstance(req, list) and 0 < len(req) <= api.max_batch:
            return orjson.dumps([refused(r) for r in req])
        return orjson.dumps(refused(req))

    return app
