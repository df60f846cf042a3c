"""Where the indexer learns of new finalized heads: polling (the default) or a websocket
``eth_subscribe("newHeads")`` subscription, which falls back to polling whenever it is down.

The websocket follower speaks the standard Ethereum pub/sub protocol (``eth_subscribe`` /
``eth_subscription`` notifications / ``eth_unsubscribe``) on the node's RPC URL with ws://.
A head learnt from a notification is only a hint: the indexer always fetches and verifies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Protocol

from chainshare.logs import log_event

log = logging.getLogger("chainshare.explorer.follow")


class HeadSignal(Protocol):
    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` s for news of a new head; the newest head heard of, if any."""

    def close(self) -> None: ...


class PollingHeads:
    """No push: the indexer polls its node every ``interval`` seconds."""

    def __init__(self, interval: float, stop: threading.Event) -> None:
        self.interval = interval
        self.stop = stop

    def wait(self, timeout: float) -> int | None:
        self.stop.wait(min(timeout, self.interval))
        return None

    def close(self) -> None:
        pass


def to_ws_url(url: str) -> str:
    return "ws://" + url[len("http://"):] if url.startswith("http://") else "wss://" + url[len("https://"):]


class WebsocketHeads:
    """A background thread holding one ``newHeads`` subscription (reconnecting with backoff);
    ``wait`` returns as soon as a notification arrives, else after ``poll_interval``."""

    def __init__(self, url: str, poll_interval: float, stop: threading.Event) -> None:
        self.url = to_ws_url(url.rstrip("/")) + "/"
        self.poll_interval = poll_interval
        self.stop = stop
        self.latest: int | None = None
        self.connected = False
        self._news = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-heads", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> int | None:
        self._news.wait(min(timeout, self.poll_interval))
        self._news.clear()
        return self.latest

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                asyncio.run(self._subscribe())
                backoff = 0.5
            except Exception as exc:  # any failure: fall back to polling, retry later
                if self.connected:
                    log_event(log, logging.WARNING, "head subscription lost; polling until it is back",
                              url=self.url, error=str(exc)[:200])
                self.connected = False
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _subscribe(self) -> None:
        import websockets

        async with websockets.connect(self.url, open_timeout=5, max_size=1 << 20) as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            sub = reply.get("result")
            if not isinstance(sub, str):
                raise ConnectionError(f"eth_subscribe refused: {reply.get('error')}")
            self.connected = True
            log_event(log, logging.INFO, "following new heads over websocket", url=self.url, subscription=sub)
            try:
                while not self.stop.is_set():
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    except TimeoutError:
                        continue
                    params = msg.get("params") or {}
                    if msg.get("method") == "eth_subscription" and params.get("subscription") == sub:
                        self.latest = int(params["result"]["number"], 16)
                        self._news.set()
            finally:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_unsubscribe",
                                          "params": [sub]}))
                self.connected = False
