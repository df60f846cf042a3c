"""Person-handle lookups served by a registrar agency over mutual TLS.

A member that needs a person's handle (an issuer about to publish, an authorised reader) sends the resident ID
to a registrar's lookup service over mutual TLS with its node certificate (consortium CA). The registrar:
1. identifies the requester's agency from its verified certificate (``chainshare.p2p.tls.verify_peer``) and
   refuses agencies that are not active members of its own chain;
2. authorises the lookup with Cedar (``DEFAULT_LOOKUP_POLICY`` unless the registrar configures another):
   principal ``Agency`` with attributes ``issuer`` (authorised for at least one category) and ``registrar``,
   action ``resolve_handle``, context ``purpose``;
3. rate-limits each agency (a token bucket);
4. records the decision on chain (``CreditRegistry.recordHandleLookup``: who asked, purpose, allowed or not,
   the reason; never the ID or the handle) and answers only once the record is final;
5. answers the handle (HMAC under the registrar key, ``chainshare.credit.subjects``) or a refusal (403/429).
Decisions (``decide_lookup``, ``TokenBucket``) are pure; the classes around them only do I/O.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cedarpy

from chainshare.credit.subjects import compute_person_handle
from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.p2p.errors import PeerRefused
from chainshare.p2p.tls import TlsIdentity, build_client_context, build_server_context, verify_peer

ACTION = "resolve_handle"
DEFAULT_LOOKUP_POLICY = (
    '// Issuers resolve handles to publish; other agencies only if Governance made them registrars.\n'
    'permit (principal, action == Action::"resolve_handle", resource) when { principal.issuer };\n'
    'permit (principal, action == Action::"resolve_handle", resource) when { principal.registrar };\n'
)
MAX_BODY = 4096
MAX_PURPOSE = 256


@dataclass(frozen=True)
class LookupDecision:
    allowed: bool
    status: int  # HTTP status of the answer
    reason: str


@dataclass(frozen=True)
class RequesterFacts:
    """What the registrar's own chain says about the requesting agency."""

    agency: str
    active: bool
    issuer: bool
    registrar: bool


def decide_lookup(facts: RequesterFacts, purpose: str, policy_text: str, rate_ok: bool) -> LookupDecision:
    """The registrar's decision on one lookup (pure; Cedar default-deny)."""
    if not facts.active:
        return LookupDecision(False, 403, f"agency {facts.agency!r} is not an active member")
    entities = json.dumps([
        {"uid": {"type": "Agency", "id": facts.agency},
         "attrs": {"issuer": facts.issuer, "registrar": facts.registrar}, "parents": []},
        {"uid": {"type": "HandleRegistry", "id": "persons"}, "attrs": {}, "parents": []}])
    request = {"principal": {"type": "Agency", "id": facts.agency}, "action": {"type": "Action", "id": ACTION},
               "resource": {"type": "HandleRegistry", "id": "persons"}, "context": {"purpose": purpose}}
    try:
        result = cedarpy.is_authorized(request, policy_text, entities)
    except (ValueError, RuntimeError, TypeError) as exc:
        return LookupDecision(False, 403, f"policy evaluation failed: {exc}")
    if not result.allowed:
        return LookupDecision(False, 403, f"the lookup policy does not permit agency {facts.agency!r}")
    if not rate_ok:
        return LookupDecision(False, 429, f"agency {facts.agency!r} exceeded its lookup rate")
    return LookupDecision(True, 200, "permitted by " + ", ".join(result.diagnostics.reasons))


@dataclass
class TokenBucket:
    """Per-agency token buckets: ``capacity`` lookups at once, refilled at ``per_minute``."""

    capacity: int
    per_minute: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, agency: str, now: float) -> bool:
        tokens, at = self.buckets.get(agency, (float(self.capacity), now))
        tokens = min(float(self.capacity), tokens + (now - at) * self.per_minute / 60.0)
        if tokens < 1.0:
            self.buckets[agency] = (tokens, now)
            return False
        self.buckets[agency] = (tokens - 1.0, now)
        return True


