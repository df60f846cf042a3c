"""A small HTTP load balancer in front of the explorer's api replicas, so that a rolling restart loses
no request (``chainshare explorer balance``; ``explorer up --replicas N`` with N > 1 starts one).

Requests go round robin to the upstreams. A GET or HEAD (idempotent: the explorer api is read-only)
whose replica fails before its whole answer arrived (connection refused, reset or closed while the
replica drains on SIGTERM) or answers 502/503/504 is sent again to the next replica, each replica at
most once per request; a request of any other method is sent again only if the connection was refused
(it never left). A replica that refused a connection is skipped for ``cooldown_s`` seconds. Bodies
and answers are size-limited; the answer is buffered whole before it is forwarded, so a client never
sees half an answer. ``GET /_balancer`` returns the counters (served, retried, failed per upstream).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chainshare.errors import ConfigError

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade", "host", "content-length"})


@dataclass(frozen=True)
class BalancerConfig:
    """Where to send requests and the limits of one request."""

    upstreams: tuple[str, ...]
    cooldown_s: float = 2.0
    timeout_s: float = 30.0
    max_body_bytes: int = 1 << 20
    max_response_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError("the balancer needs at least one upstream URL")
        for url in self.upstreams:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"upstream {url!r} must start with http:// or https://")


class _TooLarge(Exception):
    pass


def create_balancer_app(config: BalancerConfig) -> Starlette:
    """The balancer as an ASGI app (serve it with uvicorn)."""
    upstreams = tuple(u.rstrip("/") for u in config.upstreams)
    turn = itertools.count()
    down_until = dict.fromkeys(upstreams, 0.0)
    counters = {u: {"served": 0, "retried": 0, "failed": 0} for u in upstreams}
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        clients["http"] = httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False)
        try:
            yield
        finally:
            await clients["http"].aclose()

    def order() -> list[str]:
        start = next(turn) % len(upstreams)
        rotated = upstreams[start:] + upstreams[:start]
        now = time.monotonic()
        return sorted(rotated, key=lambda u: down_until[u] > now)  # stable: healthy ones first, in turn

    async def forward(upstream: str, request: Request, body: bytes) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        async with clients["http"].stream(request.method, url, headers=headers, content=body) as answer:
            data = bytearray()
            async for chunk in answer.aiter_raw():
                data += chunk
                if len(data) > config.max_response_bytes:
                    raise _TooLarge
            kept = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in HOP_BY_HOP]
            response = Response(bytes(data), status_code=answer.status_code)
            for k, v in kept:
                response.headers.append(k, v)
            return response

    async def proxy(request: Request) -> Response:
        body = await request.body()
        if len(body) > config.max_body_bytes:
            return JSONResponse({"error": f"request body larger than {config.max_body_bytes} bytes"}, 413)
        idempotent = request.method in IDEMPOTENT
        last: Response | None = None
        for upstream in order():
            try:
                response = await forward(upstream, request, body)
            except httpx.ConnectError:
                down_until[upstream] = time.monotonic() + config.cooldown_s
                counters[upstream]["retried"] += 1
                continue  # refused: the request never left, any method may go elsewhere
            except _TooLarge:
                counters[upstream]["failed"] += 1
                return JSONResponse({"error": "upstream answer too large"}, 502)
            except httpx.HTTPError as exc:
                counters[upstream]["retried" if idempotent else "failed"] += 1
                if not idempotent:
                    return JSONResponse({"error": f"upstream failed: {type(exc).__name__}"}, 502)
                continue
            if idempotent and response.status_code in RETRY_STATUSES:
                counters[upstream]["retried"] += 1
                last = response
                continue
            counters[upstream]["served"] += 1
            return response
        return last or JSONResponse({"error": "no api replica answered"}, 502)

    async def status(_request: Request) -> Response:
        now = time.monotonic()
        return JSONResponse({"upstreams": [{"url": u, "down": down_until[u] > now, **counters[u]}
                                           for u in upstreams]})

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/_balancer", status, methods=["GET"]),
                             Route("/{path:path}", proxy, methods=methods)], lifespan=lifespan)
