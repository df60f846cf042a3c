"""Websocket JSON-RPC on the node's API port (``ws://host:port/``): every method of the HTTP
dispatcher, plus ``eth_subscribe("newHeads")``, ``eth_subscribe("logs", {address, topics})`` and
``eth_unsubscribe(id)``, notified in the standard ``eth_subscription`` format.

Guarantees:
- only finalized blocks are published (the chain stores no other), and each subscription sees every
  block finalized after it was made exactly once, in height order; a block's logs follow in log-index
  order. A ``newHeads`` result is the Ethereum header fields of ``eth_getBlockByNumber``'s block (same
  values; round and QC are read with eth_getBlockByNumber or REST); a ``logs`` result is an
  ``eth_getLogs`` entry (``removed`` is always false: no reorgs).
- publishing never waits on a client: each result of a block is encoded once, then one frame per
  notification is appended to its connection's bounded send queue, at most PUBLISH_BUDGET per event-loop
  turn. A connection whose queue overflows is closed with 1008 and a reason, never buffered
  without bound; its own requests are answered with backpressure instead (the next request is read
  only once its queue is below the limit).
- a frame is answered by the node's one dispatcher (``Answer``: the same as an HTTP body, however the
  API runs it), except eth_subscribe/eth_unsubscribe, which the connection answers itself on the
  event loop (they touch nothing else), also inside a batch.
- bad input gets a JSON-RPC error (-32700/-32600/-32602, -32005 over the subscription limit) and the
  connection stays open; a message over ``ws_max_frame_bytes`` closes it with 1009 (uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from chainshare.api.errors import INVALID_REQUEST, LIMIT_EXCEEDED, rpc_error
from chainshare.api.jsonrpc import JsonRpc, LogFilter, parse_log_filter
from chainshare.api.views import view_block, view_log
from chainshare.errors import ChainshareError, InvalidInput, MethodNotFound
from chainshare.ledger.chain import BlockBundle
from chainshare.ledger.types import Log
from chainshare.logs import log_event

log = logging.getLogger("chainshare.ws")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_POLICY = 1008       # the client broke a limit (its send queue overflowed)
CLOSE_INTERNAL = 1011     # the node could not publish a block: resubscribe and poll the gap
CLOSE_TIMEOUT_S = 10.0    # how long a close frame may wait behind a stalled client's unread data
# Notifications queued per event-loop turn: a large block for many subscribers is spread over turns
# (consensus and requests run in between); a connection always gets a block's frames in one go.
PUBLISH_BUDGET = 2_000


class TooManySubscriptions(ChainshareError, RuntimeError):
    """A connection holds ``ws_max_subscriptions`` already: eth_unsubscribe one first."""

    rpc_code = LIMIT_EXCEEDED
    http_status = 413


class ChainReader(Protocol):
    """What the publisher reads: the finalized head and a finalized block with its receipts."""

    @property
    def head_height(self) -> int: ...

    def get_bundle(self, height: int) -> BlockBundle: ...


@dataclass(frozen=True)
class WsLimits:
    max_connections: int
    max_subscriptions: int
    send_queue_bytes: int
    max_batch: int = 1_000  # a longer batch goes whole to the dispatcher, which refuses it


# -- subscriptions: parsed once, matched per block ------------------------------------------

@dataclass(frozen=True)
class NewHeads:
    pass


Subscription = NewHeads | LogFilter


def parse_subscription(params: list[Any]) -> Subscription:
    """The subscription ``eth_subscribe`` params ask for; InvalidInput (-32602) says what is wrong."""
    if not params or not isinstance(params[0], str):
        raise InvalidInput('eth_subscribe needs a subscription name: "newHeads" or "logs"')
    kind = params[0]
    if kind == "newHeads":
        if len(params) > 1:
            raise InvalidInput('"newHeads" takes no further parameters')
        return NewHeads()
    if kind == "logs":
        if len(params) > 2:
            raise InvalidInput('"logs" takes one filter object {address, topics}')
        f = params[1] if len(params) > 1 and params[1] is not None else {}
        if not isinstance(f, dict):
            raise InvalidInput('the "logs" filter must be a JSON object {address, topics}')
        unknown = sorted(set(f) - {"address", "topics"})
        if unknown:
            # fromBlock/toBlock/blockHash select history: that is eth_getLogs, not a subscription
            raise InvalidInput(f'the "logs" filter takes only address and topics, not {", ".join(unknown)[:100]}')
        return parse_log_filter(f)
    raise InvalidInput(f'unsupported subscription {kind[:64]!r}: this node offers "newHeads" and "logs"')


# The Ethereum header fields of eth_getBlockByNumber's block (not its body, nor chainshare's round and
# validator-set extensions): exactly what web3.py recognises as a header and formats (it guesses by keys).
HEAD_FIELDS = ("number", "hash", "parentHash", "nonce", "sha3Uncles", "logsBloom", "transactionsRoot", "stateRoot",
               "receiptsRoot", "miner", "difficulty", "totalDifficulty", "extraData", "size", "gasLimit", "gasUsed",
               "timestamp", "baseFeePerGas", "mixHash")


def compute_head_view(bundle: BlockBundle, chain_id: int) -> dict[str, Any]:
    """The ``newHeads`` result: the HEAD_FIELDS of eth_getBlockByNumber's block, same values."""
    view = view_block(bundle.block, chain_id, False, bundle.tx_hashes)
    return {k: view[k] for k in HEAD_FIELDS}


