"""The indexer's websocket head follower against a server speaking the standard eth_subscribe
protocol, and its fallback to polling when no subscription can be held."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from chainshare.explorer.indexer.follow import WebsocketHeads, to_ws_url


class FakeNode:
    """eth_subscribe("newHeads") / eth_subscription / eth_unsubscribe, as geth serves them."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        from websockets.asyncio.server import serve

        self.server = await serve(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, ws: Any) -> None:
        sub = "0x9cef478923ff08bf67fde6c64013158d"
        async for raw in ws:
            req = json.loads(raw)
            self.requests.append(req)
            if req["method"] == "eth_subscribe" and req["params"] == ["newHeads"]:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": sub}))
                for n in (5, 6, 7):
                    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                                              "params": {"subscription": sub, "result": {"number": hex(n)}}}))
            elif req["method"] == "eth_unsubscribe":
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": True}))

    def close(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_ws_url_of_an_rpc_url() -> None:
    assert to_ws_url("http://127.0.0.1:8545") == "ws://127.0.0.1:8545"
    assert to_ws_url("https://node.example") == "wss://node.example"


def test_new_heads_arrive_over_the_subscription_and_it_is_cancelled_on_close() -> None:
    node = FakeNode()
    heads = WebsocketHeads(f"http://127.0.0.1:{node.port}", poll_interval=5.0, stop=threading.Event())
    try:
        deadline = time.monotonic() + 10
        latest = None
        while latest != 7 and time.monotonic() < deadline:
            latest = heads.wait(1.0)
        assert latest == 7 and heads.connected
    finally:
        heads.close()
    time.sleep(0.3)
    methods = [r["method"] for r in node.requests]
    node.close()
    assert methods[0] == "eth_subscribe" and "eth_unsubscribe" in methods


def test_without_a_subscription_it_falls_back_to_polling() -> None:
    heads = WebsocketHeads("http://127.0.0.1:9", poll_interval=0.2, stop=threading.Event())  # nothing listens
    try:
        assert heads.wait(5.0) is None  # returns at the poll interval with no head learnt
        assert not heads.connected
    finally:
        heads.close()
