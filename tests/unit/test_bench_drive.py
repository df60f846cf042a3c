"""The ingest bench's closed loop against a node that refuses: a "busy, retry" (-32005) pauses every
client for its retryAfter, a transaction refused as too far past the refused nonce (max_nonce_gap) is
sent again once that nonce is in, and nothing is lost or counted as an error. The node here is a small
aiohttp JSON-RPC server that keeps one sender's nonce order, as the mempool does, and seals the admitted
prefix into a new block whenever a client asks for the head."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from aiohttp import web

from chainshare.bench import _drive
from chainshare.crypto.hashing import keccak256

GAP = 2  # like [mempool] max_nonce_gap, small: the clients in flight with the refused nonce pass it


class FakeNode:
    """Transactions are nonces 0..n-1 (raw bytes = the nonce); nonce 5 is refused busy once, and while
    it is missing nonces of GAP or more past it are refused with the max_nonce_gap message."""

    def __init__(self) -> None:
        self.admitted: set[int] = set()
        self.busy_once = {5}
        self.busy_at: float | None = None
        self.sends_during_pause = 0
        self.blocks: list[list[str]] = []  # block n (from 1) holds the hashes of blocks[n - 1]
        self.sealed = 0  # nonces 0..sealed-1 are in blocks
        self.receipt_asks: dict[str, int] = {}

    def next_missing(self) -> int:
        n = 0
        while n in self.admitted:
            n += 1
        return n

    def send(self, raw: bytes) -> dict[str, Any]:
        nonce = int.from_bytes(raw, "big")
        if self.busy_at is not None and time.perf_counter() - self.busy_at < 0.3:
            self.sends_during_pause += 1
        if nonce in self.busy_once:
            self.busy_once.discard(nonce)
            self.busy_at = time.perf_counter()
            return {"error": {"code": -32005, "message": "node busy, retry", "data": {"retryAfter": 0.3}}}
        missing = self.next_missing()
        if nonce - missing >= GAP:
            return {"error": {"code": -32000, "message": f"nonce {nonce} is ahead; at most {GAP - 1} ahead are "
                                                         "queued ([mempool] max_nonce_gap)"}}
        self.admitted.add(nonce)
        return {"result": "0x" + keccak256(raw).hex()}

    def seal(self) -> int:
        """Put the admitted prefix not yet in a block into a new one; returns the head height."""
        upto = self.next_missing()
        if upto > self.sealed:
            self.blocks.append(["0x" + keccak256(n.to_bytes(4, "big")).hex() for n in range(self.sealed, upto)])
            self.sealed = upto
        return len(self.blocks)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        out = []
        for call in calls:
            if call["method"] == "eth_sendRawTransaction":
                answer = self.send(bytes.fromhex(call["params"][0][2:]))
            elif call["method"] == "eth_blockNumber":
                answer = {"result": hex(self.seal())}
            elif call["method"] == "eth_getBlockByNumber":
                n = int(call["params"][0], 16)
                answer = {"result": {"transactions": self.blocks[n - 1]} if 1 <= n <= len(self.blocks) else None}
            else:  # a receipt for every transaction in a block
                wanted = call["params"][0]
                self.receipt_asks[wanted] = self.receipt_asks.get(wanted, 0) + 1
                done = {h for block in self.blocks for h in block}
                answer = {"result": {"transactionHash": wanted, "status": "0x1"} if wanted in done else None}
            out.append({"jsonrpc": "2.0", "id": call["id"], **answer})
        return web.json_response(out if isinstance(body, list) else out[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(node: FakeNode, raws: list[bytes]) -> dict[str, Any]:
    app = web.Application()
    app.router.add_post("/", node.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await _drive([f"http://127.0.0.1:{port}/"], raws, clients=4, batch=50, stall_s=10)
    finally:
        await runner.cleanup()


def test_a_busy_refusal_pauses_every_client_and_no_transaction_is_lost() -> None:
    node = FakeNode()
    raws = [n.to_bytes(4, "big") for n in range(40)]
    result = asyncio.run(_run(node, raws))
    assert node.admitted == set(range(40))
    assert result["confirmed"] == 40 and result["errors"] == 0, result
    assert result["refused_busy"] == 1
    # the other clients waited out the retryAfter instead of running past the refused nonce: only the
    # sends already in flight when the refusal came arrived during the pause (at most clients - 1)
    assert node.sends_during_pause <= 3
    assert result["resent_after_nonce_gap"] >= 1  # those beyond the gap went again once nonce 5 was in
    # confirmed by following the blocks: each transaction's receipt was asked for exactly once
    assert node.receipt_asks == {"0x" + keccak256(raw).hex(): 1 for raw in raws}
    assert result["receipt_requests"] == 40


def test_ingest_streams_anchor_distinct_digests_so_no_transaction_reverts() -> None:
    from chainshare.bench import presign_streams
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import decode_transaction

    keys = [bytes([k + 1]) * 32 for k in range(4)]
    streams = presign_streams(keys, 1337, 42)
    assert [len(s) for s in streams] == [11, 11, 10, 10]
    digests = set()
    for key, stream in zip(keys, streams, strict=True):
        txs = [decode_transaction(raw, 1337) for raw in stream]
        assert [tx.nonce for tx in txs] == list(range(len(stream)))
        assert {tx.sender for tx in txs} == {address_of_private_key(key)}
        digests.update(tx.data[4:] for tx in txs)
    assert len(digests) == 42  # one shared salt anchored each digest four times: three of four reverted