class BlockNotifications:
    """What one finalized block tells subscribers; each result is encoded at most once, on first use."""

    def __init__(self, bundle: BlockBundle, chain_id: int) -> None:
        self.bundle = bundle
        self.height = bundle.block.height
        self.chain_id = chain_id
        self._head_json: str | None = None
        self._logs: list[tuple[Log, int, int]] | None = None  # (log, tx index, log index) in log-index order
        self._by_address: dict[bytes, list[int]] = {}
        self._log_json: dict[int, str] = {}

    def get_head_json(self) -> str:
        if self._head_json is None:
            self._head_json = _encode(compute_head_view(self.bundle, self.chain_id))
        return self._head_json

    def get_matching_logs(self, f: LogFilter) -> Iterator[str]:
        """The encoded eth_getLogs entries ``f`` matches, in log-index order."""
        logs = self._get_logs()
        if f.addresses:  # only the logs of those addresses are looked at
            candidates: Iterable[int] = sorted(i for a in f.addresses for i in self._by_address.get(a, ()))
        else:
            candidates = range(len(logs))
        for i in candidates:
            if f.is_match(logs[i][0]):
                yield self._get_log_json(i)

    def publish_to(self, conn: WsConnection) -> int:
        """Queue this block's notifications for ``conn``'s subscriptions; returns how many."""
        sent = 0
        for sid, sub in list(conn.subscriptions.items()):
            if isinstance(sub, NewHeads):
                conn.push_notification(encode_notification(sid, self.get_head_json()))
                sent += 1
            else:
                for log_json in self.get_matching_logs(sub):
                    conn.push_notification(encode_notification(sid, log_json))
                    sent += 1
            if conn.done.is_set():
                break  # closed for overflow: nothing more for it
        return sent

    def _get_logs(self) -> list[tuple[Log, int, int]]:
        if self._logs is None:
            b = self.bundle
            self._logs = [(lg, ti, b.first_log_index[ti] + j)
                          for ti, receipt in enumerate(b.receipts) for j, lg in enumerate(receipt.logs)]
            for i, (lg, _, _) in enumerate(self._logs):
                self._by_address.setdefault(lg.address, []).append(i)
        return self._logs

    def _get_log_json(self, i: int) -> str:
        out = self._log_json.get(i)
        if out is None:
            lg, ti, log_index = self._get_logs()[i]
            b = self.bundle
            out = self._log_json[i] = _encode(view_log(lg, b.block, b.tx_hashes[ti], ti, log_index))
        return out


def encode_notification(subscription_id: str, result_json: str) -> str:
    """An ``eth_subscription`` notification around an already encoded result."""
    return ('{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
            + subscription_id + '","result":' + result_json + "}}")


