"""A small synchronous JSON-RPC/REST client for the CLI (and tests): one way to talk to a node."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from chainshare.errors import ChainshareError, ExecutionReverted, InvalidInput, NotFound

if TYPE_CHECKING:
    from chainshare.execution.runtime import SystemContract


class NodeUnreachable(ChainshareError, ConnectionError):
    """The node did not answer; check the URL and that the node runs."""


class RpcError(ChainshareError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"node refused the request ({code}): {message}", data)
        self.code = code


class NodeClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"node URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)
        self._id = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rpc(self, method: str, *params: Any) -> Any:
        self._id += 1
        try:
            r = self._http.post(self.url + "/", json={"jsonrpc": "2.0", "id": self._id, "method": method,
                                                      "params": list(params)})
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"cannot reach node at {self.url}: {exc}") from exc
        if r.status_code != 200:
            raise RpcError(r.status_code, r.text[:200])
        body = r.json()
        if "error" in body:
            err = body["error"]
            if err.get("code") == 3:
                raise ExecutionReverted(err.get("message", ""), data=err.get("data"))
            raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return body["result"]

    def rest(self, path: str) -> Any:
        try:
            r = self._http.get(self.url + "/api/v1" + path)
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"cannot reach node at {self.url}: {exc}") from exc
        if r.status_code == 404:
            raise NotFound(r.json().get("error", {}).get("message", f"{path} not found"))
        if r.status_code != 200:
            raise RpcError(r.status_code, r.text[:300])
        return r.json()

    def wait_for_receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                return dict(receipt)
            if time.monotonic() > deadline:
                raise ChainshareError(f"no receipt for {tx_hash} after {timeout:.0f}s; it may still be pending")
            time.sleep(0.1)


def transact(client: NodeClient, private_key: bytes, to: bytes, data: bytes, *, wait: bool = True,
             timeout: float = 30.0, gas: int | None = None) -> dict[str, Any]:
    """Sign and send a call to a system contract as ``private_key``'s account; optionally wait. Without
    ``gas`` the limit is the node's estimate + 20 % (a call that would revert is refused before it is sent);
    with it, a call that reverts is mined and its receipt says why."""
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    sender = "0x" + address_of_private_key(private_key).hex()
    chain_id = int(client.rpc("eth_chainId"), 16)
    nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
    if gas is None:
        estimate = int(client.rpc("eth_estimateGas", {"from": sender, "to": "0x" + to.hex(), "data": "0x" + data.hex()}),
                       16)
        gas = estimate + estimate // 5
    raw = sign_eip1559(private_key, chain_id=chain_id, nonce=nonce, to=to, data=data, gas=gas)
    tx_hash = client.rpc("eth_sendRawTransaction", "0x" + raw.hex())
    if not wait:
        return {"transactionHash": tx_hash, "status": "pending"}
    return client.wait_for_receipt(tx_hash, timeout)


def transact_checked(client: NodeClient, private_key: bytes, to: bytes, data: bytes, *, failure: str,
                     no_reason: str = "reverted", advice: str = "", timeout: float = 30.0,
                     gas: int | None = None) -> dict[str, Any]:
    """``transact`` and wait: the receipt of a call that succeeded; ChainshareError
    "``failure``: <revert reason, else ``no_reason``> (``advice``)" for one that was mined and reverted."""
    receipt = transact(client, private_key, to, data, timeout=timeout, gas=gas)
    if receipt["status"] != "0x1":
        raise ChainshareError(f"{failure}: {receipt.get('revertReason') or no_reason}"
                              + (f" ({advice})" if advice else ""))
    return receipt


def call_view(client: NodeClient, contract: SystemContract, method: str, *args: Any) -> tuple[Any, ...]:
    """``contract.method(*args)`` run by the node on its latest finalized state, encoded and decoded with the
    contract's ABI: the returned values; ExecutionReverted (with the reason) if the call reverts."""
    from chainshare.execution.runtime import decode_return, encode_call

    out = client.rpc("eth_call", {"to": "0x" + contract.ADDRESS.hex(),
                                  "data": "0x" + encode_call(contract, method, *args).hex()}, "latest")
    return decode_return(contract, method, bytes.fromhex(out[2:]))


