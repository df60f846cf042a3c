"""Ethereum JSON-RPC (single and batch) over a node, as web3.py and ethers expect it.

Hot path: orjson in, plain dicts out, no pydantic. Parameters are validated here and every
problem is an EIP-1474 error object; nothing a client sends can produce an internal error.

Every body runs under a ``WorkBudget`` (blocks loaded, logs returned, call gas, response bytes):
a request or batch past one gets -32005 naming the limit. The app runs bodies on API worker
threads; the methods that touch the mempool or the P2P gossip run on the event loop
(``call_on_loop``), everything else reads finalized data from any thread. A batch's consecutive
``eth_sendRawTransaction`` requests are admitted in one hop to the loop (at most
``MAX_SENDS_PER_HOP``), each answered exactly as if sent alone.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from chainshare.api.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    rpc_error,
)
from chainshare.api.limits import ApiLimits, WorkBudget
from chainshare.api.views import hx, qty, view_block, view_bundle_receipt, view_log, view_transaction
from chainshare.crypto.hashing import keccak256
from chainshare.decimal_text import parse_hex_quantity
from chainshare.errors import ChainshareError, ExecutionReverted, InvalidInput, LimitExceeded, NotFound
from chainshare.execution.genesis import get_chain_params
from chainshare.execution.runtime import get_nonce
from chainshare.ledger.txs import decode_transaction
from chainshare.ledger.types import Log, bloom_contains
from chainshare.node import Node

log = logging.getLogger("chainshare.rpc")
_T = TypeVar("_T")
CODE_PREFIX = bytes.fromhex("60006000fd")  # PUSH1 0 PUSH1 0 REVERT: not EVM code, but never empty
MAX_FILTER_VALUES = 256  # addresses, or alternatives of one topic position, in one log filter
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
# Cheap methods that a single (non-batch) request may run directly on the event loop.
LOOP_METHODS = frozenset({
    "web3_clientVersion", "net_version", "net_listening", "net_peerCount", "eth_chainId", "eth_syncing",
    "eth_mining", "eth_accounts", "eth_blockNumber", "eth_gasPrice", "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction", "eth_getTransactionCount",
})
# Methods whose single request loads at most one block and renders at most one transaction or receipt: run
# on the API's light thread, which has no CPU share (``is_light_request``). Not eth_getBlockReceipts: it does
# the work of up to max_block_txs receipt reads, which as a batch of eth_getTransactionReceipt run on the
# workers under api.max_cpu_ms_per_s; so does it.
LIGHT_METHODS = frozenset({
    "web3_sha3", "eth_getBalance", "eth_getCode", "eth_getStorageAt", "eth_getBlockTransactionCountByNumber",
    "eth_getTransactionByHash", "eth_getTransactionReceipt",
})
# Block reads: light with transaction hashes only. With full transactions (params[1] true) one decodes and
# renders up to max_block_txs transactions, the work of a batch of eth_getTransactionByHash: on the workers.
BLOCK_READ_METHODS = frozenset({"eth_getBlockByNumber", "eth_getBlockByHash"})
# Methods that change the node: their small result is returned even past max_response_bytes (a
# read's result is replaced by -32005 there), so a client always learns what was done.
WRITE_METHODS = frozenset({"eth_sendRawTransaction"})
SEND = "eth_sendRawTransaction"
# handle_parsed encodes a run of sends' answers at once, with no -32005 check: only a write may skip it.
assert SEND in WRITE_METHODS, "a run of sends is encoded as writes: SEND must stay in WRITE_METHODS"
# A batch's consecutive sends are admitted on the event loop in one hop of at most this many (a few
# milliseconds of signature recovery: the loop also runs consensus).
MAX_SENDS_PER_HOP = 64
# Bytes one send's answer takes at most besides its id (a hash, or an admission error): a run of
# sends is cut where the batch's response could fill up, so the same sends run as one by one.
SEND_ANSWER_BOUND = 2048


# -- parameter parsing -------------------------------------------------------------------------

def _param(params: list[Any], i: int, name: str, default: Any = ...) -> Any:
    if i < len(params) and params[i] is not None:
        return params[i]
    if default is ...:
        raise InvalidInput(f"missing parameter {i}: {name}")
    return default


def _param_bool(params: list[Any], i: int, name: str) -> bool:
    """Parameter ``i``, a JSON boolean (false when absent)."""
    value = _param(params, i, name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def parse_reward_percentiles(value: Any) -> list[float]:
    """eth_feeHistory's ``rewardPercentiles``: at most 100 numbers from 0 to 100, in ascending order."""
    if not isinstance(value, list) or len(value) > 100:
        raise InvalidInput("rewardPercentiles must be an array of at most 100 numbers")
    last = 0.0
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not last <= x <= 100:
            raise InvalidInput("rewardPercentiles must be numbers from 0 to 100 in ascending order")
        last = x
    return [float(x) for x in value]