def _encode(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# -- one websocket connection -----------------------------------------------------------------

# Answers a JSON-RPC body (request or batch) that holds no subscription request: the node's one
# dispatcher, however the API runs it (on the loop, or on worker threads under budgets).
Answer = Callable[[bytes], Awaitable[bytes | None]]
SUBSCRIPTION_METHODS = frozenset({"eth_subscribe", "eth_unsubscribe"})


class WsConnection:
    """A connection's subscriptions and its bounded send queue (frames go out in queue order)."""

    def __init__(self, hub: SubscriptionHub, limits: WsLimits) -> None:
        self.hub = hub
        self.limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self.close_code: int | None = None   # set when the node closes the connection
        self.close_reason = ""
        self.done = asyncio.Event()
        self._queue: deque[str] = deque()
        self._queued = 0
        self._ready = asyncio.Event()        # the queue has frames
        self._room = asyncio.Event()         # the queue is below its limit
        self._room.set()

    # -- what the node sends ----------------------------------------------------------------
    def push_notification(self, frame: str) -> None:
        """Queue a notification; past the queue limit the connection is closed instead (1008)."""
        if self.done.is_set():
            return
        if self._queued + len(frame) > self.limits.send_queue_bytes:
            self.hub.stats["slow_consumers"] += 1
            self.close(CLOSE_POLICY, f"subscriber too slow: send queue over {self.limits.send_queue_bytes} bytes")
            return
        self._push(frame)

    def push_response(self, frame: str) -> None:
        """Queue a response; the reader waits for room before the next request (backpressure)."""
        if not self.done.is_set():
            self._push(frame)

    def _push(self, frame: str) -> None:
        self._queue.append(frame)
        self._queued += len(frame)
        self._ready.set()
        if self._queued >= self.limits.send_queue_bytes:
            self._room.clear()

    def close(self, code: int, reason: str) -> None:
        """Stop this connection: subscriptions end, queued frames are dropped, the close frame follows."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason[:120]  # a close reason fits in 123 bytes
        self.subscriptions.clear()
        self._queue.clear()
        self._queued = 0
        self.done.set()

    # -- the two loops of a connection ------------------------------------------------------------
    async def write_loop(self, send: Send) -> None:
        while True:
            await self._ready.wait()
            while self._queue:
                frame = self._queue.popleft()
                self._queued -= len(frame)
                if self._queued < self.limits.send_queue_bytes:
                    self._room.set()
                await send({"type": "websocket.send", "text": frame})
            self._ready.clear()

    async def read_loop(self, receive: Receive, answer: Answer) -> None:
        """Answer the client's frames one at a time, in order (a frame is read only when the send
        queue has room)."""
        while True:
            await self._room.wait()
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                self.done.set()
                return
            if msg["type"] != "websocket.receive":
                continue
            body = msg.get("bytes")
            if body is None:
                body = (msg.get("text") or "").encode()
            out = await self.answer_frame(body, answer)
            if out is not None:
                self.push_response(out.decode())

    async def answer_frame(self, body: bytes, answer: Answer) -> bytes | None:
        """The response to one frame: subscription requests are answered here, on the event loop (they
        only touch this connection), everything else by ``answer``; a batch may mix both."""
        if b"eth_subscribe" not in body and b"eth_unsubscribe" not in body:
            return await answer(body)  # the usual frame: not parsed twice
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await answer(body)  # the dispatcher's parse error
        if _is_subscription_request(req):
            resp = self.answer_subscription_request(req)
            return orjson.dumps(resp) if resp is not None else None
        if (not isinstance(req, list) or len(req) > self.limits.max_batch
                or not any(_is_subscription_request(r) for r in req)):
            return await answer(body)
        others = [r for r in req if not _is_subscription_request(r)]
        out = [resp for r in req if _is_subscription_request(r)
               if (resp := self.answer_subscription_request(r)) is not None]
        if others:
            rest = await answer(orjson.dumps(others))
            if rest is not None:
                parsed = orjson.loads(rest)
                out.extend(parsed if isinstance(parsed, list) else [parsed])  # a batch-level error is one object
        return orjson.dumps(out) if out else None

    def answer_subscription_request(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """Answer eth_subscribe / eth_unsubscribe (None for a JSON-RPC notification, which gets no answer)."""
        rid = req.get("id")
        if req.get("jsonrpc") != "2.0" or not (rid is None or (isinstance(rid, (int, str))
                                                                 and not isinstance(rid, bool))):
            return {"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": "invalid request: need jsonrpc '2.0', a method name and an id"}}
        params = req.get("params", [])
        try:
            if not isinstance(params, list):
                raise InvalidInput("params must be an array")
            result: Any = (self.add_subscription(parse_subscription(params)) if req["method"] == "eth_subscribe"
                           else self.remove_subscription(parse_unsubscribe(params)))
        except ChainshareError as exc:
            return None if "id" not in req else {"jsonrpc": "2.0", "id": rid, "error": rpc_error(exc)}
        return None if "id" not in req else {"jsonrpc": "2.0", "id": rid, "result": result}

    # -- the dispatcher's subscription methods -------------------------------------------------
    def add_subscription(self, sub: Subscription) -> str:
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise TooManySubscriptions(f"this connection already has {len(self.subscriptions)} subscriptions, "
                           f"the limit: eth_unsubscribe one first")
        sid = "0x" + secrets.token_hex(16)
        self.subscriptions[sid] = sub
        return sid

    def remove_subscription(self, sid: str) -> bool:
        return self.subscriptions.pop(sid, None) is not None


def _is_subscription_request(req: Any) -> bool:
    return isinstance(req, dict) and req.get("method") in SUBSCRIPTION_METHODS


def parse_unsubscribe(params: list[Any]) -> str:
    """The subscription id of eth_unsubscribe params."""
    if len(params) != 1 or not isinstance(params[0], str) or len(params[0]) > 66:
        raise InvalidInput("eth_unsubscribe takes one subscription id (a hex string from eth_subscribe)")
    return params[0]


def answer_over_http(*params_and_budget: Any) -> Any:
    """eth_subscribe / eth_unsubscribe reaching the HTTP dispatcher: they need a websocket."""
    raise MethodNotFound("eth_subscribe and eth_unsubscribe need a websocket connection: connect to "
                         "ws://<host>:<port>/ (the same port as HTTP JSON-RPC)")


class _PublishJob:
    """One block going out to the connections that had subscriptions when it started."""

    def __init__(self, block: BlockNotifications, connections: list[WsConnection]) -> None:
        self.block = block
        self.pending = connections
        self.sent = 0

    def run(self, budget: int | None) -> bool:
        """Serve whole connections until about ``budget`` notifications are queued; True when done."""
        start = self.sent
        while self.pending and (budget is None or self.sent - start < budget):
            self.sent += self.block.publish_to(self.pending.pop())
        return not self.pending


# -- the hub: finalized blocks in, notifications out ------------------------------------------------

class SubscriptionHub:
    """Publishes each finalized block to the subscriptions of every websocket connection, in order."""

    def __init__(self, chain: ChainReader, chain_id: int, limits: WsLimits) -> None:
        self.chain = chain
        self.chain_id = chain_id
        self.limits = limits
        self.connections: set[WsConnection] = set()
        self.published = chain.head_height  # the last height handed to subscribers
        self.stats = {"connections_total": 0, "rejected": 0, "slow_consumers": 0, "notifications": 0}
        self._scheduled = False
        self._job: _PublishJob | None = None  # the block being published, if it takes several turns

    # -- input: the node finalized blocks --------------------------------------------------------
    def on_finalized(self) -> None:
        """Called on the event loop after blocks were committed: publish them, a slice per loop turn."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._publish_next)

    def _publish_next(self) -> None:
        self._scheduled = False
        if self._job is None:
            self._job = self._start_next_block()
            if self._job is None:
                return
        if self._job.run(PUBLISH_BUDGET):
            self.stats["notifications"] += self._job.sent
            self.published = self._job.block.height
            self._job = None
        if self._job is not None or self.published < self.chain.head_height:
            self.on_finalized()

    def _start_next_block(self) -> _PublishJob | None:
        head = self.chain.head_height
        if self.published >= head:
            return None
        listening = [c for c in self.connections if c.subscriptions]
        if not listening:
            self.published = head  # nobody listens: nothing to encode
            return None
        height = self.published + 1
        try:
            bundle = self.chain.get_bundle(height)
        except Exception:
            # Never skip a block silently: subscribers are told to resubscribe (and fill the gap).
            log.exception("could not read block %d for websocket subscribers", height)
            for conn in listening:
                conn.close(CLOSE_INTERNAL, f"node could not publish block {height}: resubscribe")
            self.published = height
            return None
        return _PublishJob(BlockNotifications(bundle, self.chain_id), listening)

    def publish_block(self, bundle: BlockBundle) -> None:
        """Queue ``bundle``'s notifications for every subscription at once (each result encoded once)."""
        job = _PublishJob(BlockNotifications(bundle, self.chain_id), list(self.connections))
        job.run(None)
        self.stats["notifications"] += job.sent

    # -- the ASGI endpoint -------------------------------------------------------------------------------
    async def serve(self, scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
        """Run one websocket connection until the client leaves or the node closes it; ``answer``
        answers its JSON-RPC frames (every method but the subscription ones)."""
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        if scope["path"] != "/":
            await _reject(scope, send, 404, "websocket JSON-RPC is served at / (ws://host:port/)")
            return
        if len(self.connections) >= self.limits.max_connections:
            self.stats["rejected"] += 1
            await _reject(scope, send, 503, "this node serves no websocket ([api] ws_max_connections = 0): poll over HTTP"
                          if not self.limits.max_connections else
                          f"too many websocket connections (limit {self.limits.max_connections}); "
                          "retry later or poll over HTTP")
            return
        conn = WsConnection(self, self.limits)
        self.connections.add(conn)  # before the first await: concurrent handshakes see the slot taken
        try:
            await send({"type": "websocket.accept"})
        except BaseException:
            self.connections.discard(conn)
            raise
        self.stats["connections_total"] += 1
        reader = asyncio.create_task(conn.read_loop(receive, answer))
        writer = asyncio.create_task(conn.write_loop(send))
        reader.add_done_callback(lambda _: conn.done.set())
        writer.add_done_callback(lambda _: conn.done.set())  # the client is gone (send raised)
        try:
            await conn.done.wait()
        finally:
            self.connections.discard(conn)
            conn.subscriptions.clear()
            reader.cancel()
            writer.cancel()
            failure, _ = await asyncio.gather(reader, writer, return_exceptions=True)
        if isinstance(failure, Exception):  # a bug, not the client: log it, tell the client
            log.error("websocket connection failed", exc_info=failure)
            conn.close(CLOSE_INTERNAL, "internal error")
        if conn.close_code is not None:
            log_event(log, logging.INFO, "websocket closed by the node", code=conn.close_code,
                      reason=conn.close_reason)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send({"type": "websocket.close", "code": conn.close_code,
                                             "reason": conn.close_reason}), CLOSE_TIMEOUT_S)

    # -- metrics ----------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("chainshare_ws_connections", "Open websocket connections",
                                value=len(self.connections))
        yield GaugeMetricFamily("chainshare_ws_subscriptions", "Active eth_subscribe subscriptions",
                                value=sum(len(c.subscriptions) for c in self.connections))
        yield CounterMetricFamily("chainshare_ws_connections_accepted", "Websocket connections accepted since start",
                                  value=self.stats["connections_total"])
        yield CounterMetricFamily("chainshare_ws_connections_rejected", "Websocket connections refused (limit)",
                                  value=self.stats["rejected"])
        yield CounterMetricFamily("chainshare_ws_slow_consumers", "Connections closed for overflowing their queue",
                                  value=self.stats["slow_consumers"])
        yield CounterMetricFamily("chainshare_ws_notifications", "eth_subscription notifications queued",
                                  value=self.stats["notifications"])


async def _reject(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse a handshake with an HTTP status and a JSON reason (403 without uvicorn's extension)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = orjson.dumps({"error": {"type": "WebsocketRefused", "message": message}})
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": message[:120]})


def attach_subscriptions(rpc: JsonRpc, node: Any) -> SubscriptionHub:
    """Make the hub of ``node``: it hears of finalized blocks; over HTTP the dispatcher answers
    eth_subscribe and eth_unsubscribe with -32601 (a websocket connection answers them itself)."""
    api = node.cfg.api
    hub = SubscriptionHub(node.chain, node.chain_id,
                          WsLimits(api.ws_max_connections, api.ws_max_subscriptions, api.ws_send_queue_bytes,
                                   api.max_batch))
    node.finalized_listeners.append(hub.on_finalized)
    for method in SUBSCRIPTION_METHODS:
        rpc.methods[method] = answer_over_http
    return hub