def get_proposal_id(receipt: dict[str, Any]) -> int:
    """The id of the proposal a successful ``Governance.propose`` receipt created: its ``ProposalCreated`` log
    (by contract address and event topic, wherever it is among the receipt's logs); ChainshareError if none."""
    from chainshare.execution.contracts.addresses import GOVERNANCE
    from chainshare.execution.contracts.governance import Governance

    address, topic = "0x" + GOVERNANCE.hex(), "0x" + Governance.E_CREATED.topic.hex()
    for log in receipt.get("logs", []):
        topics = log.get("topics") or []
        if str(log.get("address", "")).lower() == address and len(topics) >= 2 and str(topics[0]).lower() == topic:
            return int(topics[1], 16)
    raise ChainshareError(f"transaction {receipt.get('transactionHash')} created no proposal (no ProposalCreated log)")


class HeadSubscription:
    """Finalized heads pushed by a node's websocket ``eth_subscribe("newHeads")`` (api/subscriptions.py),
    for a follower that reads each new range itself (``credit watch``): ``next_head`` returns as soon as a
    block above ``scanned`` is announced. A dropped or refused connection is reopened with back-off; until
    it is, and right after each reconnect, the head comes from ``poll_head`` after ``poll_s`` (polling), so
    the follower reads whatever it missed by range and nothing is lost. ``transport`` says which one the
    last head came from."""

    def __init__(self, ws_url: str, poll_head: Any, *, poll_s: float = 0.25, wait_s: float = 1.0,
                 retry_s: float = 2.0) -> None:
        if not ws_url.startswith(("ws://", "wss://")):
            raise InvalidInput(f"websocket URL {ws_url!r} must start with ws:// or wss://")
        self.ws_url, self.poll_head, self.poll_s, self.wait_s, self.retry_s = ws_url, poll_head, poll_s, wait_s, retry_s
        self._conn: Any = None
        self._retry_at = 0.0
        self.transport = "poll"
        self.connects = 0
        self._seen = -1

    @staticmethod
    def url_of(node_url: str) -> str:
        """The websocket JSON-RPC URL of a node's HTTP URL (same port, path /)."""
        scheme, rest = node_url.rstrip("/").split("://", 1)
        return ("wss://" if scheme == "https" else "ws://") + rest + "/"

    def _connect(self) -> bool:
        import json

        from websockets.sync.client import connect

        try:
            conn = connect(self.ws_url, open_timeout=5, close_timeout=1, max_size=1 << 22)
            conn.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
            answer = json.loads(conn.recv(timeout=5))
            if "result" not in answer:
                conn.close()
                return False
        except Exception:  # refused, unreachable or not a node's websocket: poll until the next attempt
            return False
        self._conn = conn
        self.connects += 1
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110  (closing a connection that is already gone)
                pass
        self._conn = None
        self._retry_at = time.monotonic() + self.retry_s

    def next_head(self, scanned: int) -> int:
        """The finalized head once it is above ``scanned`` (or after about ``wait_s`` without a new block)."""
        import json

        if self._conn is None:
            if time.monotonic() >= self._retry_at:
                if self._connect():
                    self.transport = "websocket"
                    return int(self.poll_head())  # what was finalized before the subscription began
                self._retry_at = time.monotonic() + self.retry_s
            self.transport = "poll"
            time.sleep(self.poll_s)
            return int(self.poll_head())
        deadline = time.monotonic() + self.wait_s
        head = self._seen
        while head <= scanned:
            left = deadline - time.monotonic()
            if left <= 0:
                return max(head, scanned)
            try:
                frame = json.loads(self._conn.recv(timeout=left))
            except TimeoutError:
                return max(head, scanned)
            except Exception:  # the connection dropped: read the gap by range, reconnect later
                self._drop()
                self.transport = "poll"
                return int(self.poll_head())
            result = frame.get("params", {}).get("result") if isinstance(frame, dict) else None
            if isinstance(result, dict) and isinstance(result.get("number"), str):
                head = self._seen = max(self._seen, int(result["number"], 16))
        return head

    def close(self) -> None:
        self._drop()
