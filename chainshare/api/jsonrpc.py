"""Ethereum JSON-RPC (single and batch) over a node, as web3.py and ethers expect it.

Hot path: orjson in, plain dicts out, no pydantic. Parameters are validated here and every
problem is an EIP-1474 error object; nothing a client sends can produce an internal error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from chainshare.api.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    rpc_error,
)
from chainshare.api.views import hx, qty, view_block, view_log, view_receipt, view_transaction
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, ExecutionReverted, InvalidInput, NotFound
from chainshare.execution.runtime import get_nonce
from chainshare.ledger.txs import decode_transaction, peek_type_and_to
from chainshare.ledger.types import bloom_contains
from chainshare.node import Node

log = logging.getLogger("chainshare.rpc")
MAX_LOG_RANGE = 10_000
MAX_LOG_RESULTS = 10_000
CODE_PREFIX = bytes.fromhex("60006000fd")  # PUSH1 0 PUSH1 0 REVERT: not EVM code, but never empty


class RpcLimit(ChainshareError):
    rpc_code = LIMIT_EXCEEDED
    http_status = 413


# -- parameter parsing -------------------------------------------------------------------------

def _param(params: list[Any], i: int, name: str, default: Any = ...) -> Any:
    if i < len(params) and params[i] is not None:
        return params[i]
    if default is ...:
        raise InvalidInput(f"missing parameter {i}: {name}")
    return default


def parse_data(value: Any, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise InvalidInput(f"{name} must be a 0x-prefixed hex string")
    body = value[2:]
    if len(body) % 2:
        raise InvalidInput(f"{name} has an odd number of hex digits")
    try:
        b = bytes.fromhex(body)
    except ValueError as exc:
        raise InvalidInput(f"{name} is not valid hex") from exc
    if size is not None and len(b) != size:
        raise InvalidInput(f"{name} must be {size} bytes")
    return b


def parse_quantity(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66 or len(value) < 3:
        raise InvalidInput(f"{name} must be a 0x-prefixed hex quantity")
    try:
        return int(value[2:], 16)
    except ValueError as exc:
        raise InvalidInput(f"{name} is not a hex quantity") from exc


class JsonRpc:
    """Dispatches JSON-RPC requests to a node."""

    def __init__(self, node: Node, max_batch: int = 1000) -> None:
        self.node = node
        self.max_batch = max_batch
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "web3_clientVersion": lambda p: node.client_version,
            "web3_sha3": self.web3_sha3,
            "net_version": lambda p: str(node.chain_id),
            "net_listening": lambda p: True,
            "net_peerCount": lambda p: "0x0",
            "eth_chainId": lambda p: qty(node.chain_id),
            "eth_syncing": lambda p: False,
            "eth_mining": lambda p: False,
            "eth_accounts": lambda p: [],
            "eth_blockNumber": lambda p: qty(node.chain.head_height),
            "eth_gasPrice": lambda p: "0x0",
            "eth_maxPriorityFeePerGas": lambda p: "0x0",
            "eth_feeHistory": self.eth_fee_history,
            "eth_getBalance": self.eth_get_balance,
            "eth_getCode": self.eth_get_code,
            "eth_getStorageAt": lambda p: "0x" + "00" * 32,
            "eth_getBlockByNumber": self.eth_get_block_by_number,
            "eth_getBlockByHash": self.eth_get_block_by_hash,
            "eth_getBlockTransactionCountByNumber": self.eth_get_block_tx_count_by_number,
            "eth_getTransactionByHash": self.eth_get_transaction_by_hash,
            "eth_getTransactionReceipt": self.eth_get_transaction_receipt,
            "eth_getTransactionCount": self.eth_get_transaction_count,
            "eth_sendRawTransaction": self.eth_send_raw_transaction,
            "eth_call": self.eth_call,
            "eth_estimateGas": self.eth_estimate_gas,
            "eth_getLogs": self.eth_get_logs,
        }
        self.counts: dict[str, int] = {}
        self.error_count = 0

    # -- transport-level handling ---------------------------------------------------------
    def handle_body(self, body: bytes) -> bytes | None:
        """Handle one HTTP body; returns the response body (None for a batch of notifications)."""
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return orjson.dumps(_error_response(None, PARSE_ERROR, "parse error: body is not valid JSON"))
        if isinstance(req, list):
            if not req:
                return orjson.dumps(_error_response(None, INVALID_REQUEST, "empty batch"))
            if len(req) > self.max_batch:
                return orjson.dumps(_error_response(None, LIMIT_EXCEEDED,
                                                    f"batch of {len(req)} exceeds the limit of {self.max_batch}"))
            out = [r for r in (self.handle_one(x) for x in req) if r is not None]
            return orjson.dumps(out) if out else None
        resp = self.handle_one(req)
        return orjson.dumps(resp) if resp is not None else None

    def handle_one(self, req: Any) -> dict[str, Any] | None:
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
        self.counts[method if fn else "unknown"] = self.counts.get(method if fn else "unknown", 0) + 1
        if fn is None:
            self.error_count += 1
            return None if notification else _error_response(rid, METHOD_NOT_FOUND,
                                                             f"method {method[:64]!r} is not supported")
        try:
            result = fn(params)
        except ChainshareError as exc:
            self.error_count += 1
            return None if notification else {"jsonrpc": "2.0", "id": rid, "error": rpc_error(exc)}
        except Exception:
            # A bug, not bad input: log it with its traceback, answer -32603, keep serving.
            self.error_count += 1
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

    def _latest_only(self, tag: Any, what: str) -> None:
        if tag in (None, "latest", "safe", "finalized", "pending"):
            return
        if isinstance(tag, dict):
            raise InvalidInput(f"{what}: block selectors by hash are not supported; use 'latest'")
        if tag != "earliest" and self._height(tag) == self.node.chain.head_height:
            return
        raise InvalidInput(f"{what}: historical state is not kept; only the latest (finalized) state can be read")

    # -- methods ------------------------------------------------------------------------------
    def web3_sha3(self, p: list[Any]) -> str:
        return hx(keccak256(parse_data(_param(p, 0, "data"), "data")))

    def eth_get_balance(self, p: list[Any]) -> str:
        parse_data(_param(p, 0, "address"), "address", 20)
        return "0x0"

    def eth_get_code(self, p: list[Any]) -> str:
        addr = parse_data(_param(p, 0, "address"), "address", 20)
        contract = self.node.runtime.contracts.get(addr)
        if contract is None:
            return "0x"
        return hx(CODE_PREFIX + b"chainshare:" + contract.NAME.encode())

    def eth_fee_history(self, p: list[Any]) -> dict[str, Any]:
        count = min(parse_quantity(_param(p, 0, "blockCount"), "blockCount"), 1024)
        newest = self._height(_param(p, 1, "newestBlock", "latest"))
        newest = min(newest, self.node.chain.head_height)
        count = min(count, newest + 1)
        oldest = newest - count + 1
        percentiles = _param(p, 2, "rewardPercentiles", [])
        if not isinstance(percentiles, list) or len(percentiles) > 100:
            raise InvalidInput("rewardPercentiles must be an array of at most 100 numbers")
        ratios = []
        for h in range(oldest, newest + 1):
            hdr = self.node.chain.get_block(h).header
            ratios.append(hdr.gas_used / hdr.gas_limit if hdr.gas_limit else 0.0)
        out: dict[str, Any] = {"oldestBlock": qty(oldest), "baseFeePerGas": ["0x0"] * (count + 1),
                               "gasUsedRatio": ratios}
        if percentiles:
            out["reward"] = [["0x0"] * len(percentiles) for _ in range(count)]
        return out

    def eth_get_block_by_number(self, p: list[Any]) -> dict[str, Any] | None:
        h = self._height(_param(p, 0, "block"))
        full = bool(_param(p, 1, "fullTransactions", False))
        if h > self.node.chain.head_height:
            return None
        return view_block(self.node.chain.get_block(h), self.node.chain_id, full)

    def eth_get_block_by_hash(self, p: list[Any]) -> dict[str, Any] | None:
        bh = parse_data(_param(p, 0, "blockHash"), "blockHash", 32)
        full = bool(_param(p, 1, "fullTransactions", False))
        try:
            h = self.node.chain.get_height_by_hash(bh)
        except NotFound:
            return None
        return view_block(self.node.chain.get_block(h), self.node.chain_id, full)

    def eth_get_block_tx_count_by_number(self, p: list[Any]) -> str | None:
        h = self._height(_param(p, 0, "block"))
        if h > self.node.chain.head_height:
            return None
        return qty(len(self.node.chain.get_block(h).transactions))

    def eth_get_transaction_by_hash(self, p: list[Any]) -> dict[str, Any] | None:
        th = parse_data(_param(p, 0, "txHash"), "txHash", 32)
        loc = self.node.chain.get_tx_location(th)
        if loc is None:
            pending = self.node.mempool.get(th)
            return view_transaction(pending, None, None) if pending else None
        block = self.node.chain.get_block(loc.height)
        tx = decode_transaction(block.transactions[loc.index], self.node.chain_id)
        return view_transaction(tx, block, loc.index)

    def eth_get_transaction_receipt(self, p: list[Any]) -> dict[str, Any] | None:
        th = parse_data(_param(p, 0, "txHash"), "txHash", 32)
        if self.node.mempool.get(th) is not None:
            return None  # still pending: no need to look on disk
        loc = self.node.chain.get_tx_location(th)
        if loc is None:
            return None
        b = self.node.chain.get_bundle(loc.height)
        tx_type, to = peek_type_and_to(b.block.transactions[loc.index])
        return view_receipt(b.block, b.receipts, loc.index, b.senders[loc.index], th, to, tx_type,
                            b.first_log_index[loc.index])

    def eth_get_transaction_count(self, p: list[Any]) -> str:
        addr = parse_data(_param(p, 0, "address"), "address", 20)
        tag = _param(p, 1, "block", "latest")
        if tag == "pending":
            return qty(self.node.mempool.get_pending_nonce(self.node.state, addr))
        self._latest_only(tag, "eth_getTransactionCount")
        return qty(get_nonce(self.node.state, addr))

    def eth_send_raw_transaction(self, p: list[Any]) -> str:
        raw = parse_data(_param(p, 0, "rawTransaction"), "rawTransaction")
        return hx(self.node.submit_raw_transaction(raw))

    def _call_args(self, p: list[Any]) -> tuple[bytes, bytes, bytes, int | None]:
        obj = _param(p, 0, "transaction")
        if not isinstance(obj, dict):
            raise InvalidInput("call object must be a JSON object")
        to_v = obj.get("to")
        if to_v is None:
            raise InvalidInput("call object needs 'to': contract creation is not supported")
        to = parse_data(to_v, "to", 20)
        sender = parse_data(obj["from"], "from", 20) if obj.get("from") else bytes(20)
        data_v = obj.get("input", obj.get("data"))
        data = parse_data(data_v, "data") if data_v is not None else b""
        if len(data) > 128 * 1024:
            raise InvalidInput("call data exceeds 128 KiB")
        gas = parse_quantity(obj["gas"], "gas") if obj.get("gas") is not None else None
        if obj.get("value") not in (None, "0x0", "0x", 0) and parse_quantity(obj["value"], "value"):
            raise InvalidInput("there is no native currency on this network: value must be 0")
        return sender, to, data, gas

    def eth_call(self, p: list[Any]) -> str:
        sender, to, data, gas = self._call_args(p)
        self._latest_only(_param(p, 1, "block", "latest"), "eth_call")
        ok, out, _ = self.node.call(sender, to, data, gas)
        if not ok:
            raise _reverted(out)
        return hx(out)

    def eth_estimate_gas(self, p: list[Any]) -> str:
        sender, to, data, gas = self._call_args(p)
        if to not in self.node.runtime.contracts:
            return qty(21_000 + sum(4 if b == 0 else 16 for b in data))
        ok, out, used = self.node.call(sender, to, data, gas)
        if not ok:
            raise _reverted(out)
        return qty(used)

    def eth_get_logs(self, p: list[Any]) -> list[dict[str, Any]]:
        f = _param(p, 0, "filter")
        if not isinstance(f, dict):
            raise InvalidInput("filter must be a JSON object")
        chain = self.node.chain
        head = chain.head_height
        if f.get("blockHash") is not None:
            try:
                lo = hi = chain.get_height_by_hash(parse_data(f["blockHash"], "blockHash", 32))
            except NotFound:
                raise InvalidInput("unknown blockHash") from None
        else:
            lo = self._height(f.get("fromBlock", "latest"))
            hi = min(self._height(f.get("toBlock", "latest")), head)
        if lo > hi:
            return []
        addrs_v = f.get("address")
        addrs = ([parse_data(a, "address", 20) for a in addrs_v] if isinstance(addrs_v, list)
                 else [parse_data(addrs_v, "address", 20)] if addrs_v is not None else [])
        topics_v = f.get("topics") or []
        if not isinstance(topics_v, list) or len(topics_v) > 4:
            raise InvalidInput("topics must be an array of at most 4 entries")
        topics: list[list[bytes] | None] = []
        for t in topics_v:
            if t is None:
                topics.append(None)
            elif isinstance(t, list):
                topics.append([parse_data(x, "topic", 32) for x in t] or None)
            else:
                topics.append([parse_data(t, "topic", 32)])
        heights = self._candidate_heights(lo, hi, addrs, topics)
        out: list[dict[str, Any]] = []
        for h in heights:
            block = chain.get_block(h)
            if addrs and not any(bloom_contains(block.header.logs_bloom, a) for a in addrs):
                continue
            b = chain.get_bundle(h)
            for ti, r in enumerate(b.receipts):
                for j, lg in enumerate(r.logs):
                    if _log_matches(lg, addrs, topics):
                        out.append(view_log(lg, b.block, b.tx_hashes[ti], ti, b.first_log_index[ti] + j))
                        if len(out) > MAX_LOG_RESULTS:
                            raise RpcLimit(f"query returned more than {MAX_LOG_RESULTS} logs; narrow the block range")
        return out

    def _candidate_heights(self, lo: int, hi: int, addrs: list[bytes], topics: list[list[bytes] | None]) -> list[int]:
        chain = self.node.chain
        # Use the most selective index available: a topic position with values, else addresses.
        for pos in topics:
            if pos:
                hs: set[int] = set()
                for t in pos:
                    hs.update(chain.iter_log_heights(t, lo, hi, by_topic=True))
                return sorted(hs)
        if addrs:
            hs = set()
            for a in addrs:
                hs.update(chain.iter_log_heights(a, lo, hi, by_topic=False))
            return sorted(hs)
        if hi - lo + 1 > MAX_LOG_RANGE:
            raise RpcLimit(f"block range of {hi - lo + 1} exceeds {MAX_LOG_RANGE} without an address or topic filter")
        return list(range(lo, hi + 1))


def _log_matches(lg: Any, addrs: list[bytes], topics: list[list[bytes] | None]) -> bool:
    if addrs and lg.address not in addrs:
        return False
    for i, want in enumerate(topics):
        if want is None:
            continue
        if i >= len(lg.topics) or lg.topics[i] not in want:
            return False
    return True


def _reverted(data: bytes) -> ExecutionReverted:
    from chainshare.execution.abi import decode_revert_reason

    return ExecutionReverted(decode_revert_reason(data) or "", data=hx(data))


def _valid_id(rid: Any) -> bool:
    return rid is None or (isinstance(rid, (int, str)) and not isinstance(rid, bool))


def _error_response(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
