"""Credit rows of a batch: every CreditRegistry log as emitted (``credit_events``) and, for each record it
touches, the record's latest state folded by the node's own lifecycle code (``credit_records``).

Written by the IndexWriter in the batch's transaction, so they commit with the blocks or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from chainshare.credit.events import RECORD_EVENTS, CreditEvent, decode_credit_log
from chainshare.credit.lifecycle import RecordView, fold_records
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.explorer.db import schema as s
from chainshare.explorer.indexer.rows import BlockRows
from chainshare.ledger.types import Log

_IN_CHUNK = 500


def compute_credit_event_rows(rows: BlockRows) -> list[dict[str, Any]]:
    """``credit_events`` rows of one block (CreditRegistry logs that decode; others are not credit events)."""
    out = []
    tx_hashes = {tx["seq"]: tx["hash"] for tx in rows.txs}
    for log_index, lg in enumerate(rows.logs):
        if lg["address"] != CREDIT_REGISTRY or lg["topic0"] is None:
            continue
        decoded = decode_credit_log(_as_log(lg))
        if decoded is None:
            continue
        out.append({"seq": lg["seq"], "height": rows.height, "log_index": log_index,
                    "tx_index": lg["tx_seq"] & ((1 << s.SEQ_SHIFT) - 1), "tx_hash": tx_hashes[lg["tx_seq"]],
                    "timestamp_ms": rows.timestamp_ms, "name": decoded[0], "topic0": lg["topic0"],
                    "topic1": lg["topic1"], "topic2": lg["topic2"], "topic3": lg["topic3"], "data": lg["data"]})
    return out


def _as_log(row: Any) -> Log:
    m = row if isinstance(row, dict) else row._mapping
    topics = tuple(bytes(m[k]) for k in ("topic0", "topic1", "topic2", "topic3") if m[k] is not None)
    return Log(CREDIT_REGISTRY, topics, bytes(m["data"]))


def to_credit_event(row: Any) -> CreditEvent | None:
    """The CreditEvent of a ``credit_events`` row, decoded as the node decodes it (None if it does not)."""
    decoded = decode_credit_log(_as_log(row))
    if decoded is None:
        return None
    return CreditEvent(int(row.height), int(row.log_index), int(row.tx_index), bytes(row.tx_hash),
                       int(row.timestamp_ms), decoded[0], decoded[1])


def compute_record_row(r: RecordView) -> dict[str, Any]:
    f = r.current.fields
    return {"id": r.id, "subject": r.subject, "category": r.category, "issuer": r.issuer, "polarity": f["polarity"],
            "severity": f["severity"], "status": r.status, "objection": r.objection, "version": r.current.version,
            "document_number": f["documentNumber"], "authority": f["authority"], "summary": f["summary"],
            "effective_from": f["effectiveFrom"], "expires_at": f["effectiveFrom"] + f["displayMaxSeconds"],
            "published_height": r.versions[0].height, "updated_height": r.events[-1].height}


def compute_credit_record_rows(conn: Connection, event_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``credit_records`` rows of every record ``event_rows`` touch, folded from all its stored events
    (store the batch's events first)."""
    out: list[dict[str, Any]] = []
    ids = sorted({r["topic1"] for r in event_rows if r["name"] in RECORD_EVENTS and r["topic1"] is not None})
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i:i + _IN_CHUNK]
        stored = conn.execute(select(s.credit_events).where(s.credit_events.c.topic1.in_(chunk),
                                                            s.credit_events.c.name.in_(sorted(RECORD_EVENTS)))
                              .order_by(s.credit_events.c.seq)).all()
        events = [ev for row in stored if (ev := to_credit_event(row)) is not None]
        records = fold_records(events)
        out.extend(compute_record_row(records[k]) for k in sorted(records))
    return out
