"""An Etherscan-compatible subset at ``/api?module=...&action=...``, so tools that speak it work.

Answers follow Etherscan's conventions: HTTP 200 with ``{"status": "1", "message": "OK",
"result": ...}``, or ``{"status": "0", "message": "NOTOK" | "No ... found", "result": <reason>}``.
``page``/``offset`` are honoured as Etherscan does, within its result window (page x offset <=
10,000), so a request never scans more than that many index entries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Engine, select

from chainshare.decimal_text import parse_ascii_decimal, parse_hex_quantity
from chainshare.explorer.api.views import hx
from chainshare.explorer.db import schema as s
from chainshare.ledger.txs import decode_transaction

WINDOW = 10_000
MAX_BLOCK = 2**30  # (MAX_BLOCK + 1) << (SEQ_SHIFT + LOG_SHIFT) still fits a signed 64-bit integer
Q = Annotated[str | None, Query(max_length=200)]


class _Bad(Exception):
    pass


def _ok(result: Any) -> dict[str, Any]:
    return {"status": "1", "message": "OK", "result": result}


def _none(what: str) -> dict[str, Any]:
    return {"status": "0", "message": f"No {what} found", "result": []}


def _int(p: dict[str, str], name: str, default: int | None, lo: int = 0, hi: int = MAX_BLOCK) -> int:
    raw = p.get(name)
    if raw is None or raw == "":
        if default is None:
            raise _Bad(f"Missing or invalid {name}")
        return default
    if raw == "latest" and name in ("endblock", "toBlock"):
        return hi
    v = parse_hex_quantity(raw, max_digits=16) if raw.startswith("0x") else parse_ascii_decimal(raw, max_digits=20)
    if v is None:
        raise _Bad(f"Invalid {name}")
    if not lo <= v <= hi:
        raise _Bad(f"{name} must be between {lo} and {hi}")
    return v


def _hex_param(p: dict[str, str], name: str, size: int, required: bool) -> bytes | None:
    raw = p.get(name)
    if raw is None or raw == "":
        if required:
            raise _Bad(f"Missing or invalid {name}")
        return None
    if not re.fullmatch(rf"0x[0-9a-fA-F]{{{2 * size}}}", raw):
        raise _Bad(f"Invalid {name} format")
    return bytes.fromhex(raw[2:])


def _window(p: dict[str, str]) -> tuple[int, int]:
    page = _int(p, "page", 1, 1, WINDOW)
    offset = _int(p, "offset", 100 if "page" not in p else 10, 1, 1000)
    if page * offset > WINDOW:
        raise _Bad(f"Result window is too large, PageNo x Offset size must be less than or equal to {WINDOW}")
    return page, offset


def create_etherscan_router(engine: Engine) -> APIRouter:
    router = APIRouter()

    @router.get("/api", summary="Etherscan-compatible subset: account/txlist, logs/getLogs, "
                "block/getblocknobytime, transaction/gettxreceiptstatus, transaction/getstatus, stats/dailytx, "
                "proxy/eth_blockNumber")
    def etherscan(request: Request, module: Q = None, action: Q = None, address: Q = None, startblock: Q = None,
                  endblock: Q = None, page: Q = None, offset: Q = None, sort: Q = None,
                  fromBlock: Q = None, toBlock: Q = None, topic0: Q = None, topic1: Q = None,  # noqa: N803
                  topic2: Q = None, topic3: Q = None, timestamp: Q = None, closest: Q = None, txhash: Q = None,
                  startdate: Q = None, enddate: Q = None) -> dict[str, Any]:
        p = {k: v[:200] for k, v in request.query_params.items()}
        route = (p.get("module", ""), p.get("action", ""))
        handler = HANDLERS.get(route)
        if handler is None:
            return {"status": "0", "message": "NOTOK", "result": "Error! Missing Or invalid Module name / Action name"}
        try:
            return dict(handler(engine, p))
        except _Bad as exc:
            return {"status": "0", "message": "NOTOK", "result": f"Error! {exc}"}

    return router


def _txlist(engine: Engine, p: dict[str, str]) -> dict[str, Any]:
    addr = _hex_param(p, "address", 20, True)
    start = _int(p, "startblock", 0)
    end = _int(p, "endblock", MAX_BLOCK)
    page, offset = _window(p)
    desc = p.get("sort", "asc") == "desc"
    if p.get("sort", "asc") not in ("asc", "desc"):
        raise _Bad("sort must be asc or desc")
    at = s.address_txs
    # the page of seqs first (an index range walked in order, whatever the planner's statistics),
    # then its rows: a LIMIT subquery is never flattened into a join that sorts the whole history
    page_seqs = (select(at.c.seq).where(at.c.address == addr, at.c.seq >= start << s.SEQ_SHIFT,
                                        at.c.seq < min(end + 1, MAX_BLOCK) << s.SEQ_SHIFT)
                 .order_by(at.c.seq.desc() if desc else at.c.seq).limit(offset).offset((page - 1) * offset)
                 .subquery())
    stmt = (select(s.txs, s.blocks.c.hash.label("block_hash"))
            .select_from(page_seqs.join(s.txs, s.txs.c.seq == page_seqs.c.seq)
                         .join(s.blocks, s.blocks.c.height == s.txs.c.height))
            .order_by(s.txs.c.seq.desc() if desc else s.txs.c.seq))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        top = conn.execute(select(s.progress.c.height)).scalar() or 0
        chain_id = int(conn.execute(select(s.meta.c.value).where(s.meta.c.key == "chain_id")).scalar() or 0)
    if not rows:
        return _none("transactions")
    out = []
    for r in rows:
        tx = decode_transaction(bytes(r.raw), chain_id)
        out.append({"blockNumber": str(r.height), "timeStamp": str(r.timestamp_ms // 1000), "hash": hx(r.hash),
                    "nonce": str(r.nonce), "blockHash": hx(r.block_hash), "transactionIndex": str(r.position),
                    "from": hx(r.sender), "to": hx(r.to) or "", "value": "0", "gas": str(tx.gas_limit),
                    "gasPrice": str(tx.gas_price or tx.max_fee_per_gas), "isError": "0" if r.status == 1 else "1",
                    "txreceipt_status": str(r.status), "input": hx(tx.data), "contractAddress": "",
                    "cumulativeGasUsed": str(r.gas_used), "gasUsed": str(r.gas_used),
                    "confirmations": str(top - r.height + 1), "methodId": hx(tx.data[:4]) if tx.data else "0x",
                    "functionName": r.method or ""})
    return _ok(out)


def _getlogs(engine: Engine, p: dict[str, str]) -> dict[str, Any]:
    lo = _int(p, "fromBlock", 0)
    hi = _int(p, "toBlock", MAX_BLOCK)
    addr = _hex_param(p, "address", 20, False)
    topics = [_hex_param(p, f"topic{i}", 32, False) for i in range(4)]
    page, offset = _window(p)
    lg = s.logs
    conds = [lg.c.seq >= lo << (s.SEQ_SHIFT + s.LOG_SHIFT), lg.c.seq < min(hi + 1, MAX_BLOCK) << (s.SEQ_SHIFT + s.LOG_SHIFT)]
    if addr is not None:
        conds.append(lg.c.address == addr)
    for i, t in enumerate(topics):
        if t is not None:
            conds.append(getattr(lg.c, f"topic{i}") == t)
    stmt = (select(lg, s.txs.c.hash.label("tx_hash"), s.txs.c.timestamp_ms, s.txs.c.gas_used, s.txs.c.position)
            .select_from(lg.join(s.txs, s.txs.c.seq == lg.c.tx_seq)).where(*conds)
            .order_by(lg.c.seq).limit(offset).offset((page - 1) * offset))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows:
        return _none("records")
    return _ok([{"address": hx(r.address), "topics": [hx(t) for t in (r.topic0, r.topic1, r.topic2, r.topic3)
                                                     if t is not None],
                 "data": hx(r.data), "blockNumber": hex(r.height), "timeStamp": hex(r.timestamp_ms // 1000),
                 "gasPrice": "0x0", "gasUsed": hex(r.gas_used), "logIndex": hex(r.seq & 0xFFF),
                 "transactionHash": hx(r.tx_hash), "transactionIndex": hex(r.position)} for r in rows])


def _blocknobytime(engine: Engine, p: dict[str, str]) -> dict[str, Any]:
    ts = _int(p, "timestamp", None, 0, 2**40) * 1000
    closest = p.get("closest", "before")
    if closest not in ("before", "after"):
        raise _Bad("closest must be before or after")
    b = s.blocks
    stmt = (select(b.c.height).where(b.c.timestamp_ms <= ts + 999).order_by(b.c.timestamp_ms.desc(), b.c.height.desc())
            if closest == "before" else
            select(b.c.height).where(b.c.timestamp_ms >= ts).order_by(b.c.timestamp_ms, b.c.height))
    with engine.connect() as conn:
        h = conn.execute(stmt.limit(1)).scalar()
    if h is None:
        return {"status": "0", "message": "NOTOK", "result": "Error! No closest block found"}
    return _ok(str(h))


def _receipt_status(engine: Engine, p: dict[str, str], field: str) -> dict[str, Any]:
    th = _hex_param(p, "txhash", 32, True)
    with engine.connect() as conn:
        r = conn.execute(select(s.txs.c.status, s.txs.c.error).where(s.txs.c.hash == th)).first()
    if field == "status":
        return _ok({"status": "" if r is None else str(r.status)})
    return _ok({"isError": "" if r is None else ("0" if r.status == 1 else "1"),
                "errDescription": (r.error or "") if r is not None else ""})


def _dailytx(engine: Engine, p: dict[str, str]) -> dict[str, Any]:
    def day(name: str) -> int:
        raw = p.get(name)
        if not raw:
            raise _Bad(f"Missing {name} (yyyy-MM-dd)")
        try:
            return int(datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
        except ValueError as exc:
            raise _Bad(f"Invalid {name} (yyyy-MM-dd)") from exc

    lo, hi = day("startdate"), day("enddate")
    desc = p.get("sort", "asc") == "desc"
    t = s.stats_day
    stmt = select(t).where(t.c.bucket >= lo, t.c.bucket <= hi).order_by(t.c.bucket.desc() if desc else t.c.bucket)
    with engine.connect() as conn:
        rows = conn.execute(stmt.limit(WINDOW)).all()
    if not rows:
        return _none("records")
    return _ok([{"UTCDate": datetime.fromtimestamp(r.bucket, UTC).strftime("%Y-%m-%d"), "unixTimeStamp": str(r.bucket),
                 "transactionCount": int(r.txs)} for r in rows])


def _block_number(engine: Engine, p: dict[str, str]) -> dict[str, Any]:
    with engine.connect() as conn:
        h = conn.execute(select(s.progress.c.height)).scalar() or 0
    return {"jsonrpc": "2.0", "id": 83, "result": hex(h)}


HANDLERS: dict[tuple[str, str], Any] = {
    ("account", "txlist"): _txlist,
    ("logs", "getLogs"): _getlogs,
    ("block", "getblocknobytime"): _blocknobytime,
    ("transaction", "gettxreceiptstatus"): lambda e, p: _receipt_status(e, p, "status"),
    ("transaction", "getstatus"): lambda e, p: _receipt_status(e, p, "error"),
    ("stats", "dailytx"): _dailytx,
    ("proxy", "eth_blockNumber"): _block_number,
}
