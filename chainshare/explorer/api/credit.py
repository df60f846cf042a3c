"""Credit records in the explorer API (/api/v1/credit), computed by the node's own credit code.

``IndexedCreditSource`` is a ``chainshare.credit.events.CreditSource`` over the explorer's ``credit_events``
table, so a subject's records, a record's history and a score come from the same functions
(``chainshare.credit.query``, ``lifecycle``, ``scoring``) the node's REST API and ``chainshare credit``
use: at a height both have, the answers are equal. The explorer's head is its indexed height.

- ``GET /credit/subjects/{subject}?at=H``: records (display status at H's block time, each with its versions
  and timeline), score with explanation (``score`` is null with the reason when no rule is installed by H).
- ``GET /credit/subjects/{subject}/score?at=H&rule_version=V``.
- ``GET /credit/records/{id}?at=H``: every version, lifecycle timeline.
- ``GET /credit/records/{id}/provenance``: the bundle ``chainshare credit verify`` checks offline.
- ``GET /credit/lists/{red|black}?before=ID&limit=&format=csv``: records displayed now (positive: red list,
  negative: black list), newest first, keyset by id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Connection, Engine, and_, func, select

from chainshare.credit import query
from chainshare.credit.events import CreditEvent
from chainshare.credit.lifecycle import RecordView
from chainshare.credit.provenance import compose_bundle, compose_step
from chainshare.errors import NotFound
from chainshare.execution.contracts import credit_registry as cr
from chainshare.explorer.api.app import Before, Format, Limit, Pager, has_served_table
from chainshare.explorer.api.views import answered_as_json
from chainshare.explorer.db import schema as s
from chainshare.explorer.indexer.credit import to_credit_event
from chainshare.ledger.merkle import compute_inclusion_proof_of_hashes, hash_leaf

SUBJECT = r"^([0-9A-Z]{18}|P-[0-9a-f]{64})$"
LISTS = {"red": cr.POSITIVE, "black": cr.NEGATIVE}
ce = s.credit_events


class IndexedCreditSource:
    """Finalized CreditRegistry events as indexed (one connection, read in one go)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def head_height(self) -> int:
        return int(self.conn.execute(select(s.progress.c.height).where(s.progress.c.id == 1)).scalar() or 0)

    def block_timestamp_ms(self, height: int) -> int:
        ts = self.conn.execute(select(s.blocks.c.timestamp_ms).where(s.blocks.c.height == height)).scalar()
        if ts is None:
            raise NotFound(f"block {height} is not indexed")
        return int(ts)

    def iter_events(self, topics: list[bytes | None], from_height: int, to_height: int) -> Iterator[CreditEvent]:
        cols = (ce.c.topic0, ce.c.topic1, ce.c.topic2, ce.c.topic3)
        conds = [col == t for col, t in zip(cols, topics, strict=False) if t is not None]
        conds += [ce.c.seq >= from_height << (s.SEQ_SHIFT + s.LOG_SHIFT),
                  ce.c.seq < (to_height + 1) << (s.SEQ_SHIFT + s.LOG_SHIFT)]
        for row in self.conn.execute(select(ce).where(*conds).order_by(ce.c.seq)):
            ev = to_credit_event(row)
            if ev is not None:
                yield ev


