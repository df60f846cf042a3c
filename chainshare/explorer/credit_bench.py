"""``chainshare bench explorer --credit-records N``: a certified chain of N credit records over S subjects
(Governance configures the registry, then ``publishBatch`` transactions of 100 records), indexed by the
explorer, then the credit API loaded: subject query (records, history, score with explanation) over random
subjects, record with history, red/black list pages, search by USCC. Reports p50/p95 per endpoint.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from stdnum.cn import uscc

from chainshare.bench import read_load_average
from chainshare.credit.batches import encode_publish_batch
from chainshare.crypto.hashing import keccak256
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY, GOVERNANCE
from chainshare.explorer.bench import Call, _call, _rss_mb, build_chain, measure_endpoints, serve_replicas

CATEGORY = "administrative_penalty"
RULE = {"name": "bench", "base": 1000, "min": 0, "max": 2000,
        "weights": {CATEGORY: {"1": -10, "2": -20, "3": -50, "4": -100, "5": -200}}, "decay_days": {CATEGORY: 1095},
        "caps": {CATEGORY: 600}}
PER_TX = 100
START_S = 1_700_000_000  # the bench chain's genesis time


def bench_subject(k: int) -> str:
    """The k-th bench organisation's USCC (valid check characters)."""
    body = "91110000" + f"{k:08d}" + "0"
    return body + uscc.calc_check_digit(body)


def credit_plan(n_records: int, n_subjects: int) -> Callable[[list[bytes]], Iterator[list[Call]]]:
    """Governance blocks (category, issuer, scoring rule: propose, 3 votes of 4, execute), then one block per
    ``publishBatch`` of agency1 (record k is about subject k mod S; every 5th is positive)."""
    config = [_call("setCategory(string code, string title, bool active)", CATEGORY, "Administrative penalty", True),
              _call("setIssuer(string category, string agency, bool authorised)", CATEGORY, "agency1", True),
              _call("installScoringRule(string ruleJson)", json.dumps(RULE))]

    def plan(keys: list[bytes]) -> Iterator[list[Call]]:
        for pid, inner in enumerate(config, start=1):
            yield [(0, GOVERNANCE, _call("propose(address target, bytes data, string description)",
                                         "0x" + CREDIT_REGISTRY.hex(), inner, "bench credit setup"), 5_000_000),
                   *[(a, GOVERNANCE, _call("vote(uint256 id, bool support)", pid, True), 5_000_000) for a in (0, 2, 4)],
                   (0, GOVERNANCE, _call("execute(uint256 id)", pid), 5_000_000)]
        for first in range(0, n_records, PER_TX):
            rows = [[bench_subject(k % n_subjects), CATEGORY, 1 if k % 5 == 0 else 2, 1 + k % 5, f"BENCH-{k}",
                     "Bench bureau", "Bench regulation art. 1", f"bench record {k}", bytes(32), START_S, START_S,
                     180 * 86400, 3650 * 86400, keccak256(b"bench evidence %d" % k)] for k in range(first, min(first + PER_TX, n_records))]
            yield [(0, CREDIT_REGISTRY, encode_publish_batch(rows), 50_000_000)]

    return plan


def run_credit_bench(n_records: int, n_subjects: int, db: str, clients: int = 8,
                     requests: int = 400) -> dict[str, Any]:
    from chainshare.explorer.db.engine import create_db_engine, get_db_kind, redact_db_url
    from chainshare.explorer.indexer.service import Indexer, IndexerConfig

    t0 = time.monotonic()
    src = build_chain(0, blocks_plan=credit_plan(n_records, n_subjects))
    build_s = time.monotonic() - t0
    ix = Indexer(create_db_engine(db), IndexerConfig(urls=(), batch_blocks=20, batch_txs=10_000), sources=[src])
    t1, c1 = time.monotonic(), time.process_time()
    ix.run(until_caught_up=True)
    index_s, index_cpu = time.monotonic() - t1, time.process_time() - c1
    result: dict[str, Any] = {
        "scenario": "explorer-credit", "db": get_db_kind(db), "db_url": redact_db_url(db), "records": n_records,
        "subjects": n_subjects, "blocks": src.get_head(), "build_chain_s": round(build_s, 1),
        "index_s": round(index_s, 1), "index_cpu_us_per_record": round(index_cpu / n_records * 1e6, 1),
        "load_average": read_load_average()}
    result["api"] = _drive_credit_api(db, n_records, n_subjects, clients, requests)
    result["load_average_after"] = read_load_average()
    return result


def count_indexed_credit(db: str) -> tuple[int, int]:
    """(records, subjects) of an indexed credit bench chain."""
    from sqlalchemy import func, select

    from chainshare.explorer.db import schema as s
    from chainshare.explorer.db.engine import create_db_engine

    engine = create_db_engine(db, readonly=True)
    try:
        with engine.connect() as conn:
            t = s.credit_records
            records = int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
            subjects = int(conn.execute(select(func.count(t.c.subject.distinct()))).scalar() or 0)
    finally:
        engine.dispose()
    return records, subjects


def run_credit_api_bench(db: str, clients: int = 8, requests: int = 400) -> dict[str, Any]:
    """The credit API half alone, over a database an earlier ``--credit-records`` run indexed."""
    from chainshare.explorer.db.engine import get_db_kind, redact_db_url

    n_records, n_subjects = count_indexed_credit(db)
    return {"scenario": "explorer-credit-api", "db": get_db_kind(db), "db_url": redact_db_url(db),
            "records": n_records, "subjects": n_subjects, "load_average": read_load_average(),
            "api": _drive_credit_api(db, n_records, n_subjects, clients, requests),
            "load_average_after": read_load_average()}


def _drive_credit_api(db: str, n_records: int, n_subjects: int, clients: int, requests: int) -> dict[str, Any]:
    from chainshare.bench import free_port_block

    rnd = random.Random(7)
    subjects = [f"/api/v1/credit/subjects/{bench_subject(rnd.randrange(n_subjects))}" for _ in range(requests)]
    records = [f"/api/v1/credit/records/{rnd.randrange(1, n_records + 1)}" for _ in range(requests)]
    with serve_replicas(db, free_port_block(2)) as (urls, pids):
        out = measure_endpoints(urls, {
            "credit_subject": subjects,
            "credit_record": records,
            "credit_black_list": ["/api/v1/credit/lists/black?limit=20"],
            "credit_red_list_deep": [f"/api/v1/credit/lists/red?limit=20&before={n_records // 2}"],
            "search_uscc": [f"/api/v1/search?q={bench_subject(n_subjects // 2)}"]}, clients, requests)
        out |= {"api_rss_mb": [_rss_mb(p) for p in pids], "clients": clients}
    return out
