"""The one mapping of chainshare errors to HTTP statuses and JSON-RPC (EIP-1474) error objects."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from chainshare.errors import ChainshareError, ExecutionReverted

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
LIMIT_EXCEEDED = -32005


def rpc_error(exc: ChainshareError) -> dict[str, Any]:
    err: dict[str, Any] = {"code": exc.rpc_code, "message": exc.message}
    if isinstance(exc, ExecutionReverted):
        err["message"] = f"execution reverted: {exc.message}" if exc.message else "execution reverted"
        err["data"] = exc.data
    elif exc.data is not None:
        err["data"] = exc.data
    return err


def http_error(exc: ChainshareError) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"error": {"type": type(exc).__name__, "message": exc.message}}
    if exc.data is not None:
        body["error"]["data"] = exc.data
    return exc.http_status, body


class ErrorDetail(BaseModel):
    type: str
    message: str
    data: Any = None


class ErrorBody(BaseModel):
    """What every refusal of a REST API answers: ``{"error": {"type", "message", "data"?}}``."""

    error: ErrorDetail


# The refusals a REST route documents in OpenAPI (FastAPI's own 422 is never sent: invalid parameters are 400).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused: 400 malformed request, 403 not allowed, 404 not found, "
            "405 wrong method, 413 over a size or work limit, 429 over a rate limit (with Retry-After)"},
}


def compute_allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route of ``app`` takes at the request's path (Starlette's own 405 names only the
    first matching route's, e.g. GET of a path that also takes POST on another route)."""
    return [method for method in _HTTP_METHODS
            if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)]


_HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def install_request_error_handlers(app: FastAPI) -> None:
    """Answer routing errors (404/405) and invalid parameters (400) as ``{"error": {"type", "message"}}``,
    like every ChainshareError, in every FastAPI app of the project (the node's REST API, the explorer)."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidInput")
        headers = exc.headers
        allowed = compute_allowed_methods(app, request.scope) if exc.status_code == 405 else []
        if allowed:  # RFC 9110: a 405 lists every method of the resource, over all its routes
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return JSONResponse({"error": {"type": kind, "message": str(exc.detail)}}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse({"error": {"type": "InvalidInput", "message": msgs}}, status_code=400)
