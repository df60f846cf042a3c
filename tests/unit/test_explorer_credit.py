"""The explorer's credit API over a certified chain of 300 records (the credit bench's chain: Governance
configures the registry, agency1 publishes in batches; every 5th record is positive): the red and black lists
partition the displayed records and page by keyset without gaps, search by USCC (any case) and by words,
precise 4xx for malformed input, and the index is the same whatever the batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chainshare.explorer.api.app import create_explorer_app
from chainshare.explorer.bench import MemorySource
from chainshare.explorer.credit_bench import bench_subject, build_chain, credit_plan
from chainshare.explorer.db.content import compute_content_hash
from chainshare.explorer.db.engine import create_db_engine
from chainshare.explorer.indexer.service import Indexer, IndexerConfig

RECORDS, SUBJECTS = 300, 30


@pytest.fixture(scope="module")
def chain() -> MemorySource:
    return build_chain(0, blocks_plan=credit_plan(RECORDS, SUBJECTS))


def index(chain: MemorySource, db: Path, batch_blocks: int) -> str:
    url = f"sqlite:///{db}"
    Indexer(create_db_engine(url), IndexerConfig(urls=(), batch_blocks=batch_blocks, batch_txs=10_000),
            sources=[chain]).run(until_caught_up=True)
    return url


@pytest.fixture(scope="module")
def api(chain: MemorySource, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    url = index(chain, tmp_path_factory.mktemp("credit") / "x.db", 20)
    return TestClient(create_explorer_app(create_db_engine(url, readonly=True)))


def walk(api: TestClient, name: str) -> list[int]:
    ids: list[int] = []
    before: Any = None
    while True:
        page = api.get(f"/api/v1/credit/lists/{name}", params={"limit": 7, **({"before": before} if before else {})})
        assert page.status_code == 200, page.text
        ids += [r["id"] for r in page.json()["items"]]
        before = page.json()["next_before"]
        if before is None:
            return ids


def test_lists_partition_the_displayed_records_and_page_without_gaps(api: TestClient) -> None:
    red, black = walk(api, "red"), walk(api, "black")
    assert red == sorted((k + 1 for k in range(RECORDS) if k % 5 == 0), reverse=True)
    assert black == sorted((k + 1 for k in range(RECORDS) if k % 5), reverse=True)
    rows = api.get("/api/v1/credit/lists/red", params={"format": "csv"}).text.splitlines()
    assert rows[0].startswith("id,subject,") and [int(r.split(",")[0]) for r in rows[1:]] == red


def test_subject_view_has_every_record_history_and_score(api: TestClient) -> None:
    subject = bench_subject(3)
    view = api.get(f"/api/v1/credit/subjects/{subject}").json()
    assert sorted(r["id"] for r in view["records"]) == [k + 1 for k in range(RECORDS) if k % SUBJECTS == 3]
    assert all(len(r["versions"]) == 1 and r["timeline"][0]["event"] == "RecordPublished" for r in view["records"])
    score = view["score"]
    assert score["rule_name"] == "bench" and len(score["contributions"]) == RECORDS // SUBJECTS
    assert score == api.get(f"/api/v1/credit/subjects/{subject}/score").json()


def test_search_by_uscc_in_any_case_and_by_words(api: TestClient) -> None:
    subject = bench_subject(7)
    for q in (subject, subject.lower()):
        items = api.get("/api/v1/search", params={"q": q}).json()["items"]
        assert items == [{"kind": "credit_subject", "id": subject, "records": RECORDS // SUBJECTS, "score": 1.0,
                          "path": f"/api/v1/credit/subjects/{subject}"}]
    words = api.get("/api/v1/search", params={"q": "BENCH RECORD 37"}).json()["items"]
    assert bench_subject(37 % SUBJECTS) in [x["id"] for x in words]


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/api/v1/search?q=" + bench_subject(1)[:17] + "0", 400, "expected"),
    ("/api/v1/credit/subjects/91110000600037341X", 400, "expected 'L'"),
    ("/api/v1/credit/subjects/P-XYZ", 400, "handle"),
    ("/api/v1/credit/records/0", 400, ""),
    ("/api/v1/credit/records/301", 404, "no credit record 301"),
    ("/api/v1/credit/records/1?at=999999", 400, "is not in"),
    ("/api/v1/credit/lists/grey", 400, ""),
    ("/credit/records/x1", 400, "Not a record id"),
    ("/credit/records/²", 400, "Not a record id"),  # str.isdigit() is true of "²", which int() refuses
    ("/credit/records/٣", 400, "Not a record id"),  # ... and of other scripts' digits ("٣" is 3 to int())
    (f"/credit/subjects/{bench_subject(1)}?at=²", 400, "Bad height"),
    (f"/credit/subjects/{bench_subject(1)}?at=٣", 400, "Bad height"),
    ("/credit/subjects/91110000600037341X", 400, "expected &#39;L&#39;"),
    ("/live/credit?subject=nope", 400, "USCC"),
])
def test_malformed_credit_requests_get_a_precise_4xx(api: TestClient, path: str, status: int, message: str) -> None:
    r = api.get(path)
    assert r.status_code == status and message in r.text, r.text[:300]


def test_the_credit_index_is_the_same_whatever_the_batch_size(chain: MemorySource, tmp_path: Path) -> None:
    a = compute_content_hash(create_db_engine(index(chain, tmp_path / "a.db", 1)))
    b = compute_content_hash(create_db_engine(index(chain, tmp_path / "b.db", 50)))
    assert a["credit_events"] == b["credit_events"] and a["credit_records"] == b["credit_records"]
    assert a == b
