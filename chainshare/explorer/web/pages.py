"""Server-rendered pages for auditors, mounted on the explorer API app.

Every page reads through the API's own endpoint functions (the same queries, views and keyset
pagination; see ``queries`` for the two the API lacks), works without JavaScript, links the CSV
of each list (the API's ``?format=csv``) and never shows a stack trace: an unknown id is a
friendly 404, a malformed one a 400 saying what is expected, a database outage a 503. The
transaction page embeds the proof (Merkle paths, encoded header, QC, the epoch's validator set, block 0's
header, the genesis set and the epoch-change proofs that prove the set from it) that
``static/verify.bundle.js`` checks in the browser.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ChainshareError, NotFound
from chainshare.explorer.web import queries
from chainshare.explorer.web.live import After, LiveEvent, get_resume_point, stream_live_events
from chainshare.logs import log_event

log = logging.getLogger("chainshare.explorer.web")
HERE = Path(__file__).resolve().parent
HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")
ADDR_RE = re.compile(r"0x[0-9a-fA-F]{40}")
PAGE = 25
MAX_CURSOR = 2**62


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


# -- template filters -------------------------------------------------------------------------------
def f_num(n: Any) -> str:
    return "" if n is None else f"{n:,}" if isinstance(n, int) else str(n)


def f_short(h: Any, link: str | None = None) -> Markup:
    """A hash shortened for reading, the full value in the title and behind a copy button."""
    if h is None:
        return Markup("<span class=muted>—</span>")
    h = str(h)
    short = h if len(h) <= 18 else f"{h[:10]}…{h[-6:]}"
    text = Markup('<span class="mono hash" title="{0}">{1}</span>').format(h, short)
    if link:
        text = Markup('<a href="{0}">{1}</a>').format(link, text)
    return text + Markup(' <button type=button class=copy data-copy="{0}" aria-label="Copy {0}">copy</button>').format(h)


def f_time(ms: Any) -> Markup:
    """UTC in the text (works without JS); local time added by the page's script."""
    if ms is None:
        return Markup("")
    t = dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC)
    return Markup('<time datetime="{0}">{1}</time>').format(t.isoformat(), t.strftime("%Y-%m-%d %H:%M:%S UTC"))


def f_duration(seconds: Any) -> str:
    """A duration for reading: 0.7 s, 42 s, 5 min 3 s, 3 h 12 min, 1,117 days."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400 * 2:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400):,} days"


def f_json(v: Any) -> str:
    return json.dumps(v, indent=1, sort_keys=True, ensure_ascii=False)


def get_time_buckets(items: list[dict[str, Any]], now_s: int, width: int, count: int) -> list[dict[str, Any]]:
    """``count`` consecutive buckets of ``width`` seconds ending at ``now_s`` (empty ones at zero), oldest first."""
    have = {int(x["bucket"]): x for x in items}
    last = now_s // width * width
    return [have.get(b, {"bucket": b, "txs": 0, "tx_per_s": 0.0})
            for b in range(last - (count - 1) * width, last + 1, width)]


@dataclass(frozen=True)
class PageTools:
    """What the credit and joint-job pages borrow from ``mount_pages``: its page decorator (errors render as
    on every page), renderer, cursor parser, the API's endpoint functions and the proof bundles."""

    page: Callable[[str], Callable[..., Any]]
    render: Callable[..., HTMLResponse]
    cursor: Callable[[Request], int | None]
    endpoints: dict[str, Callable[..., Any]]
    proof_bundle: Callable[[str], tuple[dict[str, Any], dict[str, Any]]]
    page_error: Callable[[int, str, str], Exception]
    verifier_installed: Callable[[], bool]


def page_link(kind: str, ident: Any) -> str:
    return {"block": "/block/{}", "tx": "/tx/{}", "address": "/address/{}", "agency": "/agency/{}",
            "dataset": "/dataset/{}", "credit_subject": "/credit/subjects/{}", "credit_record": "/credit/records/{}"}[kind].format(quote(str(ident), safe=""))


