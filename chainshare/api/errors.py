"""The one mapping of chainshare errors to HTTP statuses and JSON-RPC (EIP-1474) error objects."""

from __future__ import annotations

from typing import Any

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
