"""Requests from the CLI to the agency's own node: its error answers as chainshare errors, and the
signature headers of a request the agency signs (audience = the node's name and chain id, a fresh
time and nonce), shared by ``dataset`` and ``joint`` commands."""

from __future__ import annotations

import secrets
import time
from typing import Any, NoReturn

import httpx

from chainshare.client import NodeUnreachable
from chainshare.errors import ChainshareError, InvalidInput, NotFound, Unauthorized
from chainshare.sharing import protocol as wire

REQUEST_TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)
_STATUS_ERRORS: dict[int, type[ChainshareError]] = {400: InvalidInput, 401: Unauthorized, 403: Unauthorized,
                                                     404: NotFound, 413: InvalidInput, 422: InvalidInput}


def raise_api_error(response: httpx.Response) -> NoReturn:
    """The node's ``{"error": {"type", "message"}}`` as the matching chainshare error."""
    try:
        response.read()
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError, httpx.HTTPError):
        message = f"HTTP {response.status_code}: {response.text[:300]}"
    raise _STATUS_ERRORS.get(response.status_code, ChainshareError)(message)


def api_get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET ``/api/v1{path}`` of the node at ``url``."""
    try:
        response = httpx.get(url.rstrip("/") + "/api/v1" + path, params=params, timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot reach node at {url}: {exc}") from exc
    if response.status_code != 200:
        raise_api_error(response)
    return response.json()


def get_node_audience(url: str) -> tuple[str, int]:
    """The node's name and chain id, which every signed request names (no other node replays it)."""
    status = api_get(url, "/status")
    try:
        return str(status["name"]), int(status["chain_id"])
    except (KeyError, TypeError, ValueError):
        raise ChainshareError(f"the node at {url} did not say its name and chain id (GET /api/v1/status)") from None


def new_request_stamp() -> tuple[int, bytes]:
    """A signed request's time and random nonce."""
    return int(time.time()), secrets.token_bytes(16)


def compute_signed_headers(key: bytes, message: str, timestamp: int, nonce: bytes) -> dict[str, str]:
    """The headers carrying the agency's signature over ``message`` and the stamp it names."""
    return {wire.SIGNATURE_HEADER: "0x" + wire.sign_personal_message(key, message).hex(),
            wire.TIMESTAMP_HEADER: str(timestamp), wire.NONCE_HEADER: "0x" + nonce.hex()}
