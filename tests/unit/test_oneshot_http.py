"""One write per response (chainshare/api/oneshot.py): the same bytes as stock uvicorn httptools, with the
head joined to the first body write; and a real server answering through it."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from chainshare.api.oneshot import JOIN_LIMIT, OneWriteCycle, OneWriteHttpToolsProtocol


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Flow:
    write_paused = False


def _cycle(cls: type[RequestResponseCycle], method: str, keep_alive: bool) -> tuple[RequestResponseCycle, _Transport]:
    t = _Transport()
    log = logging.getLogger("test")
    cycle = cls(scope={"method": method, "type": "http"}, transport=t, flow=_Flow(),  # type: ignore[arg-type]
                logger=log, access_logger=log, access_log=False, default_headers=[(b"server", b"x")],
                message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
                on_response=lambda: None)
    return cycle, t


CASES: list[tuple[str, str, bool, int, list[tuple[bytes, bytes]], list[tuple[bytes, bool]]]] = [
    ("json", "POST", True, 200, [(b"content-type", b"application/json"), (b"content-length", b"11")],
     [(b'{"result":1', False)]),
    ("close", "POST", False, 200, [(b"content-length", b"2")], [(b"ok", False)]),
    ("head", "HEAD", True, 200, [(b"content-length", b"5")], [(b"", False)]),
    ("no-content", "GET", True, 204, [], [(b"", False)]),
    ("chunked", "GET", True, 200, [], [(b"ab", True), (b"cd", True), (b"", False)]),
    ("empty-first-chunk", "GET", True, 200, [], [(b"", True), (b"x", False)]),
    ("large", "GET", True, 200, [(b"content-length", str(JOIN_LIMIT + 1).encode())],
     [(b"z" * (JOIN_LIMIT + 1), False)]),
]


@pytest.mark.parametrize("name,method,keep_alive,status,headers,bodies", CASES, ids=[c[0] for c in CASES])
def test_same_bytes_as_stock_and_the_head_joins_the_first_body_write(
        name: str, method: str, keep_alive: bool, status: int, headers: list[tuple[bytes, bytes]],
        bodies: list[tuple[bytes, bool]]) -> None:
    async def run(cls: type[RequestResponseCycle]) -> _Transport:
        cycle, t = _cycle(cls, method, keep_alive)
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
        for body, more in bodies:
            await cycle.send({"type": "http.response.body", "body": body, "more_body": more})
        assert cycle.response_complete
        return t

    stock, one = asyncio.run(run(RequestResponseCycle)), asyncio.run(run(OneWriteCycle))
    assert b"".join(one.writes) == b"".join(stock.writes)
    assert one.closed == stock.closed == (not keep_alive)
    if name == "large":  # not copied: the head on its own
        assert one.writes == stock.writes
    elif name not in ("head", "no-content"):
        assert len(one.writes) == len(stock.writes) - 1  # the head left with the first body write
        assert one.writes[0].startswith(b"HTTP/1.1 ") and one.writes[0] == stock.writes[0] + stock.writes[1]


def test_a_real_server_answers_through_one_write_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_send = OneWriteCycle.send

    async def spy(self: OneWriteCycle, message: Any) -> None:
        seen.append(message["type"])
        await real_send(self, message)

    monkeypatch.setattr(OneWriteCycle, "send", spy)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        body = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario() -> list[Any]:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=OneWriteHttpToolsProtocol,
                                               lifespan="off", log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            out = [(await client.post(f"http://127.0.0.1:{port}/", content=b"x")).json() for _ in range(3)]
            head = await client.head(f"http://127.0.0.1:{port}/")
        server.should_exit = True
        await task
        return [*out, head.status_code, head.headers["content-length"]]

    assert asyncio.run(scenario()) == [{"ok": True}] * 3 + [200, "11"]
    assert seen == ["http.response.start", "http.response.body"] * 4  # every cycle of the connection is one