class ChainFacts:
    """Reads the requester's facts from the registrar's own node (its REST API)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")

    def get(self, agency: str) -> RequesterFacts:
        import httpx

        with httpx.Client(timeout=30) as http:
            r = http.get(f"{self.api_url}/agencies/{agency}")
            active = r.status_code == 200 and bool(r.json().get("active"))
            config = http.get(f"{self.api_url}/credit/config").json()
        issuer = any(agency in c.get("issuers", []) for c in config.get("categories", {}).values())
        return RequesterFacts(agency, active, issuer, agency in config.get("registrars", []))


class LookupRecorder:
    """Records each decision on chain as the registrar agency's account, and waits until it is final."""

    def __init__(self, rpc_url: str, account_key: bytes) -> None:
        self.rpc_url = rpc_url
        self.key = account_key
        self.lock = threading.Lock()  # one sender: nonces in order

    def record(self, request_id: bytes, requester: str, purpose: str, decision: LookupDecision) -> str:
        from chainshare.client import NodeClient, transact_checked
        from chainshare.credit.events import REGISTRY
        from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
        from chainshare.execution.runtime import encode_call

        data = encode_call(REGISTRY, "recordHandleLookup", request_id, requester, purpose, decision.allowed,
                           decision.reason[:256])
        with self.lock, NodeClient(self.rpc_url) as client:
            receipt = transact_checked(client, self.key, CREDIT_REGISTRY, data, failure="the lookup could not be recorded",
                                       no_reason="no reason given", timeout=60)
        return str(receipt["transactionHash"])


class RegistrarService:
    """The registrar's lookup endpoint: HTTPS with client certificates required (TLS 1.3, consortium CA)."""

    def __init__(self, identity: TlsIdentity, registrar_key: bytes, facts: ChainFacts, recorder: LookupRecorder,
                 *, policy_text: str = DEFAULT_LOOKUP_POLICY, limiter: TokenBucket | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.identity = identity
        self.registrar_key = registrar_key
        self.facts = facts
        self.recorder = recorder
        self.policy_text = policy_text
        self.limiter = limiter or TokenBucket(30, 30.0)
        self.limiter_lock = threading.Lock()
        self.ca_pem = identity.read_ca_cert()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # never log requests (they carry resident IDs)
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                status, body = service.handle(self)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer((host, port), Handler)
        ctx = build_server_context(identity)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def handle(self, req: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        try:
            subject = verify_peer(req.connection, self.ca_pem, at=datetime.now(UTC), is_allowed=lambda s: True)
        except PeerRefused as exc:
            return 403, {"error": {"type": "Unauthorized", "message": str(exc)}}
        if req.path != "/handle":
            return 404, {"error": {"type": "NotFound", "message": "POST /handle"}}
        try:
            length = parse_ascii_decimal(req.headers.get("content-length") or "0", max_digits=len(str(MAX_BODY)))
            if length is None or not 0 < length <= MAX_BODY:
                raise InvalidInput(f"body must be 1..{MAX_BODY} bytes")
            body = json.loads(req.rfile.read(length))
            resident_id, purpose = body["resident_id"], body["purpose"]
            if not isinstance(purpose, str) or not 1 <= len(purpose) <= MAX_PURPOSE or not isinstance(resident_id, str):
                raise InvalidInput(f"purpose must be 1..{MAX_PURPOSE} characters")
            handle = compute_person_handle(self.registrar_key, resident_id)  # validates the ID first
        except InvalidInput as exc:
            return 400, {"error": {"type": "InvalidInput", "message": exc.message}}
        except (ValueError, KeyError, TypeError):
            return 400, {"error": {"type": "InvalidInput", "message": 'send {"resident_id": ..., "purpose": ...}'}}
        facts = self.facts.get(subject.agency)
        with self.limiter_lock:
            rate_ok = self.limiter.take(subject.agency, time.monotonic())
        decision = decide_lookup(facts, purpose, self.policy_text, rate_ok)
        request_id = os.urandom(32)
        try:
            tx = self.recorder.record(request_id, subject.agency, purpose, decision)
        except ChainshareError as exc:
            return 503, {"error": {"type": "Unavailable", "message": f"not answered: {exc.message}"}}
        out: dict[str, Any] = {"request_id": "0x" + request_id.hex(), "recorded_in": tx, "reason": decision.reason}
        if not decision.allowed:
            kind = "RateLimited" if decision.status == 429 else "Unauthorized"
            return decision.status, {"error": {"type": kind, "message": decision.reason}, **out}
        return 200, {"handle": handle, **out}

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lookup_handle(url: str, identity: TlsIdentity, resident_id: str, purpose: str,
                  timeout: float = 120.0) -> tuple[int, dict[str, Any]]:
    """Ask a registrar's lookup service over mutual TLS; (HTTP status, JSON answer)."""
    import httpx

    ctx: ssl.SSLContext = build_client_context(identity)
    with httpx.Client(verify=ctx, timeout=timeout) as http:
        r = http.post(url.rstrip("/") + "/handle", json={"resident_id": resident_id, "purpose": purpose})
    try:
        return r.status_code, dict(r.json())
    except ValueError:
        return r.status_code, {"error": {"type": "Invalid", "message": r.text[:200]}}