def build_indexed_provenance(conn: Connection, record: RecordView, *, with_epoch_changes: bool = True) -> dict[str, Any]:
    """The provenance bundle of ``record`` (same format as the node's) from the indexed blocks, with the
    epoch-change proofs the indexer verified and stored (``with_epoch_changes``: the table exists)."""
    steps = []
    for ev in record.events:
        b = conn.execute(select(s.blocks.c.header, s.blocks.c.qc, s.blocks.c.receipt_leaf_hashes)
                         .where(s.blocks.c.height == ev.height)).one()
        lo = ev.height << s.SEQ_SHIFT
        receipt = conn.execute(select(s.txs.c.receipt).where(s.txs.c.seq == lo | ev.tx_index)).scalar_one()
        if b.receipt_leaf_hashes is not None:
            leaves = bytes(b.receipt_leaf_hashes)
            rc_hashes = [leaves[i:i + 32] for i in range(0, len(leaves), 32)]
        else:  # indexed before migration 0003
            rc_hashes = [hash_leaf(bytes(x)) for x in conn.execute(select(s.txs.c.receipt).where(
                s.txs.c.seq >= lo, s.txs.c.seq < lo + (1 << s.SEQ_SHIFT)).order_by(s.txs.c.seq)).scalars()]
        log_seq = conn.execute(select(ce.c.seq).where(ce.c.height == ev.height, ce.c.log_index == ev.log_index,
                                                      ce.c.topic1 == ev.args["id"].to_bytes(32, "big"))).scalar_one()
        steps.append(compose_step(ev, bytes(b.header), bytes(b.qc) if b.qc is not None else None, bytes(receipt),
                                  log_seq & ((1 << s.LOG_SHIFT) - 1),
                                  compute_inclusion_proof_of_hashes(rc_hashes, ev.tx_index)))
    genesis = conn.execute(select(s.blocks.c.hash).where(s.blocks.c.height == 0)).scalar_one()
    changes = [bytes(p) for p in conn.execute(select(s.epoch_changes.c.proof).order_by(s.epoch_changes.c.epoch))
               .scalars()] if with_epoch_changes else []
    return compose_bundle(record.id, bytes(genesis), steps, changes)


def compute_subject_view(source: IndexedCreditSource, subject: str, at: int | None) -> dict[str, Any]:
    """Records (with versions and timeline), and the score with its explanation, as the node computes them."""
    height, records = query.get_subject_records(source, subject, at)
    now = source.block_timestamp_ms(height) // 1000
    out: dict[str, Any] = {"subject": subject, "kind": "person" if subject.startswith("P-") else "organisation",
                           "height": height, "time": now,
                           "records": [r.to_json(now, with_history=True) for r in sorted(records, key=lambda r: -r.id)]}
    try:
        out["score"] = query.score_records(source, subject, height, records)
    except NotFound as exc:
        out["score"], out["score_unavailable"] = None, exc.message
    return out


def view_list_row(r: Any) -> dict[str, Any]:
    return {"id": r.id, "subject": r.subject, "category": r.category, "issuer": r.issuer,
            "severity": r.severity, "version": r.version, "document_number": r.document_number,
            "authority": r.authority, "summary": r.summary, "effective_from": r.effective_from,
            "display_until": r.expires_at, "published_block": r.published_height, "updated_block": r.updated_height}


def displayed_now(list_name: str, now: int) -> Any:
    """Records on ``list_name`` that a reader sees at block time ``now`` (as RecordView.is_displayed)."""
    t = s.credit_records
    return and_(t.c.polarity == LISTS[list_name], t.c.status == cr.ACTIVE, t.c.effective_from <= now,
                t.c.expires_at > now)


def head_time(conn: Connection) -> int:
    src = IndexedCreditSource(conn)
    return src.block_timestamp_ms(src.head_height()) // 1000


def check_subject(subject: str) -> str:
    """InvalidInput with the exact problem (a USCC's expected check character) for a malformed subject."""
    return query.check_subject(subject)


