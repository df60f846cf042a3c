"""The explorer verifies a pasted zero-knowledge credit proof: a page with a form (``/credentials/verify``) and
a JSON endpoint (``POST /api/v1/credentials/verify``). Verification runs here with ``anoncreds``, against the
issuer's objects and the latest revocation status list read from a node's public JSON-RPC (the explorer
imports no node internals). The body is size-limited; anything that is not a proof is a 400 saying what is
wrong; an unreachable node is a 503; never a 500."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ChainshareError, InvalidInput, NotFound
from chainshare.logs import log_event

log = logging.getLogger("chainshare.explorer.web.credentials")
TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_BODY = 3 * 256 * 1024  # a proof (<= 256 KiB) form-encoded


def verify_pasted(node_url: str, proof: str, nonce: str, required: str) -> dict[str, Any]:
    """The verdict on ``proof`` for ``nonce`` (and the ``required`` predicates, comma-separated) against the
    chain behind ``node_url``; InvalidInput for what is not a proof."""
    from chainshare.client import NodeClient
    from chainshare.credit import credential_chain, credentials

    claim = credentials.parse_proof(proof.encode())
    credentials.check_nonce(nonce.strip())
    needed = credentials.parse_predicates([p for p in required.split(",") if p.strip()]) if required.strip() else ()
    with NodeClient(node_url, timeout=30) as client:
        try:
            public = credential_chain.read_public_objects(client, claim.cred_def_id, claim.rev_reg_id)
        except NotFound as exc:
            return {"valid": False, "reason": f"the issuer's objects are not on this chain: {exc.message}",
                    "predicates": [str(p) for p in claim.predicates]}
    return credentials.verify_proof(claim, nonce.strip(), public, needed).to_json()


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    size = None if declared is None else parse_ascii_decimal(declared, max_digits=len(str(MAX_BODY)))
    if declared is not None and (size is None or size > MAX_BODY):
        raise InvalidInput(f"the request body is at most {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise InvalidInput(f"the request body is at most {MAX_BODY} bytes")
    return body


def _fields(body: bytes, content_type: str) -> dict[str, str]:
    if content_type.startswith("application/json"):
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise InvalidInput(f"the body is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidInput('send {"proof": <the proof document or its text>, "nonce": "..."}')
        proof = obj.get("proof")
        proof_text = proof if isinstance(proof, str) else json.dumps(proof)
        return {"proof": proof_text, "nonce": str(obj.get("nonce", "")), "require": str(obj.get("require", ""))}
    try:
        form = parse_qs(body.decode(), max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the form is not valid: {exc}") from None
    return {k: form.get(k, [""])[0] for k in ("proof", "nonce", "require")}


def mount_credential_pages(app: FastAPI, node_url: str | None) -> None:
    """Add the proof-verification page and endpoint to ``app``; with no ``node_url`` they answer 503."""
    templates = Jinja2Templates(directory=str(TEMPLATES))

    def page(request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, "credentials.html", {"node": bool(node_url), **ctx},
                                          status_code=status)

    async def check(request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        fields: dict[str, str] = {}
        if node_url is None:
            return 503, {"error": "this explorer was started without --node: it cannot read the chain"}, fields
        try:
            fields = _fields(await _read_body(request), request.headers.get("content-type", ""))
            verdict = await run_in_threadpool(verify_pasted, node_url, fields["proof"], fields["nonce"],
                                              fields["require"])
            return 200, verdict, fields
        except InvalidInput as exc:
            return 400, {"error": exc.message}, fields
        except ChainshareError as exc:
            log_event(log, logging.WARNING, "credential verification: node unavailable", error=exc.message[:300])
            return 503, {"error": f"the node cannot be read right now: {exc.message}"}, fields

    async def form(request: Request) -> Response:
        return page(request)

    async def submit(request: Request) -> Response:
        status, result, fields = await check(request)
        return page(request, status, result=result, fields=fields)

    async def api(request: Request) -> Response:
        status, result, _ = await check(request)
        return JSONResponse(result, status_code=status)

    app.add_api_route("/credentials/verify", form, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
    app.add_api_route("/credentials/verify", submit, methods=["POST"], include_in_schema=False,
                      response_class=HTMLResponse)
    app.add_api_route("/api/v1/credentials/verify", api, methods=["POST"], include_in_schema=False,
                      summary="Verify a zero-knowledge credit proof against the chain")
