"""The explorer's JSON API (FastAPI, OpenAPI at /api/v1/openapi.json): stateless and read-only.

Every list is a keyset page over an index (``?before=<cursor>&limit=``; the response's
``next_before`` is the next page's cursor), filterable by block and time range, and streamable
as CSV (``?format=csv``: fetched in keyset chunks, never buffered whole). Errors are
``{"error": {"type", "message"}}`` with 400/404 (503 when the database is unreachable); no
input produces a 500.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import ColumnElement, Engine, Select, false, func, inspect, or_, select
from sqlalchemy.exc import SQLAlchemyError

from chainshare import codec
from chainshare.api.errors import http_error, install_request_error_handlers
from chainshare.errors import ChainshareError, NotFound
from chainshare.explorer.api import views as v
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.engine import get_db_kind, read_schema_revision
from chainshare.ledger.merkle import compute_inclusion_proof_of_hashes, hash_leaf
from chainshare.ledger.types import Receipt
from chainshare.logs import log_event

log = logging.getLogger("chainshare.explorer.api")

MAX_INT = 2**62
HASH = r"^0x[0-9a-fA-F]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
CSV_CHUNK = 1000
CSV_MAX = 1_000_000

Before = Annotated[int | None, Query(ge=0, le=MAX_INT, description="Keyset cursor: the previous page's next_before")]
Limit = Annotated[int, Query(ge=1, le=1000)]
FromBlock = Annotated[int | None, Query(ge=0, le=2**40)]
ToBlock = Annotated[int | None, Query(ge=0, le=2**40)]
FromTime = Annotated[int | None, Query(ge=0, le=2**50, description="Unix time in ms (inclusive)")]
ToTime = Annotated[int | None, Query(ge=0, le=2**50, description="Unix time in ms (inclusive)")]
Format = Annotated[str, Query(pattern="^(json|csv)$")]


def _unhex(value: str) -> bytes:
    return bytes.fromhex(value[2:])


class Pager:
    """Keyset pages of one query, as JSON or streamed CSV."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, stmt: Select[Any], key: Any, before: int | None, limit: int,
             view: Callable[[Any], dict[str, Any]], same: Sequence[Any] = ()) -> dict[str, Any]:
        """``same``: columns joined equal to ``key``; the cursor bounds them too, so the planner
        walks each index from the cursor (without it PostgreSQL merge-joined from the newest row)."""
        if before is not None:
            stmt = stmt.where(key < before, *(c < before for c in same))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(key.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [view(r) for r in rows], "next_before": getattr(rows[-1], key.name) if more else None}

    def csv(self, stmt: Select[Any], key: Any, before: int | None, limit: int | None,
            view: Callable[[Any], dict[str, Any]], name: str, same: Sequence[Any] = ()) -> StreamingResponse:
        def rows() -> Iterator[str]:
            cursor, sent, header = before, 0, False
            total = min(limit or CSV_MAX, CSV_MAX)
            while sent < total:
                q = stmt.where(key < cursor, *(c < cursor for c in same)) if cursor is not None else stmt
                with self.engine.connect() as conn:
                    chunk = conn.execute(q.order_by(key.desc()).limit(min(CSV_CHUNK, total - sent))).all()
                if not chunk:
                    break
                buf = io.StringIO()
                items = [v.flatten(view(r)) for r in chunk]
                w = csv.DictWriter(buf, fieldnames=list(items[0]))
                if not header:
                    w.writeheader()
                    header = True
                w.writerows(items)
                yield buf.getvalue()
                sent += len(chunk)
                cursor = getattr(chunk[-1], key.name)
                if len(chunk) < CSV_CHUNK:
                    break

        return StreamingResponse(rows(), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def create_explorer_app(engine: Engine, read_engine: Engine | None = None, db_url_redacted: str = "") -> FastAPI:
    """The API over ``read_engine`` (a read replica, or the primary ``engine``); status reads the primary."""
    reader = read_engine or engine
    pager = Pager(reader)
    blocks_cols = get_served_columns(reader, s.blocks)
    # a list row never carries the proof material: the leaf hashes alone are 64 bytes per transaction
    block_row_cols = [c for c in blocks_cols if c.name not in _BLOCK_PROOF_COLUMNS]
    block_one_cols = [c for c in blocks_cols if c.name not in ("tx_leaf_hashes", "receipt_leaf_hashes")]
    vset_cols = get_served_columns(reader, s.validator_sets)
    has_certificates = has_served_table(reader, s.agency_certificates)
    has_gaps = has_served_table(engine, s.index_gaps)
    has_epoch_changes = has_served_table(reader, s.epoch_changes)
    app = FastAPI(title="chainshare explorer API", version="1", openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None,
                  description="Verified blocks, transactions, decoded system-contract calls and events, agencies, "
                              "validators, governance, datasets and their access history, evidence, search and "
                              "stats of a chainshare network, as indexed by the explorer.")

    @app.exception_handler(ChainshareError)
    async def _chainshare_error(request: Request, exc: ChainshareError) -> JSONResponse:
        status, body = http_error(exc)
        return JSONResponse(body, status_code=status)

    install_request_error_handlers(app)

    @app.exception_handler(SQLAlchemyError)
    async def _db_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log_event(log, logging.ERROR, "database error", path=request.url.path, error=str(exc)[:300])
        return JSONResponse({"error": {"type": "Unavailable", "message": "the explorer database is unavailable"}},
                            status_code=503)

    def heights_of(from_block: int | None, to_block: int | None, from_time: int | None,
                   to_time: int | None) -> tuple[int, int]:
        lo, hi = from_block or 0, to_block if to_block is not None else MAX_INT >> s.SEQ_SHIFT
        with reader.connect() as conn:
            if from_time is not None:
                h = conn.execute(select(s.blocks.c.height).where(s.blocks.c.timestamp_ms >= from_time)
                                 .order_by(s.blocks.c.timestamp_ms, s.blocks.c.height).limit(1)).scalar()
                lo = max(lo, h if h is not None else hi + 1)
            if to_time is not None:
                h = conn.execute(select(s.blocks.c.height).where(s.blocks.c.timestamp_ms <= to_time)
                                 .order_by(s.blocks.c.timestamp_ms.desc(), s.blocks.c.height.desc()).limit(1)).scalar()
                hi = min(hi, h if h is not None else -1)
        return lo, hi

    def seq_range(col: Any, lo: int, hi: int, shift: int) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if lo > hi:
            return [false()]
        if lo > 0:
            out.append(col >= min(lo << shift, MAX_INT))
        if hi < MAX_INT >> s.SEQ_SHIFT:
            out.append(col < min((hi + 1) << shift, MAX_INT))
        return out

    def respond(stmt: Select[Any], key: Any, before: int | None, limit: int, view: Callable[[Any], dict[str, Any]],
                fmt: str, name: str, csv_limit: int | None = None, same: Sequence[Any] = ()) -> Any:
        if fmt == "csv":
            return pager.csv(stmt, key, before, csv_limit, view, name, same)
        return pager.page(stmt, key, before, limit, view, same)

    # -- service ----------------------------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        with reader.connect() as conn:
            conn.execute(select(1))
        return {"ok": True}

    def get_status() -> dict[str, Any]:
        with engine.connect() as conn:
            cp = conn.execute(select(s.progress.c.height, s.progress.c.block_hash)).first()
            meta = dict(conn.execute(select(s.meta.c.key, s.meta.c.value)).all())
            srcs = conn.execute(select(s.sources).order_by(s.sources.c.url)).all()
            gaps = conn.execute(select(s.index_gaps).order_by(s.index_gaps.c.first_height)).all() if has_gaps else []
            revision = read_schema_revision(conn)
        indexed = int(cp[0]) if cp else None
        heads = [r.head for r in srcs if r.head is not None]
        top = max(heads) if heads else None
        lag = max(0, top - indexed) if top is not None and indexed is not None else None
        tail = [(indexed + 1, top)] if lag and indexed is not None and top is not None else []
        missing = merge_ranges([(int(g.first_height), int(g.last_height)) for g in gaps] + tail)
        return {"indexed_height": indexed, "indexed_hash": v.hx(cp[1]) if cp else None,
                "chain_id": int(meta["chain_id"]) if "chain_id" in meta else None,
                "genesis_hash": meta.get("genesis_hash"),
                "node_heads": [{"url": r.url, "head": r.head, "state": r.state, "failures": r.failures,
                                "last_error": r.last_error, "updated_ms": r.updated_ms} for r in srcs],
                "lag": lag, "missing_ranges": [list(r) for r in missing],
                "missing_blocks": sum(hi - lo + 1 for lo, hi in missing),
                "gaps": [{"first_height": g.first_height, "last_height": g.last_height, "reason": g.reason,
                          "source": g.source, "recorded_ms": g.recorded_ms} for g in gaps],
                "database": {"kind": get_db_kind(str(engine.url)), "url": db_url_redacted,
                             "read_replica": read_engine is not None,
                             "schema_revision": revision}}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        st = get_status()
        lines = ["# TYPE explorer_indexed_height gauge", f"explorer_indexed_height {st['indexed_height'] or 0}",
                 "# TYPE explorer_lag_blocks gauge", f"explorer_lag_blocks {st['lag'] or 0}",
                 "# TYPE explorer_missing_blocks gauge", f"explorer_missing_blocks {st['missing_blocks']}",
                 "# TYPE explorer_missing_ranges gauge", f"explorer_missing_ranges {len(st['missing_ranges'])}",
                 "# TYPE explorer_recorded_gaps gauge", f"explorer_recorded_gaps {len(st['gaps'])}",
                 "# TYPE explorer_node_head gauge", "# TYPE explorer_source_failures gauge"]
        for n in st["node_heads"]:
            lines.append(f'explorer_node_head{{url="{n["url"]}"}} {n["head"] or 0}')
            lines.append(f'explorer_source_failures{{url="{n["url"]}",state="{n["state"]}"}} {n["failures"]}')
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/api/v1/status", summary="Indexed height, node heads, lag, database")
    def status() -> dict[str, Any]:
        return get_status()

    # -- blocks and transactions -----------------------------------------------------------------
    @app.get("/api/v1/blocks", summary="Blocks, newest first (keyset by height)")
    def list_blocks(before: Before = None, limit: Limit = 20, from_block: FromBlock = None, to_block: ToBlock = None,
                    from_time: FromTime = None, to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        stmt = select(*block_row_cols).where(s.blocks.c.height >= lo, s.blocks.c.height <= hi)
        return respond(stmt, s.blocks.c.height, before, limit, v.view_block, format, "blocks")

    @app.get("/api/v1/blocks/{block_id}", summary="One block by height or hash, with its QC and signers")
    def get_block(block_id: Annotated[str, Path(pattern=r"^([0-9]{1,15}|0x[0-9a-fA-F]{64})$")]) -> dict[str, Any]:
        cond = s.blocks.c.hash == _unhex(block_id) if block_id.startswith("0x") else s.blocks.c.height == int(block_id)
        with reader.connect() as conn:
            r = conn.execute(select(*block_one_cols).where(cond)).first()
            if r is None:
                raise NotFound(f"no indexed block {block_id}")
            vals = conn.execute(select(*vset_cols).where(s.validator_sets.c.epoch == r.epoch)
                                .order_by(s.validator_sets.c.position)).all()
        out = v.view_block(r)
        signers = [] if r.qc_signers is None else json.loads(r.qc_signers)
        out["header"] = v.hx(r.header)
        out["qc"] = _qc_json(r.qc)
        out["qc_signers"] = [{"index": i, "name": vals[i].name, "agency": vals[i].agency,
                              "address": v.hx(vals[i].address)} for i in signers if i < len(vals)]
        out["validators"] = len(vals)
        return out

    @app.get("/api/v1/txs", summary="Transactions, newest first (keyset)")
    def list_txs(before: Before = None, limit: Limit = 20, from_block: FromBlock = None, to_block: ToBlock = None,
                 from_time: FromTime = None, to_time: ToTime = None,
                 method: Annotated[str | None, Query(max_length=64)] = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        conds = seq_range(s.txs.c.seq, lo, hi, s.SEQ_SHIFT)
        if method:
            conds.append(s.txs.c.method == method)
        return respond(select(s.txs).where(*conds), s.txs.c.seq, before, limit, v.view_tx, format, "txs")

    @app.get("/api/v1/txs/{tx_hash}", summary="A transaction: decoded call, events, receipt, and the Merkle "
             "inclusion proofs, header and QC to verify it independently")
    def get_tx(tx_hash: Annotated[str, Path(pattern=HASH)]) -> dict[str, Any]:
        with reader.connect() as conn:
            r = conn.execute(select(s.txs).where(s.txs.c.hash == _unhex(tx_hash))).first()
            if r is None:
                raise NotFound(f"no indexed transaction {tx_hash}")
            logs = conn.execute(select(s.logs).where(s.logs.c.tx_seq == r.seq).order_by(s.logs.c.seq)).all()
            leaf_cols = [c for c in blocks_cols if c.name in ("tx_leaf_hashes", "receipt_leaf_hashes")]
            b = conn.execute(select(s.blocks.c.hash, s.blocks.c.header, s.blocks.c.qc, s.blocks.c.tx_root,
                                    s.blocks.c.receipts_root, s.blocks.c.epoch, *leaf_cols)
                             .where(s.blocks.c.height == r.height)).one()
            parent_header = conn.execute(select(s.blocks.c.header).where(s.blocks.c.height == r.height - 1)).scalar()
            changes = conn.execute(select(s.epoch_changes.c.proof).where(s.epoch_changes.c.epoch <= b.epoch)
                                   .order_by(s.epoch_changes.c.epoch)).scalars().all() if has_epoch_changes else []
            tx_hashes, rc_hashes = _leaf_hashes(getattr(b, "tx_leaf_hashes", None)), \
                _leaf_hashes(getattr(b, "receipt_leaf_hashes", None))
            if tx_hashes is None or rc_hashes is None:  # indexed before migration 0003: from the rows
                lo = r.height << s.SEQ_SHIFT
                leaves = conn.execute(select(s.txs.c.raw, s.txs.c.receipt).where(
                    s.txs.c.seq >= lo, s.txs.c.seq < lo + (1 << s.SEQ_SHIFT)).order_by(s.txs.c.seq)).all()
                tx_hashes = [hash_leaf(bytes(x.raw)) for x in leaves]
                rc_hashes = [hash_leaf(bytes(x.receipt)) for x in leaves]
        out = v.view_tx(r)
        rc = Receipt.from_list(codec.decode(bytes(r.receipt)))
        out["events"] = [v.view_log(lg) for lg in logs]
        out["receipt"] = {"status": rc.status, "gas_used": rc.gas_used, "cumulative_gas_used": rc.cumulative_gas_used,
                          "output": v.hx(rc.output), "logs": len(rc.logs)}
        out["raw"] = v.hx(r.raw)
        out["proof"] = {
            "block_hash": v.hx(b.hash), "header": v.hx(b.header), "tx_root": v.hx(b.tx_root),
            # the header whose validator_set_hash names the set that certifies this block
            "parent_header": v.hx(parent_header) if parent_header is not None else None,
            "receipts_root": v.hx(b.receipts_root), "qc": _qc_json(b.qc),
            # the chain's epoch-change proofs up to this block's epoch: its validator set proven from genesis
            "epoch_changes": [v.hx(raw) for raw in changes],
            "transaction": {"leaf": v.hx(r.raw),
                            "proof": compute_inclusion_proof_of_hashes(tx_hashes, r.position).to_json()},
            "receipt": {"leaf": v.hx(r.receipt),
                        "proof": compute_inclusion_proof_of_hashes(rc_hashes, r.position).to_json()}}
        return out

    @app.get("/api/v1/addresses/{address}/txs", summary="Transactions from or to an address (keyset)")
    def address_txs(address: Annotated[str, Path(pattern=ADDRESS)], before: Before = None, limit: Limit = 20,
                    from_block: FromBlock = None, to_block: ToBlock = None, from_time: FromTime = None,
                    to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        at = s.address_txs
        stmt = (select(s.txs).select_from(at.join(s.txs, s.txs.c.seq == at.c.seq))
                .where(at.c.address == _unhex(address), *seq_range(at.c.seq, lo, hi, s.SEQ_SHIFT),
                       *seq_range(s.txs.c.seq, lo, hi, s.SEQ_SHIFT)))
        return respond(stmt, at.c.seq, before, limit, v.view_tx, format, "address-txs", same=[s.txs.c.seq])

    # -- agencies, validators, governance ---------------------------------------------------------
    @app.get("/api/v1/agencies", summary="Member agencies with their activity (by name)")
    def list_agencies(after: Annotated[str | None, Query(max_length=128, description="Keyset cursor: a name")] = None,
                      limit: Limit = 100, format: Format = "json") -> Any:
        stmt = select(s.agencies).order_by(s.agencies.c.name)
        if after is not None:
            stmt = stmt.where(s.agencies.c.name > after)
        with reader.connect() as conn:
            rows = conn.execute(stmt.limit(limit + 1)).all()
        items = [v.view_agency(r) for r in rows[:limit]]
        if format == "csv":
            return _csv_response(items, "agencies")
        return {"items": items, "next_after": rows[limit - 1].name if len(rows) > limit else None}

    @app.get("/api/v1/agencies/{name}", summary="One agency: accounts, activity per day, recent access history")
    def get_agency(name: Annotated[str, Path(max_length=128)]) -> dict[str, Any]:
        with reader.connect() as conn:
            r = conn.execute(select(s.agencies).where(s.agencies.c.name == name)).first()
            if r is None:
                raise NotFound(f"no agency named {name!r}")
            accounts = conn.execute(select(s.agency_accounts.c.address).where(s.agency_accounts.c.agency == name)
                                    .order_by(s.agency_accounts.c.address)).scalars().all()
            daily = conn.execute(select(s.agency_daily.c.day, s.agency_daily.c.txs).where(
                s.agency_daily.c.agency == name).order_by(s.agency_daily.c.day.desc()).limit(30)).all()
            ds = conn.execute(select(func.count()).select_from(s.datasets).where(s.datasets.c.owner == name)).scalar()
            certs = conn.execute(select(s.agency_certificates).where(s.agency_certificates.c.agency == name)
                                 .order_by(s.agency_certificates.c.height)).all() if has_certificates else []
        out = v.view_agency(r)
        out.update(accounts=[v.hx(a) for a in accounts], datasets=ds,
                   activity=[{"day": d * 86400, "txs": n} for d, n in daily],
                   certificates=[v.view_certificate(c) for c in certs])
        return out

    @app.get("/api/v1/ca", summary="The consortium CA certificate of the genesis document (fingerprint, subject, "
             "validity, PEM)")
    def get_ca() -> dict[str, Any]:
        with reader.connect() as conn:
            pem = conn.execute(select(s.meta.c.value).where(s.meta.c.key == "ca_certificate")).scalar()
        if pem is None:
            raise NotFound("the index holds no CA certificate (indexed before migration 0004, or not initialized)")
        return v.view_ca(pem)

    @app.get("/api/v1/validators", summary="Validator sets per epoch (each verified against block headers)")
    def validators() -> dict[str, Any]:
        with reader.connect() as conn:
            rows = conn.execute(select(*vset_cols).order_by(s.validator_sets.c.epoch,
                                                                  s.validator_sets.c.position)).all()
        epochs: dict[int, dict[str, Any]] = {}
        for r in rows:
            e = epochs.setdefault(r.epoch, {"epoch": r.epoch, "activation_height": r.activation_height,
                                            "items": []})
            e["items"].append({"index": r.position, "name": r.name, "agency": r.agency, "address": v.hx(r.address),
                               "bls_public_key": v.hx(r.bls_public_key),
                               "bls_pop": v.hx(r.bls_pop) if getattr(r, "bls_pop", None) is not None else None})
        return {"epochs": list(epochs.values())}

    @app.get("/api/v1/governance/proposals", summary="Governance proposals, newest first (keyset by id)")
    def proposals(before: Before = None, limit: Limit = 20, from_block: FromBlock = None, to_block: ToBlock = None,
                  from_time: FromTime = None, to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        stmt = select(s.proposals).where(s.proposals.c.created_height >= lo, s.proposals.c.created_height <= hi)
        return respond(stmt, s.proposals.c.id, before, limit, v.view_proposal, format, "proposals")

    @app.get("/api/v1/governance/proposals/{proposal_id}", summary="One proposal with its votes")
    def proposal(proposal_id: Annotated[int, Path(ge=0, le=MAX_INT)]) -> dict[str, Any]:
        with reader.connect() as conn:
            r = conn.execute(select(s.proposals).where(s.proposals.c.id == proposal_id)).first()
            if r is None:
                raise NotFound(f"no proposal {proposal_id}")
            vs = conn.execute(select(s.votes).where(s.votes.c.proposal_id == proposal_id)
                              .order_by(s.votes.c.seq).limit(1000)).all()
        out = v.view_proposal(r)
        out["votes"] = [{"voter": v.hx(x.voter), "agency": x.agency, "support": x.support, "block_height": x.height}
                        for x in vs]
        return out

    # -- datasets and evidence --------------------------------------------------------------------
    @app.get("/api/v1/datasets", summary="Datasets, newest first (keyset by id)")
    def list_datasets(before: Before = None, limit: Limit = 20, owner: Annotated[str | None, Query(max_length=128)] = None,
                      from_block: FromBlock = None, to_block: ToBlock = None, from_time: FromTime = None,
                      to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        stmt = select(s.datasets).where(s.datasets.c.registered_height >= lo, s.datasets.c.registered_height <= hi)
        if owner is not None:
            stmt = stmt.where(s.datasets.c.owner == owner)
        return respond(stmt, s.datasets.c.id, before, limit, v.view_dataset, format, "datasets")

    @app.get("/api/v1/datasets/{dataset_id}", summary="One dataset")
    def get_dataset(dataset_id: Annotated[int, Path(ge=0, le=MAX_INT)]) -> dict[str, Any]:
        with reader.connect() as conn:
            r = conn.execute(select(s.datasets).where(s.datasets.c.id == dataset_id)).first()
            grants = conn.execute(select(s.grants).where(s.grants.c.dataset_id == dataset_id)
                                  .order_by(s.grants.c.id.desc()).limit(100)).all()
        if r is None:
            raise NotFound(f"no dataset {dataset_id}")
        out = v.view_dataset(r)
        out["grants_recent"] = [{"id": g.id, "grantee": g.grantee, "action": g.action, "purpose": g.purpose,
                                 "expires_at": g.expires_at, "issued_height": g.issued_height,
                                 "revoked_height": g.revoked_height, "deliveries": g.deliveries,
                                 "computations": g.computations} for g in grants]
        return out

    @app.get("/api/v1/datasets/{dataset_id}/history", summary="Access history of a dataset: requests, decisions "
             "(Cedar policy ids and reasons), grants, revocations, deliveries, computations (keyset)")
    def dataset_history(dataset_id: Annotated[int, Path(ge=0, le=MAX_INT)], before: Before = None, limit: Limit = 20,
                        from_block: FromBlock = None, to_block: ToBlock = None, from_time: FromTime = None,
                        to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        dh = s.dataset_history
        stmt = select(dh).where(dh.c.dataset_id == dataset_id,
                                *seq_range(dh.c.seq, lo, hi, s.SEQ_SHIFT + s.LOG_SHIFT))
        return respond(stmt, dh.c.seq, before, limit, v.view_history, format, "dataset-history")

    @app.get("/api/v1/evidence", summary="Equivocation evidence recorded on chain (keyset)")
    def list_evidence(before: Before = None, limit: Limit = 20, from_block: FromBlock = None, to_block: ToBlock = None,
                      from_time: FromTime = None, to_time: ToTime = None, format: Format = "json") -> Any:
        lo, hi = heights_of(from_block, to_block, from_time, to_time)
        stmt = select(s.evidence).where(*seq_range(s.evidence.c.seq, lo, hi, s.SEQ_SHIFT + s.LOG_SHIFT))
        return respond(stmt, s.evidence.c.seq, before, limit, v.view_evidence, format, "evidence")

    # -- search and stats -------------------------------------------------------------------------
    @app.get("/api/v1/search", summary="Search by block number, block or tx hash, address, agency name (typo-"
             "tolerant) or dataset id/title; ranked")
    def search(q: Annotated[str, Query(min_length=1, max_length=128)],
               limit: Annotated[int, Query(ge=1, le=50)] = 10) -> dict[str, Any]:
        return {"query": q, "items": run_search(reader, q.strip(), limit)}

    @app.get("/api/v1/stats", summary="Transactions and blocks per minute, hour or day, with tx/s")
    def stats(interval: Annotated[str, Query(pattern="^(minute|hour|day)$")] = "hour", before: Before = None,
              limit: Limit = 48, from_time: FromTime = None, to_time: ToTime = None, format: Format = "json") -> Any:
        table, width = s.STATS_TABLES[interval]
        conds = []
        if from_time is not None:
            conds.append(table.c.bucket >= from_time // 1000 // width * width)
        if to_time is not None:
            conds.append(table.c.bucket <= to_time // 1000)

        def view(r: Any) -> dict[str, Any]:
            return {"bucket": r.bucket, "interval_s": width, "txs": r.txs, "blocks": r.blocks,
                    "tx_per_s": round(r.txs / width, 3)}

        out = respond(select(table).where(*conds), table.c.bucket, before, limit, view, format, f"stats-{interval}")
        if isinstance(out, dict):
            with reader.connect() as conn:
                tot = conn.execute(select(func.coalesce(func.sum(s.stats_day.c.txs), 0),
                                          func.coalesce(func.sum(s.stats_day.c.blocks), 0))).one()
            out["totals"] = {"txs": int(tot[0]), "blocks": int(tot[1])}
        return out

    from chainshare.explorer.api.etherscan import create_etherscan_router

    app.include_router(create_etherscan_router(reader))
    from chainshare.explorer.api.credit import create_credit_router

    app.include_router(create_credit_router(reader))

    from chainshare.explorer.api.joint import create_joint_router

    app.include_router(create_joint_router(reader))
    from chainshare.explorer.web.pages import mount_pages  # the auditors' HTML pages (explorer part 2)

    mount_pages(app, reader)
    return app


_BLOCK_PROOF_COLUMNS = ("header", "qc", "qc_signers", "tx_leaf_hashes", "receipt_leaf_hashes")


def get_served_columns(engine: Engine, table: Any) -> list[Any]:
    """The columns of ``table`` this code knows AND the database has, read once at start: a replica
    selects exactly these, so it serves both the schema of its own release and that of the next
    one (expand/contract migrations: a column is added before code reads it, dropped after none does)."""
    try:
        present = {c["name"] for c in inspect(engine).get_columns(table.name)}
    except SQLAlchemyError:
        return list(table.columns)  # the database is not reachable yet: assume the current schema
    return [c for c in table.columns if c.name in present] or list(table.columns)


def has_served_table(engine: Engine, table: Any) -> bool:
    """Whether the database has ``table`` (read once at start, like ``get_served_columns``): a replica
    of a revision before the table existed serves without it; a database the indexer has not created
    yet will have the current schema."""
    try:
        names = set(inspect(engine).get_table_names())
    except SQLAlchemyError:
        return True  # the database is not reachable yet: assume the current schema
    return table.name in names or s.blocks.name not in names


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges, sorted, overlapping or adjacent ones merged."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _leaf_hashes(blob: Any) -> list[bytes] | None:
    if blob is None:
        return None
    b = bytes(blob)
    return [b[i:i + 32] for i in range(0, len(b), 32)]


def _qc_json(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    from chainshare.ledger.types import QuorumCertificate

    qc = QuorumCertificate.from_list(codec.decode(bytes(raw)))
    return {"encoded": v.hx(raw), "block_hash": v.hx(qc.block_hash), "height": qc.height, "round": qc.round,
            "signers": v.hx(qc.signers), "signer_indices": qc.signer_indices(), "signature": v.hx(qc.signature)}


def _csv_response(items: list[dict[str, Any]], name: str) -> StreamingResponse:
    buf = io.StringIO()
    if items:
        w = csv.DictWriter(buf, fieldnames=list(items[0]))
        w.writeheader()
        w.writerows(v.flatten(i) for i in items)
    return StreamingResponse(iter([buf.getvalue()]), media_type="text/csv")


def run_search(engine: Engine, q: str, limit: int) -> list[dict[str, Any]]:
    """Ranked matches of ``q``: exact identifiers first (score 1.0), then names by similarity; credit subjects
    by USCC or handle (a malformed USCC is a 400 naming the problem) or by their records' public text."""
    from chainshare.explorer.api.credit import search_credit

    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        if re.fullmatch(r"[0-9]{1,15}", q):
            n = int(q)
            if conn.execute(select(s.blocks.c.height).where(s.blocks.c.height == n)).first():
                out.append({"kind": "block", "id": n, "score": 1.0, "path": f"/api/v1/blocks/{n}"})
            d = conn.execute(select(s.datasets.c.id, s.datasets.c.title).where(s.datasets.c.id == n)).first()
            if d:
                out.append({"kind": "dataset", "id": n, "title": d.title, "score": 0.99,
                            "path": f"/api/v1/datasets/{n}"})
        elif re.fullmatch(r"0x[0-9a-fA-F]{64}", q):
            raw = _unhex(q)
            b = conn.execute(select(s.blocks.c.height).where(s.blocks.c.hash == raw)).first()
            if b:
                out.append({"kind": "block", "id": b.height, "score": 1.0, "path": f"/api/v1/blocks/{b.height}"})
            if conn.execute(select(s.txs.c.seq).where(s.txs.c.hash == raw)).first():
                out.append({"kind": "tx", "id": q.lower(), "score": 1.0, "path": f"/api/v1/txs/{q.lower()}"})
        elif re.fullmatch(r"0x[0-9a-fA-F]{40}", q):
            raw = _unhex(q)
            ag = conn.execute(select(s.agency_accounts.c.agency).where(s.agency_accounts.c.address == raw)).scalar()
            seen = conn.execute(select(s.address_txs.c.seq).where(s.address_txs.c.address == raw).limit(1)).first()
            if ag or seen:
                out.append({"kind": "address", "id": q.lower(), "agency": ag, "score": 1.0,
                            "path": f"/api/v1/addresses/{q.lower()}/txs"})
        if not out:
            low = q.lower()
            names = conn.execute(select(s.agencies.c.name).limit(10_000)).scalars().all()
            for name in names:
                score = difflib.SequenceMatcher(None, low, name.lower()).ratio()
                if low in name.lower():
                    score = max(score, 0.9)
                if score >= 0.6:
                    out.append({"kind": "agency", "id": name, "score": round(score, 3),
                                "path": f"/api/v1/agencies/{name}"})
            like = low.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            ds = conn.execute(select(s.datasets.c.id, s.datasets.c.title).where(
                or_(func.lower(s.datasets.c.title).like(like + "%", escape="\\"),
                    func.lower(s.datasets.c.owner) == low)).order_by(s.datasets.c.id.desc()).limit(limit)).all()
            for d in ds:
                score = difflib.SequenceMatcher(None, low, d.title.lower()).ratio()
                out.append({"kind": "dataset", "id": d.id, "title": d.title, "score": round(max(score, 0.6), 3),
                            "path": f"/api/v1/datasets/{d.id}"})
        out.extend(search_credit(conn, q, limit))
    out.sort(key=lambda x: -x["score"])
    return out[:limit]

