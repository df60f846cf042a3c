"""The credit pages: subject (records, history, score with its explanation), record (versions, lifecycle
timeline, provenance verified in the browser), red and black lists (paged, CSV), and their live updates.

Every page reads through the credit API's endpoint functions, so it shows what ``/api/v1/credit`` answers
(computed by the node's own credit code). The record page embeds, per lifecycle step, the transaction's
proof bundle (as the transaction page does) and the event as indexed; ``verify.js`` checks each block's QC
and Merkle paths, that the event is in its receipt, and that each version points to the previous by hash.
A person's records show the handle and the hashes the chain holds, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from markupsafe import Markup
from sqlalchemy import Engine, func, select

from chainshare.credit.query import MAX_RECORD_ID, check_subject
from chainshare.decimal_text import parse_ascii_decimal
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.contracts.credit_registry import compute_subject_key
from chainshare.explorer.db import schema as s
from chainshare.explorer.web.live import After, LiveEvent, get_resume_point, stream_live_events

if TYPE_CHECKING:
    from chainshare.explorer.web.pages import PageTools


def embed_json(value: Any) -> Markup:
    return Markup(json.dumps(value).replace("<", "\\u003c"))


def compute_browser_bundle(provenance: dict[str, Any], indexed_logs: list[dict[str, Any]],
                           proof_of_tx: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """What verify.js checks for a record: per step, the transaction's proof bundle and the event as indexed."""
    steps = []
    logs: list[dict[str, Any] | None] = [*indexed_logs, *[None] * (len(provenance["steps"]) - len(indexed_logs))]
    for step, log in zip(provenance["steps"], logs, strict=False):
        args = step["args"]
        steps.append({"event": step["event"], "block": step["block"], "log_in_receipt": step["log_in_receipt"],
                      "version": args.get("version"), "version_hash": args.get("versionHash"),
                      "previous_version_hash": args.get("previousVersionHash"),
                      "log": log, "proof": proof_of_tx(step["transaction"])})
    return {"format": "chainshare-explorer-credit/v1", "record": provenance["record"],
            "registry": "0x" + CREDIT_REGISTRY.hex(), "steps": steps}


def get_indexed_logs(reader: Engine, record_id: int) -> list[dict[str, Any]]:
    """The record's events exactly as the explorer stored them (what its pages are built from)."""
    ce = s.credit_events
    with reader.connect() as conn:
        rows = conn.execute(select(ce.c.topic0, ce.c.topic1, ce.c.topic2, ce.c.topic3, ce.c.data)
                            .where(ce.c.topic1 == record_id.to_bytes(32, "big"), ce.c.topic2.is_not(None))
                            .order_by(ce.c.seq)).all()
    return [{"topics": ["0x" + bytes(t).hex() for t in (r.topic0, r.topic1, r.topic2, r.topic3) if t is not None],
             "data": "0x" + bytes(r.data).hex()} for r in rows]


def get_latest_credit_seq(reader: Engine, subject: str | None) -> int:
    ce = s.credit_events
    stmt = select(func.max(ce.c.seq))
    if subject is not None:
        stmt = stmt.where(ce.c.topic2 == compute_subject_key(subject))
    with reader.connect() as conn:
        return int(conn.execute(stmt).scalar() or 0)


def mount_credit_pages(app: FastAPI, reader: Engine, kit: PageTools) -> None:
    ep = kit.endpoints  # the credit API's endpoint functions among them

    @kit.page("/credit")
    def credit_home(request: Request) -> HTMLResponse:
        lists = {name: ep["get_list"](list_name=name, limit=10) for name in ("red", "black")}
        return kit.render(request, "credit_home.html", lists=lists)

    @kit.page("/credit/subjects/{subject}")
    def subject_page(request: Request, subject: str) -> HTMLResponse:
        check_subject(subject)
        at_text = request.query_params.get("at")
        at = None if at_text is None else parse_ascii_decimal(at_text, max_digits=12)
        if at_text is not None and at is None:
            raise kit.page_error(400, "Bad height", "'at' must be a block height (digits).")
        view = ep["get_subject"](subject=subject, at=at)
        return kit.render(request, "credit_subject.html", v=view, )

    @kit.page("/credit/records/{record_id}")
    def record_page(request: Request, record_id: str) -> HTMLResponse:
        rid = parse_ascii_decimal(record_id, max_digits=len(str(MAX_RECORD_ID)))
        if rid is None or not 0 < rid <= MAX_RECORD_ID:
            raise kit.page_error(400, "Not a record id", f"{record_id[:40]!r} is not a credit record id "
                                 f"(a number from 1 to {MAX_RECORD_ID}).")
        record = ep["get_record"](record_id=rid)
        provenance = ep["get_provenance"](record_id=rid)
        bundle = compute_browser_bundle(provenance, get_indexed_logs(reader, rid),
                                        lambda tx: kit.proof_bundle(tx)[1])
        return kit.render(request, "credit_record.html", r=record, bundle=bundle, verifier=kit.verifier_installed(),
                          bundle_json=embed_json(bundle))

    @kit.page("/credit/lists/{list_name}")
    def list_page(request: Request, list_name: str) -> HTMLResponse:
        if list_name not in ("red", "black"):
            raise kit.page_error(404, "No such list", "The credit lists are /credit/lists/red and /credit/lists/black.")
        out = ep["get_list"](list_name=list_name, before=kit.cursor(request), limit=25)
        return kit.render(request, "credit_list.html", list_name=list_name, page=out,
                          csv=f"/api/v1/credit/lists/{list_name}?format=csv")

    @app.get("/live/credit", include_in_schema=False)
    def live_credit(request: Request, subject: Annotated[str | None, Query(max_length=80)] = None,
                    after: After = None) -> StreamingResponse:
        """One SSE event each time credit events (of ``subject``, or any) are indexed after ``after``."""
        if subject is not None:
            check_subject(subject)
        last = get_resume_point(request, after)

        def poll(limit: int) -> list[LiveEvent]:
            nonlocal last
            seq = get_latest_credit_seq(reader, subject)
            if last is None:
                last = seq
            if seq <= last:
                return []
            last = seq
            return [LiveEvent("credit", seq, {"seq": seq})]

        return stream_live_events(request, poll)
