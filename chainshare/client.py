"""A small synchronous JSON-RPC/REST client for the CLI (and tests): one way to talk to a node."""

from __future__ import annotations

import time
from typing import Any

import httpx

from chainshare.errors import ChainshareError, ExecutionReverted, InvalidInput, NotFound


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
             timeout: float = 30.0) -> dict[str, Any]:
    """Sign and send a call to a system contract as ``private_key``'s account; optionally wait."""
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    sender = "0x" + address_of_private_key(private_key).hex()
    chain_id = int(client.rpc("eth_chainId"), 16)
    nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
    call = {"from": sender, "to": "0x" + to.hex(), "data": "0x" + data.hex()}
    gas = int(client.rpc("eth_estimateGas", call), 16)
    raw = sign_eip1559(private_key, chain_id=chain_id, nonce=nonce, to=to, data=data, gas=gas + gas // 5)
    tx_hash = client.rpc("eth_sendRawTransaction", "0x" + raw.hex())
    if not wait:
        return {"transactionHash": tx_hash, "status": "pending"}
    return client.wait_for_receipt(tx_hash, timeout)