def parse_data(value: Any, name: str, size: int | None = None) -> bytes:
    """``0x`` and hex digits in pairs, nothing else, as bytes (of ``size`` when given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise InvalidInput(f"{name} must be a 0x-prefixed hex string")
    body = value[2:]
    try:
        b = bytes.fromhex(body)
    except ValueError:
        b = b""
    # bytes.fromhex also takes whitespace between the bytes: only a result of one byte per two characters
    # read hex digits alone (one pass over a raw transaction instead of a regular expression's, then fromhex's)
    if 2 * len(b) != len(body):
        if not _HEX_DIGITS.fullmatch(body):
            raise InvalidInput(f"{name} is not valid hex")
        raise InvalidInput(f"{name} has an odd number of hex digits")
    if size is not None and len(b) != size:
        raise InvalidInput(f"{name} must be {size} bytes")
    return b


@dataclass(frozen=True)
class LogFilter:
    """A log filter of eth_getLogs and of a ``logs`` subscription: any of ``addresses`` (empty: any), and
    at each topic position one of the values (None: any)."""

    addresses: frozenset[bytes]
    topics: tuple[frozenset[bytes] | None, ...]

    def is_match(self, lg: Log) -> bool:
        if self.addresses and lg.address not in self.addresses:
            return False
        for i, accepted in enumerate(self.topics):
            if accepted is not None and (i >= len(lg.topics) or lg.topics[i] not in accepted):
                return False
        return True


def parse_log_filter(f: dict[str, Any]) -> LogFilter:
    """``address`` (one or a list) and ``topics`` (per position: null = any, a value, or a list of
    alternatives) as eth_getLogs reads them, each list at most MAX_FILTER_VALUES long."""
    addrs_v = f.get("address")
    if isinstance(addrs_v, list) and len(addrs_v) > MAX_FILTER_VALUES:
        raise InvalidInput(f"address: at most {MAX_FILTER_VALUES} addresses")
    addrs = ([parse_data(a, "address", 20) for a in addrs_v] if isinstance(addrs_v, list)
             else [parse_data(addrs_v, "address", 20)] if addrs_v is not None else [])
    topics_v = f.get("topics")
    topics_v = [] if topics_v is None else topics_v
    if not isinstance(topics_v, list) or len(topics_v) > 4:
        raise InvalidInput("topics must be an array of at most 4 entries")
    topics: list[frozenset[bytes] | None] = []
    for t in topics_v:
        if isinstance(t, list) and len(t) > MAX_FILTER_VALUES:
            raise InvalidInput(f"topics: at most {MAX_FILTER_VALUES} alternatives per position")
        values = t if isinstance(t, list) else [t] if t is not None else []
        topics.append(frozenset(parse_data(x, "topic", 32) for x in values) or None)
    return LogFilter(frozenset(addrs), tuple(topics))


def parse_quantity(value: Any, name: str) -> int:
    """A non-negative integer given as a JSON number or as 0x-prefixed hex digits (at most 64, nothing
    else: ``int(x, 16)`` alone would also take a sign, spaces, underscores and non-ASCII digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66 or len(value) < 3:
        raise InvalidInput(f"{name} must be a 0x-prefixed hex quantity")
    quantity = parse_hex_quantity(value, max_digits=64)
    if quantity is None:
        raise InvalidInput(f"{name} is not a hex quantity: 0x and 1..64 hex digits")
    return quantity


Method = Callable[[list[Any], WorkBudget], Any]


class JsonRpc:
    """Dispatches JSON-RPC requests to a node, each body under a ``WorkBudget`` of ``limits``."""

    def __init__(self, node: Node, limits: ApiLimits | None = None) -> None:
        self.node = node
        self.limits = limits or ApiLimits()
        self.max_batch = self.limits.max_batch
        self._loop: Any = None  # the event loop (set by ``bind_loop``); None: call everything directly
        self._loop_thread = 0
        self._count_lock = threading.Lock()
        self.methods: dict[str, Method] = {
            "web3_clientVersion": lambda p, b: node.client_version,
            "web3_sha3": self.web3_sha3,
            "net_version": lambda p, b: str(node.chain_id),
            "net_listening": lambda p, b: True,
            "net_peerCount": lambda p, b: "0x0",
            "eth_chainId": lambda p, b: qty(node.chain_id),
            "eth_syncing": lambda p, b: False,
            "eth_mining": lambda p, b: False,
            "eth_accounts": lambda p, b: [],
            "eth_blockNumber": lambda p, b: qty(node.chain.head_height),
            "eth_gasPrice": lambda p, b: "0x0",
            "eth_maxPriorityFeePerGas": lambda p, b: "0x0",
            "eth_feeHistory": self.eth_fee_history,
            "eth_getBalance": self.eth_get_balance,
            "eth_getCode": self.eth_get_code,
            "eth_getStorageAt": lambda p, b: "0x" + "00" * 32,
            "eth_getBlockByNumber": self.eth_get_block_by_number,
            "eth_getBlockByHash": self.eth_get_block_by_hash,
            "eth_getBlockTransactionCountByNumber": self.eth_get_block_tx_count_by_number,
            "eth_getTransactionByHash": self.eth_get_transaction_by_hash,
            "eth_getTransactionReceipt": self.eth_get_transaction_receipt,
            "eth_getBlockReceipts": self.eth_get_block_receipts,
            "eth_getTransactionCount": self.eth_get_transaction_count,
            "eth_sendRawTransaction": self.eth_send_raw_transaction,
            "eth_call": self.eth_call,
            "eth_estimateGas": self.eth_estimate_gas,
            "eth_getLogs": self.eth_get_logs,
        }
        self.counts: dict[str, int] = {}
        self.error_count = 0

    # -- threads ---------------------------------------------------------------------------------
    def bind_loop(self, loop: Any) -> None:
        """Run the methods that touch the mempool or P2P gossip on ``loop`` (called from its thread, once)."""
        if self._loop is not None:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def call_on_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the event loop's thread (directly when already there); its result or error."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return fn(*args)
        fut: Future[_T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout=60)

    @staticmethod
    def is_loop_request(req: Any) -> bool:
        """A request answered on the event loop without a thread hop: a single request of a cheap method,
        or a batch of at most ``MAX_SENDS_PER_HOP`` well-formed ``eth_sendRawTransaction`` requests (their
        admission runs on the loop in any case: from a worker it is one hop of the same length).

        Callers also bound the body's size (``INLINE_PARSE_BYTES``), so the loop never parses a large one."""
        if isinstance(req, dict):
            return req.get("method") in LOOP_METHODS
        return isinstance(req, list) and 0 < len(req) <= MAX_SENDS_PER_HOP and all(map(_is_send_request, req))

    @staticmethod
    def is_light_request(req: Any) -> bool:
        """A single request that loads at most one block and renders at most one transaction or receipt (a
        block read only without full transactions): it may run on the light thread, outside the CPU share."""
        if not isinstance(req, dict):
            return False
        method = req.get("method")
        if method in LIGHT_METHODS:
            return True
        if method not in BLOCK_READ_METHODS:
            return False
        params = req.get("params", [])
        # light when fullTransactions is absent, null or false (the hash-only view): not for true, nor for a
        # malformed flag (refused anyway, wherever it runs)
        return isinstance(params, list) and (len(params) < 2 or params[1] is None or params[1] is False)

    # -- transport-level handling ---------------------------------------------------------
    def handle_body(self, body: bytes) -> bytes | None:
        """Handle one HTTP body; returns the response body (None for a batch of notifications)."""
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return orjson.dumps(_error_response(None, PARSE_ERROR, "parse error: body is not valid JSON"))
        return self.handle_parsed(req)

    def handle_parsed(self, req: Any) -> bytes | None:
        """Answer a parsed body (a request or a batch) within one fresh ``WorkBudget``."""
        budget = WorkBudget(self.limits)
        if not isinstance(req, list):
            return self._encode_within(req, self.handle_one(req, budget), budget)
        if not req:
            return orjson.dumps(_error_response(None, INVALID_REQUEST, "empty batch"))
        if len(req) > self.max_batch:
            return orjson.dumps(_error_response(None, LIMIT_EXCEEDED, f"limit exceeded: batch of {len(req)} "
                                                f"requests (api.max_batch = {self.max_batch}); split it"))
        parts: list[bytes] = []
        full: LimitExceeded | None = None
        i = 0
        while i < len(req):
            x = req[i]
            if full is not None:  # the response is full: the rest are refused without running
                rid = x.get("id") if isinstance(x, dict) else None
                if not (isinstance(x, dict) and "id" not in x):
                    parts.append(orjson.dumps({"jsonrpc": "2.0", "id": rid if _valid_id(rid) else None,
                                               "error": rpc_error(full)}))
                i += 1
                continue
            if _is_send_request(x):
                run = self._take_send_run(req, i, budget)  # x and the sends after it
                i += len(run)
                answered = [resp for resp in self._answer_sends(run, budget) if resp is not None]
                if answered:
                    # A write's answer is always kept (never replaced by -32005; SEND is in WRITE_METHODS, as
                    # asserted where it is defined), so the run's answers are encoded at once: the same bytes,
                    # and the same charge (each answer and its comma).
                    encoded = orjson.dumps(answered)
                    budget.charge_response(len(encoded) - 1)
                    parts.append(encoded[1:-1])
            else:
                out = self._encode_within(x, self.handle_one(x, budget), budget)
                if out is not None:
                    parts.append(out)
                i += 1
            if not budget.fits_response(1):
                full = budget.response_full()
        return b"[" + b",".join(parts) + b"]" if parts else None

    def _take_send_run(self, req: list[Any], start: int, budget: WorkBudget) -> list[dict[str, Any]]:
        """The well-formed ``eth_sendRawTransaction`` requests from ``req[start]`` on, consecutive, at
        most ``MAX_SENDS_PER_HOP`` and no more than the response has room for (by ``SEND_ANSWER_BOUND``:
        one by one, the response could not have filled up before any of them). ``req[start]`` is one (the
        caller checks), so the run holds at least it."""
        room = self.limits.max_response_bytes - budget.response_bytes
        run: list[dict[str, Any]] = []
        for x in req[start:start + MAX_SENDS_PER_HOP]:
            if not _is_send_request(x):
                break
            room -= SEND_ANSWER_BOUND + len(str(x.get("id")))
            if run and room < 0:
                break
            run.append(x)
        return run

    def _answer_sends(self, run: list[dict[str, Any]], budget: WorkBudget) -> list[dict[str, Any] | None]:
        """Answers to a run of sends (None for a notification), as ``handle_one`` gives them one by one;
        the raw transactions are admitted in one ``call_on_loop`` hop. If the hop itself fails (the loop
        is gone or stuck), each send of the run is answered -32603."""
        raws: list[bytes] = []
        outcomes: list[bytes | BaseException | None] = []
        self._count(SEND, len(run))
        budget.start_request()  # once for the run: a send charges nothing to its request's allowances
        for x in run:
            try:
                raws.append(parse_data(_param(x.get("params", []), 0, "rawTransaction"), "rawTransaction"))
                outcomes.append(None)  # filled in from the hop
            except ChainshareError as exc:
                outcomes.append(exc.with_traceback(None))  # no frame (and its batch) kept by a cycle
        hop: list[bytes | Exception] | None = None
        if raws:
            try:
                hop = self.call_on_loop(self._submit_each, raws)
            except Exception:
                log.exception("the event loop did not run a batch's %d sends", len(raws))
        answered = iter(hop or [])
        out: list[dict[str, Any] | None] = []
        for x, outcome in zip(run, outcomes, strict=True):
            if outcome is None:
                outcome = next(answered, None)
            rid, notification = x.get("id"), "id" not in x
            if isinstance(outcome, bytes):
                out.append(None if notification else {"jsonrpc": "2.0", "id": rid, "result": hx(outcome)})
                continue
            self._count_error()
            if notification:
                out.append(None)
            elif isinstance(outcome, ChainshareError):
                out.append({"jsonrpc": "2.0", "id": rid, "error": rpc_error(outcome)})
            else:  # a bug in admission (logged where it happened), or the hop failed
                out.append(_error_response(rid, INTERNAL_ERROR, f"internal error while handling {SEND}"))
        return out

    def _submit_each(self, raws: list[bytes]) -> list[bytes | Exception]:
        """Admit each raw transaction in order (on the event loop): its hash, or the error it raised."""
        out: list[bytes | Exception] = []
        for raw in raws:
            try:
                out.append(self.node.submit_raw_transaction(raw))
            except ChainshareError as exc:
                # Without its traceback: kept, it would hold this frame (and ``out``, which holds it: a
                # reference cycle) and the frames below with their raw transactions until a collection.
                out.append(exc.with_traceback(None))
            except Exception as exc:
                log.exception("internal error in %s", SEND)
                out.append(exc.with_traceback(None))
        return out

    def _encode_within(self, req: Any, resp: dict[str, Any] | None, budget: WorkBudget) -> bytes | None:
        """``resp`` encoded; a read's result that would overflow ``max_response_bytes`` becomes -32005
        (a write's small result is always kept: what was done is never hidden)."""
        if resp is None:
            return None
        out = orjson.dumps(resp)
        if not budget.fits_response(len(out) + 1) and "result" in resp and req.get("method") not in WRITE_METHODS:
            exc = budget.response_full()
            budget.charge_response(budget.limits.max_response_bytes)  # nothing more fits
            self._count_error()
            return orjson.dumps({"jsonrpc": "2.0", "id": resp["id"], "error": rpc_error(exc)})
        budget.charge_response(len(out) + 1)
        return out

    def _count(self, method: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[method] = self.counts.get(method, 0) + n

    def _count_error(self) -> None:
        with self._count_lock:
            self.error_count += 1

    def handle_one(self, req: Any, budget: WorkBudget | None = None) -> dict[str, Any] | None:
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            rid = req.get("id") if isinstance(req, dict) else None
            return _error_response(rid if _valid_id(rid) else None, INVALID_REQUEST,
                                   "invalid request: need jsonrpc '2.0', a method name and an id")
        rid = req.get("id")
        if not _valid_id(rid):
            return _error_response(None, INVALID_REQUEST, "invalid request id")
        method = req["method"]
        params = req.get("params", [])
        if not isinstance(params, list):
            return _error_response(rid, -32602, "params must be an array")
        fn = self.methods.get(method)
        notification = "id" not in req  # JSON-RPC 2.0: the server must not reply to a notification
        self._count(method if fn else "unknown")
        if fn is None:
            self._count_error()
            return None if notification else _error_response(rid, METHOD_NOT_FOUND,
                                                             f"method {method[:64]!r} is not supported")
        if budget is None:
            budget = WorkBudget(self.limits)
        budget.start_request()
        try:
            result = fn(params, budget)
        except ChainshareError as exc:
            self._count_error()
            return None if notification else {"jsonrpc": "2.0", "id": rid, "error": rpc_error(exc)}
        except Exception:
            # A bug, not bad input: log it with its traceback, answer -32603, keep serving.
            self._count_error()
            log.exception("internal error in %s", method)
            return None if notification else _error_response(rid, INTERNAL_ERROR,
                                                             f"internal error while handling {method}")
        if notification:
            return None
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    # -- helpers -------------------------------------------------------------------------------
    def _height(self, tag: Any) -> int:
        head = self.node.chain.head_height
        if tag in ("latest", "safe", "finalized", "pending", None):
            return head
        if tag == "earliest":
            return 0
        h = parse_quantity(tag, "block number")
        return h

    def _find_block(self, block: Any) -> int | None:
        """The height of the block that ``block`` names: a tag or a quantity as eth_getBlockByNumber reads it,
        or a block hash (a string of 32 bytes, as geth tells the two apart); None when there is no such block."""
        if isinstance(block, dict):
            raise InvalidInput("block: the object form ({blockHash}/{blockNumber}) is not supported; pass the "
                               "number, a tag or the block hash itself")
        if isinstance(block, str) and len(block) == 66:
            return self._height_of_hash(parse_data(block, "block hash", 32))
        return self._height_if_known(block)

    def _height_if_known(self, tag: Any) -> int | None:
        """The height ``tag`` names (as ``_height`` reads it) if this node has that block yet, else None."""
        h = self._height(tag)
        return h if h <= self.node.chain.head_height else None

    def _height_of_hash(self, block_hash: bytes) -> int | None:
        """The height of the block with this hash, or None if this node has no such block."""
        try:
            return self.node.chain.get_height_by_hash(block_hash)
        except NotFound:
            return None

    def _latest_only(self, tag: Any, what: str) -> None:
        if tag in (None, "latest", "safe", "finalized", "pending"):
            return
        if isinstance(tag, dict):
            raise InvalidInput(f"{what}: block selectors by hash are not supported; use 'latest'")
        if tag != "earliest" and self._height(tag) == self.node.chain.head_height:
            return
        raise InvalidInput(f"{what}: historical state is not kept; only the latest (finalized) state can be read")

    # -- methods ------------------------------------------------------------------------------
    def web3_sha3(self, p: list[Any], b: WorkBudget) -> str:
        return hx(keccak256(parse_data(_param(p, 0, "data"), "data")))

    def eth_get_balance(self, p: list[Any], b: WorkBudget) -> str:
        parse_data(_param(p, 0, "address"), "address", 20)
        return "0x0"

    def eth_get_code(self, p: list[Any], b: WorkBudget) -> str:
        addr = parse_data(_param(p, 0, "address"), "address", 20)
        contract = self.node.runtime.contracts.get(addr)
        if contract is None:
            return "0x"
        return hx(CODE_PREFIX + b"chainshare:" + contract.NAME.encode())

    def eth_fee_history(self, p: list[Any], b: WorkBudget) -> dict[str, Any]:
        count = min(parse_quantity(_param(p, 0, "blockCount"), "blockCount"), 1024)
        newest = self._height(_param(p, 1, "newestBlock", "latest"))
        newest = min(newest, self.node.chain.head_height)
        count = min(count, newest + 1)
        oldest = newest - count + 1
        percentiles = parse_reward_percentiles(_param(p, 2, "rewardPercentiles", []))
        b.charge_blocks(count, "eth_feeHistory")
        ratios = []
        for h in range(oldest, newest + 1):
            hdr = self.node.chain.get_block(h).header
            ratios.append(hdr.gas_used / hdr.gas_limit if hdr.gas_limit else 0.0)
        out: dict[str, Any] = {"oldestBlock": qty(oldest), "baseFeePerGas": ["0x0"] * (count + 1),
                               "gasUsedRatio": ratios}
        if percentiles:
            out["reward"] = [["0x0"] * len(percentiles) for _ in range(count)]
        return out

    def _load_block(self, h: int, b: WorkBudget, what: str) -> Any:
        b.charge_blocks(1, what)
        return self.node.chain.get_block(h)

    def eth_get_block_by_number(self, p: list[Any], b: WorkBudget) -> dict[str, Any] | None:
        h = self._height_if_known(_param(p, 0, "block"))
        full = _param_bool(p, 1, "fullTransactions")
        if h is None:
            return None
        return self._view_block(h, full, b, "eth_getBlockByNumber")

    def eth_get_block_by_hash(self, p: list[Any], b: WorkBudget) -> dict[str, Any] | None:
        h = self._height_of_hash(parse_data(_param(p, 0, "blockHash"), "blockHash", 32))
        full = _param_bool(p, 1, "fullTransactions")
        if h is None:
            return None
        return self._view_block(h, full, b, "eth_getBlockByHash")

    def _view_block(self, h: int, full: bool, b: WorkBudget, what: str) -> dict[str, Any]:
        """Block ``h``'s view, with the transaction hashes of its cached bundle when there is one (a client that
        follows the chain asks for blocks just committed: their hashes were derived at execution)."""
        bundle = None if full else self.node.chain.peek_bundle(h)
        if bundle is None:
            return view_block(self._load_block(h, b, what), self.node.chain_id, full)
        b.charge_blocks(1, what)  # as _load_block charges: the same budget whichever way the block comes
        return view_block(bundle.block, self.node.chain_id, False, bundle.tx_hashes)

    def eth_get_block_tx_count_by_number(self, p: list[Any], b: WorkBudget) -> str | None:
        h = self._height(_param(p, 0, "block"))
        if h > self.node.chain.head_height:
            return None
        return qty(len(self._load_block(h, b, "eth_getBlockTransactionCountByNumber").transactions))

    def eth_get_transaction_by_hash(self, p: list[Any], b: WorkBudget) -> dict[str, Any] | None:
        th = parse_data(_param(p, 0, "txHash"), "txHash", 32)
        loc = self.node.chain.get_tx_location(th)
        if loc is None:
            pending = self.node.mempool.get(th)  # one dict lookup (safe from any thread)
            return view_transaction(pending, None, None) if pending else None
        block = self._load_block(loc.height, b, "eth_getTransactionByHash")
        tx = decode_transaction(block.transactions[loc.index], self.node.chain_id)
        return view_transaction(tx, block, loc.index)

    def eth_get_transaction_receipt(self, p: list[Any], b: WorkBudget) -> dict[str, Any] | None:
        th = parse_data(_param(p, 0, "txHash"), "txHash", 32)
        # The chain first, not the mempool: a transaction of a block just committed stays in the mempool until
        # the mempool is pruned after the commit, and a client that saw the block must get its receipt. (A
        # pending transaction costs one LevelDB miss here, which the store's bloom filters keep cheap.)
        loc = self.node.chain.get_tx_location(th)
        if loc is None:
            return None
        b.charge_blocks(1, "eth_getTransactionReceipt")
        return view_bundle_receipt(self.node.chain.get_bundle(loc.height), loc.index)

    def eth_get_block_receipts(self, p: list[Any], b: WorkBudget) -> list[dict[str, Any]] | None:
        """The receipts of a block's transactions in order, each as eth_getTransactionReceipt shows it; None
        for a block that does not exist. Charged as a block read (one block loaded), as eth_getBlockByNumber
        with full transactions is; the answer counts against max_response_bytes like any read's."""
        if len(p) > 1:
            raise InvalidInput(f"eth_getBlockReceipts takes 1 parameter (the block), got {len(p)}")
        h = self._find_block(_param(p, 0, "block"))
        if h is None:
            return None
        b.charge_blocks(1, "eth_getBlockReceipts")
        bundle = self.node.chain.get_bundle(h)
        return [view_bundle_receipt(bundle, i) for i in range(len(bundle.receipts))]

    def eth_get_transaction_count(self, p: list[Any], b: WorkBudget) -> str:
        addr = parse_data(_param(p, 0, "address"), "address", 20)
        tag = _param(p, 1, "block", "latest")
        if tag == "pending":
            return qty(self.call_on_loop(self.node.mempool.get_pending_nonce, self.node.state, addr))
        self._latest_only(tag, "eth_getTransactionCount")
        return qty(get_nonce(self.node.state, addr))

    def eth_send_raw_transaction(self, p: list[Any], b: WorkBudget) -> str:
        raw = parse_data(_param(p, 0, "rawTransaction"), "rawTransaction")
        return hx(self.call_on_loop(self.node.submit_raw_transaction, raw))

    def _call_args(self, p: list[Any]) -> tuple[bytes, bytes, bytes, int | None]:
        obj = _param(p, 0, "transaction")
        if not isinstance(obj, dict):
            raise InvalidInput("call object must be a JSON object")
        to_v = obj.get("to")
        if to_v is None:
            raise InvalidInput("call object needs 'to': contract creation is not supported")
        to = parse_data(to_v, "to", 20)
        sender = parse_data(obj["from"], "from", 20) if obj.get("from") else bytes(20)
        system = self.node.runtime.contracts.get(sender)
        if system is not None:
            # Only a transaction's signer can be its sender, and no key signs for a system contract:
            # a call "from" one would reach privileged paths (Governance.setValidators) no tx can.
            raise InvalidInput(f"from: {hx(sender)} is the {system.NAME} system contract; a call's sender "
                               "must be an account")
        data_v = obj.get("input", obj.get("data"))
        data = parse_data(data_v, "data") if data_v is not None else b""
        if len(data) > 128 * 1024:
            raise InvalidInput("call data exceeds 128 KiB")
        gas = parse_quantity(obj["gas"], "gas") if obj.get("gas") is not None else None
        if obj.get("value") not in (None, "0x0", "0x", 0) and parse_quantity(obj["value"], "value"):
            raise InvalidInput("there is no native currency on this network: value must be 0")
        return sender, to, data, gas

    def _run_call(self, p: list[Any], b: WorkBudget) -> tuple[bool, bytes, int]:
        """Run a call with at most the block gas limit and what is left of the batch's call gas."""
        sender, to, data, gas = self._call_args(p)
        block_gas, _ = get_chain_params(self.node.state)
        granted = b.grant_call_gas(gas, block_gas)
        ok, out, used = self.node.call(sender, to, data, granted)
        b.charge_call_gas(used)
        if not ok and used >= granted and b.is_call_gas_short(granted, gas, block_gas):
            raise b.call_gas_exhausted()  # out of gas only because the batch budget ran low
        return ok, out, used

    def eth_call(self, p: list[Any], b: WorkBudget) -> str:
        self._latest_only(_param(p, 1, "block", "latest"), "eth_call")
        ok, out, _ = self._run_call(p, b)
        if not ok:
            raise _reverted(out)
        return hx(out)

    def eth_estimate_gas(self, p: list[Any], b: WorkBudget) -> str:
        sender, to, data, gas = self._call_args(p)
        if to not in self.node.runtime.contracts:
            return qty(21_000 + sum(4 if x == 0 else 16 for x in data))
        ok, out, used = self._run_call(p, b)
        if not ok:
            raise _reverted(out)
        return qty(used)

    def eth_get_logs(self, p: list[Any], b: WorkBudget) -> list[dict[str, Any]]:
        f = _param(p, 0, "filter")
        if not isinstance(f, dict):
            raise InvalidInput("filter must be a JSON object")
        return self.get_logs(f, b)

    def get_logs(self, f: dict[str, Any], b: WorkBudget, max_results: int | None = None,
                 what: str = "eth_getLogs") -> list[dict[str, Any]]:
        """Logs matching filter ``f`` in block order, each block loaded charged to ``b``; stops after
        ``max_results`` logs when given (else more than the budget allows is -32005)."""
        chain = self.node.chain
        head = chain.head_height
        if f.get("blockHash") is not None:
            if f.get("fromBlock") is not None or f.get("toBlock") is not None:
                raise InvalidInput("a filter takes either blockHash or fromBlock/toBlock, not both")
            try:
                lo = hi = chain.get_height_by_hash(parse_data(f["blockHash"], "blockHash", 32))
            except NotFound:
                raise InvalidInput("unknown blockHash") from None
        else:
            lo = self._height(f.get("fromBlock", "latest"))
            hi = min(self._height(f.get("toBlock", "latest")), head)
        flt = parse_log_filter(f)
        addrs, topics = sorted(flt.addresses), list(flt.topics)
        if lo > hi:
            return []
        out: list[dict[str, Any]] = []
        for h in self._candidate_heights(lo, hi, addrs, topics, b, what):
            b.charge_blocks(1, what)
            block = chain.get_block(h)
            if addrs and not any(bloom_contains(block.header.logs_bloom, a) for a in addrs):
                continue
            bundle = chain.get_bundle(h)
            for ti, r in enumerate(bundle.receipts):
                for j, lg in enumerate(r.logs):
                    if flt.is_match(lg):
                        if max_results is not None and len(out) >= max_results:
                            return out
                        b.charge_logs(1, what)
                        out.append(view_log(lg, bundle.block, bundle.tx_hashes[ti], ti,
                                            bundle.first_log_index[ti] + j))
        return out

    def _candidate_heights(self, lo: int, hi: int, addrs: list[bytes], topics: list[frozenset[bytes] | None],
                           b: WorkBudget, what: str) -> Iterable[int]:
        """Heights that may hold a matching log, ascending, read lazily from the most selective index
        (a topic position with values, else the addresses); every height without a filter."""
        chain = self.node.chain
        for pos in topics:
            if pos:
                return _merge_unique(chain.iter_log_heights(t, lo, hi, by_topic=True) for t in pos)
        if addrs:
            return _merge_unique(chain.iter_log_heights(a, lo, hi, by_topic=False) for a in addrs)
        b.check_blocks(hi - lo + 1, what)  # a range over the budget is refused before any block is read
        return range(lo, hi + 1)


def _merge_unique(iterators: Iterable[Iterator[int]]) -> Iterator[int]:
    last = -1
    for h in heapq.merge(*iterators):
        if h != last:
            last = h
            yield h


def _reverted(data: bytes) -> ExecutionReverted:
    from chainshare.execution.abi import decode_revert_reason

    return ExecutionReverted(decode_revert_reason(data) or "", data=hx(data))


def _is_send_request(x: Any) -> bool:
    """A well-formed ``eth_sendRawTransaction`` request or notification (``handle_one`` would call it)."""
    return (isinstance(x, dict) and x.get("method") == SEND and x.get("jsonrpc") == "2.0" and _valid_id(x.get("id"))
            and isinstance(x.get("params", []), list))


def _valid_id(rid: Any) -> bool:
    return rid is None or (isinstance(rid, (int, str)) and not isinstance(rid, bool))


def _error_response(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