def search_credit(conn: Connection, q: str, limit: int) -> list[dict[str, Any]]:
    """A subject by USCC or handle (a malformed USCC is InvalidInput), or organisations whose records'
    public text (summary, authority, document number) contains ``q``; persons' records carry no text."""
    t = s.credit_records
    out: list[dict[str, Any]] = []
    if len(q) == 18 and q.isalnum() or q.startswith("P-"):
        subject = check_subject(q if q.startswith("P-") else q.upper())
        n = conn.execute(select(func.count()).select_from(t).where(t.c.subject == subject)).scalar()
        if n:
            out.append({"kind": "credit_subject", "id": subject, "records": n, "score": 1.0,
                        "path": f"/api/v1/credit/subjects/{subject}"})
        return out
    if len(q) < 2:
        return out
    like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    text = func.lower(t.c.summary).like(like, escape="\\") | func.lower(t.c.authority).like(like, escape="\\") \
        | func.lower(t.c.document_number).like(like, escape="\\")
    rows = conn.execute(select(t.c.subject, func.count().label("n"), func.max(t.c.id).label("last"))
                        .where(text, ~t.c.subject.startswith("P-")).group_by(t.c.subject)
                        .order_by(func.max(t.c.id).desc()).limit(limit)).all()
    for r in rows:
        out.append({"kind": "credit_subject", "id": r.subject, "records": r.n, "score": 0.8,
                    "path": f"/api/v1/credit/subjects/{r.subject}"})
    return out


At = Annotated[int | None, Query(ge=0, le=2**40, description="Block height (default: the indexed head)")]
Subject = Annotated[str, Path(min_length=1, max_length=80,
                              description="A USCC (18 characters) or a person handle P-<64 hex>")]


def create_credit_router(reader: Engine) -> APIRouter:
    router = APIRouter(prefix="/api/v1/credit", tags=["credit"])
    pager = Pager(reader)
    has_epoch_changes = has_served_table(reader, s.epoch_changes)

    @router.get("/subjects/{subject}", summary="A credit subject: records with versions and timeline, score "
                "with explanation (the node's scoring code), at a height")
    @answered_as_json
    def get_subject(subject: Subject, at: At = None) -> dict[str, Any]:
        check_subject(subject)
        with reader.connect() as conn:
            return compute_subject_view(IndexedCreditSource(conn), subject, at)

    @router.get("/subjects/{subject}/score", summary="A subject's score and explanation at a height")
    @answered_as_json
    def get_score(subject: Subject, at: At = None,
                  rule_version: Annotated[int | None, Query(ge=1, le=2**32)] = None) -> dict[str, Any]:
        check_subject(subject)
        with reader.connect() as conn:
            return query.get_score(IndexedCreditSource(conn), subject, at, rule_version)

    @router.get("/records/{record_id}", summary="A credit record: every version and the lifecycle timeline")
    @answered_as_json
    def get_record(record_id: Annotated[int, Path(ge=1, le=query.MAX_RECORD_ID)], at: At = None) -> dict[str, Any]:
        with reader.connect() as conn:
            src = IndexedCreditSource(conn)
            height, record = query.get_record(src, record_id, at)
            now = src.block_timestamp_ms(height) // 1000
        return {"height": height, "time": now, **record.to_json(now, with_history=True)}

    @router.get("/records/{record_id}/provenance", summary="Provenance bundle of a record (verify with "
                "`chainshare credit verify BUNDLE --genesis genesis.json`)")
    @answered_as_json
    def get_provenance(record_id: Annotated[int, Path(ge=1, le=query.MAX_RECORD_ID)]) -> dict[str, Any]:
        with reader.connect() as conn:
            _, record = query.get_record(IndexedCreditSource(conn), record_id)
            return build_indexed_provenance(conn, record, with_epoch_changes=has_epoch_changes)

    @router.get("/lists/{list_name}", summary="Red (positive) or black (negative) list: records displayed at "
                "the indexed head's block time, newest first (keyset by id), JSON or CSV")
    def get_list(list_name: Annotated[str, Path(pattern="^(red|black)$")], before: Before = None,
                 limit: Limit = 20, format: Format = "json") -> Any:  # noqa: A002 (the API's parameter name)
        with reader.connect() as conn:
            now = head_time(conn)
        stmt = select(s.credit_records).where(displayed_now(list_name, now))
        if format == "csv":
            return pager.csv(stmt, s.credit_records.c.id, before, None, view_list_row, f"credit-{list_name}-list")
        return {"list": list_name, "time": now,
                **pager.page(stmt, s.credit_records.c.id, before, limit, view_list_row)}

    return router