def get_endpoints(app: FastAPI) -> dict[str, Callable[..., Any]]:
    """``app``'s API endpoint functions by route name, those of included routers too (since FastAPI 0.137
    ``app.routes`` holds an included router as one entry, which ``iter_route_contexts`` expands); for an
    endpoint answered by ``answered_as_json``, the function that returns the data."""
    return {c.name: getattr(c.endpoint, "__wrapped__", c.endpoint) for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute) and c.name is not None and c.endpoint is not None}


def mount_pages(app: FastAPI, reader: Engine) -> None:
    """Add the pages, their static assets and an HTML error page to ``app`` (the explorer API)."""
    ep = get_endpoints(app)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(num=f_num, short=f_short, time=f_time, tojson_pretty=f_json, duration=f_duration)
    env.globals.update(page_link=page_link, quote=quote)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return render(request, "error.html", status, title=title, message=message)

    def page(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a page; map every failure to a readable error page."""
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def handler(request: Request) -> Response:
                t0 = time.perf_counter()
                response = await respond(request)
                response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
                return response

            async def respond(request: Request) -> Response:
                try:
                    return await run_in_threadpool(fn, request, **request.path_params)
                except PageError as exc:
                    return error_page(request, exc.status, exc.title, exc.message)
                except NotFound as exc:
                    return error_page(request, 404, "Not found", exc.message)
                except ChainshareError as exc:
                    return error_page(request, 400, "Cannot show this", exc.message)
                except SQLAlchemyError as exc:
                    log_event(log, logging.ERROR, "database error", path=request.url.path, error=str(exc)[:300])
                    return error_page(request, 503, "Explorer database unavailable",
                                      "The explorer cannot read its database right now; try again shortly.")
            app.add_api_route(path, handler, methods=["GET"], include_in_schema=False, name="page:" + path,
                              response_class=HTMLResponse)
            return fn
        return wrap

    def cursor(request: Request) -> int | None:
        b = request.query_params.get("before")
        if b is None or b == "":
            return None
        value = parse_ascii_decimal(b, max_digits=len(str(MAX_CURSOR)))
        if value is None or value > MAX_CURSOR:
            raise PageError(400, "Bad page cursor", "'before' must be a page cursor as given by a 'next' link.")
        return value

    def status() -> dict[str, Any]:
        return dict(ep["status"]())

    chain: dict[str, Any] = {}

    def get_chain_id() -> int:
        """The indexed chain's id (fixed for a database's life: read once, with its genesis hash)."""
        if "id" not in chain:
            st = status()
            if st["chain_id"] is None:
                raise PageError(503, "Explorer not ready", "The indexer has not recorded the chain yet.")
            chain.update(id=int(st["chain_id"]), genesis_hash=st["genesis_hash"])
        return int(chain["id"])

    # -- home ------------------------------------------------------------------------------------
    @page("/")
    def home(request: Request) -> HTMLResponse:
        st = status()
        blocks = ep["list_blocks"](limit=10)["items"]
        txs = ep["list_txs"](limit=10)["items"]
        interval = "hour" if request.query_params.get("range") == "day" else "minute"
        stats = ep["stats"](interval=interval, limit=24 if interval == "hour" else 60)
        vsets = ep["validators"]()["epochs"]
        current = vsets[-1] if vsets else {"epoch": None, "items": []}
        seen, signed = queries.get_recent_signers(reader, 100)
        now_ms = int(time.time() * 1000)
        finality_lag_s = (now_ms - blocks[0]["timestamp_ms"]) / 1000 if blocks else None
        bars = get_time_buckets(stats["items"], now_ms // 1000, 60 if interval == "minute" else 3600,
                                60 if interval == "minute" else 24)
        peak = max([b["tx_per_s"] for b in bars] + [0.001])
        return render(request, "home.html", st=st, blocks=blocks, txs=txs, bars=bars, peak=peak, interval=interval,
                      totals=stats.get("totals"), current=current, seen=seen, signed=signed,
                      finality_lag_s=finality_lag_s)

    # -- blocks and transactions ----------------------------------------------------------------
    @page("/blocks")
    def blocks_page(request: Request) -> HTMLResponse:
        out = ep["list_blocks"](before=cursor(request), limit=PAGE)
        return render(request, "blocks.html", page=out, csv="/api/v1/blocks?format=csv&limit=1000")

    @page("/txs")
    def txs_page(request: Request) -> HTMLResponse:
        out = ep["list_txs"](before=cursor(request), limit=PAGE)
        return render(request, "txs.html", page=out, title="Transactions", csv="/api/v1/txs?format=csv&limit=1000")

    @page("/block/{block_id}")
    def block_page(request: Request, block_id: str) -> HTMLResponse:
        if not (re.fullmatch(r"[0-9]{1,15}", block_id) or HASH_RE.fullmatch(block_id)):
            raise PageError(400, "Not a block id", f"{block_id[:80]!r} is neither a block number nor a 0x-prefixed "
                            "64-hex-digit block hash.")
        b = ep["get_block"](block_id=block_id)
        h = b["height"]
        txs = ep["list_txs"](before=cursor(request), limit=PAGE, from_block=h, to_block=h)
        vals = {x["index"]: x for x in _epoch_set(b["epoch"])["validators"]}
        signed = {x["index"] for x in b["qc_signers"]}
        missing = [x for i, x in sorted(vals.items()) if i not in signed]
        return render(request, "block.html", b=b, txs=txs, missing=missing,
                      csv=f"/api/v1/txs?format=csv&limit=1000&from_block={h}&to_block={h}")

    def _epoch_set(epoch: int) -> dict[str, Any]:
        for e in ep["validators"]()["epochs"]:
            if e["epoch"] == epoch:
                return {"epoch": epoch, "activation_height": e["activation_height"],
                        "validators": [_member(x) for x in e["items"]]}
        return {"epoch": epoch, "activation_height": 0, "validators": []}

    def _member(x: dict[str, Any]) -> dict[str, Any]:
        return {"index": x["index"], "name": x["name"], "agency": x["agency"], "address": x["address"],
                "bls_public_key": x["bls_public_key"], "bls_pop": x.get("bls_pop")}

    def get_proof_bundle(tx_hash: str) -> tuple[dict[str, Any], dict[str, Any]]:
        tx = ep["get_tx"](tx_hash=tx_hash.lower())
        b = ep["get_block"](block_id=str(tx["block_height"]))
        p = tx["proof"]
        bundle = {
            "format": "chainshare-explorer-proof/v1", "chain_id": get_chain_id(), "epoch": b["epoch"],
            "tx_hash": tx["hash"], "block_height": tx["block_height"], "block_hash": p["block_hash"],
            "header": p["header"], "parent_header": p.get("parent_header"),
            # the set is proven from block 0, whose hash is the network's genesis hash: for epoch 0 it is the
            # set block 0 commits to, for a later epoch the epoch-change proofs walk there from that set
            "genesis_hash": chain["genesis_hash"],
            "genesis_header": ep["get_block"](block_id="0")["header"],
            "genesis_set": _epoch_set(0), "epoch_changes": p.get("epoch_changes", []),
            "qc": p["qc"]["encoded"] if p["qc"] else None,
            "transaction": p["transaction"], "receipt": p["receipt"],
            "validators": _epoch_set(b["epoch"])["validators"]}
        return tx, bundle

    @page("/tx/{tx_hash}")
    def tx_page(request: Request, tx_hash: str) -> HTMLResponse:
        if not HASH_RE.fullmatch(tx_hash):
            raise PageError(400, "Not a transaction hash",
                            f"{tx_hash[:80]!r} is not a transaction hash: expected 0x followed by 64 hex digits.")
        tx, bundle = get_proof_bundle(tx_hash)
        return render(request, "tx.html", tx=tx, bundle=bundle, verifier=(HERE / "static" / "verify.bundle.js").exists(),
                      bundle_json=Markup(json.dumps(bundle).replace("<", "\\u003c")))

    @app.get("/tx/{tx_hash}/proof.json", include_in_schema=False)
    def tx_proof(tx_hash: str) -> Response:
        if not HASH_RE.fullmatch(tx_hash):
            return JSONResponse({"error": {"type": "InvalidInput", "message": "expected 0x + 64 hex digits"}}, 400)
        _, bundle = get_proof_bundle(tx_hash)
        return JSONResponse(bundle, headers={"Content-Disposition": f'attachment; filename="proof-{tx_hash[:18]}.json"'})

    # -- agencies and addresses -----------------------------------------------------------------
    @page("/agencies")
    def agencies_page(request: Request) -> HTMLResponse:
        out = ep["list_agencies"](limit=1000)
        return render(request, "agencies.html", items=out["items"], csv="/api/v1/agencies?format=csv&limit=1000")

    @page("/agency/{name:path}")  # a name may hold a "/"
    def agency_page(request: Request, name: str) -> HTMLResponse:
        if len(name) > 128:
            raise PageError(400, "Name too long", "Agency names are at most 128 characters.")
        a = ep["get_agency"](name=name)
        vals = [dict(x, epoch=e["epoch"]) for e in ep["validators"]()["epochs"][-1:] for x in e["items"]
                if x["agency"] == name]
        datasets = ep["list_datasets"](limit=100, owner=name)["items"]
        history = queries.get_agency_history(reader, name, 50)
        try:
            ca: dict[str, Any] | None = ep["get_ca"]()
        except NotFound:
            ca = None
        return render(request, "agency.html", a=a, vals=vals, datasets=datasets, history=history, ca=ca,
                      csv=f"/api/v1/datasets?format=csv&limit=1000&owner={quote(name)}")

    @page("/address/{address}")
    def address_page(request: Request, address: str) -> HTMLResponse:
        if not ADDR_RE.fullmatch(address):
            raise PageError(400, "Not an address", f"{address[:80]!r} is not an address: expected 0x + 40 hex digits.")
        address = address.lower()
        out = ep["address_txs"](address=address, before=cursor(request), limit=PAGE)
        hits = ep["search"](q=address, limit=1)["items"]
        agency = hits[0].get("agency") if hits else None
        if not out["items"] and cursor(request) is None and not agency:
            raise NotFound(f"the address {address} has no indexed activity")
        return render(request, "txs.html", page=out, title=f"Address {address}", address=address, agency=agency,
                      csv=f"/api/v1/addresses/{address}/txs?format=csv&limit=1000")

    # -- datasets -----------------------------------------------------------------------------------
    @page("/datasets")
    def datasets_page(request: Request) -> HTMLResponse:
        out = ep["list_datasets"](before=cursor(request), limit=PAGE)
        return render(request, "datasets.html", page=out, csv="/api/v1/datasets?format=csv&limit=1000")

    @page("/dataset/{dataset_id}")
    def dataset_page(request: Request, dataset_id: str) -> HTMLResponse:
        if not re.fullmatch(r"[0-9]{1,15}", dataset_id):
            raise PageError(400, "Not a dataset id", f"{dataset_id[:80]!r} is not a dataset id (a number).")
        d = ep["get_dataset"](dataset_id=int(dataset_id))
        hist = ep["dataset_history"](dataset_id=int(dataset_id), before=cursor(request), limit=200)
        return render(request, "dataset.html", d=d, history=list(reversed(hist["items"])),
                      next_before=hist["next_before"],
                      csv=f"/api/v1/datasets/{int(dataset_id)}/history?format=csv&limit=1000000")

    # -- validators, governance, evidence ------------------------------------------------------
    @page("/validators")
    def validators_page(request: Request) -> HTMLResponse:
        seen, signed = queries.get_recent_signers(reader, 100)
        return render(request, "validators.html", epochs=list(reversed(ep["validators"]()["epochs"])), seen=seen,
                      signed=signed)

    @page("/governance")
    def governance_page(request: Request) -> HTMLResponse:
        out = ep["proposals"](before=cursor(request), limit=PAGE)
        return render(request, "governance.html", page=out, csv="/api/v1/governance/proposals?format=csv&limit=1000")

    @page("/governance/{proposal_id}")
    def proposal_page(request: Request, proposal_id: str) -> HTMLResponse:
        if not re.fullmatch(r"[0-9]{1,15}", proposal_id):
            raise PageError(400, "Not a proposal id", "A proposal id is a number.")
        return render(request, "proposal.html", p=ep["proposal"](proposal_id=int(proposal_id)))

    @page("/evidence")
    def evidence_page(request: Request) -> HTMLResponse:
        out = ep["list_evidence"](before=cursor(request), limit=PAGE)
        return render(request, "evidence.html", page=out, csv="/api/v1/evidence?format=csv&limit=1000")

    # -- search ------------------------------------------------------------------------------------
    @page("/search")
    def search_page(request: Request) -> Response:
        q = (request.query_params.get("q") or "").strip()
        if not q:
            raise PageError(400, "Empty search", "Type a block number, a block or transaction hash (0x + 64 hex "
                            "digits), an address (0x + 40 hex digits), an agency name or a dataset id or title.")
        if len(q) > 128:
            raise PageError(400, "Search too long", "A search is at most 128 characters.")
        hint = None
        if q.startswith("0x") and not (HASH_RE.fullmatch(q) or ADDR_RE.fullmatch(q)):
            body = q[2:]
            if re.search(r"[^0-9a-fA-F]", body):
                hint = f"{q!r} starts with 0x but has characters that are not hex digits."
            else:
                hint = (f"{q!r} has {len(body)} hex digits: a block or transaction hash has 64, an address 40.")
        items = [] if hint else ep["search"](q=q, limit=20)["items"]
        exact = [x for x in items if x["score"] >= 1.0]
        if len(exact) == 1 or (items and len(items) == 1):
            best = exact[0] if exact else items[0]
            return RedirectResponse(page_link(best["kind"], best["id"]), status_code=303)
        status_code = 200 if items else (400 if hint else 404)
        return render(request, "search.html", status_code, q=q, items=items, hint=hint)

    # -- live updates (server-sent events) ---------------------------------------------------------
    @app.get("/live/blocks", include_in_schema=False)
    def live_blocks(request: Request, after: After = None) -> StreamingResponse:
        """New finalized blocks (and their transactions) as they are indexed: one SSE event per block."""
        last = get_resume_point(request, after)

        def poll(limit: int) -> list[LiveEvent]:
            nonlocal last
            blocks = ep["list_blocks"](limit=limit)["items"]
            if last is None:
                last = blocks[0]["height"] if blocks else -1
            new = [b for b in reversed(blocks) if b["height"] > last]
            if not new:
                return []
            st = status()  # once a poll: every event of it reports the index as this poll found it
            progress = {"indexed_height": st["indexed_height"], "lag": st["lag"]}
            events = [LiveEvent("block", b["height"], {
                "block": b, "txs": ep["list_txs"](limit=20, from_block=b["height"], to_block=b["height"])["items"],
                "status": progress}) for b in new]
            last = new[-1]["height"]  # only once every event is made (a failed read leaves them for the next poll)
            return events

        return stream_live_events(request, poll)

    from chainshare.explorer.web.credit import mount_credit_pages
    from chainshare.explorer.web.joint import mount_joint_pages

    kit = PageTools(page, render, cursor, ep, get_proof_bundle, PageError,
                    lambda: (HERE / "static" / "verify.bundle.js").exists())
    mount_credit_pages(app, reader, kit)
    mount_joint_pages(kit)

    # -- HTML errors outside /api ------------------------------------------------------------------
    api_http_error = app.exception_handlers.get(StarletteHTTPException)

    async def http_error(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path.startswith("/api") or not isinstance(exc, StarletteHTTPException):
            assert api_http_error is not None
            return await api_http_error(request, exc)  # type: ignore[misc,no-any-return]
        if exc.status_code == 404:
            return error_page(request, 404, "Page not found",
                              f"There is no page at {path[:200]}. Use the search box, or start from the home page.")
        return error_page(request, exc.status_code, "Cannot show this", str(exc.detail)[:300])

    app.add_exception_handler(StarletteHTTPException, http_error)
