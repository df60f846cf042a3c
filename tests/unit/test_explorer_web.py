"""The explorer pages without a network: an empty and a hostile index render without a stack trace,
names are HTML-escaped, bad ids are precise 400s, unknown ones friendly 404s, and the helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from chainshare.explorer.api.app import create_explorer_app
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.engine import create_db_engine
from chainshare.explorer.web.credentials import mount_credential_pages
from chainshare.explorer.web.pages import f_duration, f_num, f_short, get_endpoints, get_time_buckets

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ex.db'}")
    s.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(s.agencies).values(name=EVIL, role="member", active=True, added_height=0,
                                               tx_count=1234567, last_height=None))
    return TestClient(create_explorer_app(engine), raise_server_exceptions=False)


def test_every_page_of_an_empty_index_renders(client: TestClient) -> None:
    for path in ("/", "/blocks", "/txs", "/agencies", "/datasets", "/validators", "/governance", "/evidence"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html") and "Traceback" not in r.text
        assert float(r.headers["server-timing"].split("dur=")[1]) >= 0


def test_names_from_the_chain_are_escaped(client: TestClient) -> None:
    r = client.get("/agencies")
    assert EVIL not in r.text and "&lt;script&gt;" in r.text and "1,234,567" in r.text
    page = client.get("/agency/" + EVIL)
    assert page.status_code == 200 and EVIL not in page.text


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/tx/0x" + "00" * 32, 404, "no indexed transaction"),
    ("/tx/0x12", 400, "expected 0x followed by 64 hex digits"),
    ("/block/99", 404, "no indexed block 99"),
    ("/block/xyz", 400, "neither a block number"),
    ("/dataset/7", 404, "no dataset 7"),
    ("/dataset/abc", 400, "not a dataset id"),
    ("/address/0x1234", 400, "expected 0x + 40 hex digits"),
    ("/address/0x" + "ab" * 20, 404, "no indexed activity"),
    ("/governance/5", 404, "no proposal 5"),
    ("/txs?before=-1", 400, "page cursor"),
    ("/txs?before=²", 400, "page cursor"),  # str.isdigit() is true of "²", which int() refuses
    ("/txs?before=٣", 400, "page cursor"),  # ... and of other scripts' digits, which int() reads ("٣" as 3)
    ("/search?q=", 400, "Type a block number"),
    ("/search?q=0xabc", 400, "has 3 hex digits"),
    ("/search?q=nothing-like-this", 404, "Nothing indexed matches"),
    ("/agency/" + "a" * 200, 400, "at most 128"),
    ("/no/such/page", 404, "There is no page at /no/such/page"),
    ("/tx/0x12/proof.json", 400, "64 hex digits"),
])
def test_bad_and_unknown_ids_get_precise_friendly_errors(client: TestClient, path: str, status: int,
                                                         words: str) -> None:
    r = client.get(path)
    assert r.status_code == status and words in r.text and "Traceback" not in r.text


def test_api_errors_stay_json(client: TestClient) -> None:
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


def test_a_database_outage_is_a_503_page(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'missing.db'}")  # no tables
    r = TestClient(create_explorer_app(engine), raise_server_exceptions=False).get("/blocks")
    assert r.status_code == 503 and "database unavailable" in r.text


def test_helpers() -> None:
    assert f_num(1234567) == "1,234,567" and f_num(None) == ""
    h = "0x" + "ab" * 32
    out = str(f_short(h, "/tx/" + h))
    assert 'title="' + h + '"' in out and "0xabababab…ababab" in out and 'data-copy="' + h + '"' in out
    assert f_duration(0.74) == "0.7 s" and f_duration(303) == "5 min 3 s" and f_duration(96_527_040) == "1,117 days"
    buckets = get_time_buckets([{"bucket": 600, "txs": 6, "tx_per_s": 0.1}], 725, 60, 5)
    assert [b["bucket"] for b in buckets] == [480, 540, 600, 660, 720] and buckets[2]["txs"] == 6
    assert sum(b["txs"] for b in buckets) == 6


def test_the_pages_see_the_endpoints_of_included_routers(tmp_path: Path) -> None:
    """The credit, joint-job and Etherscan APIs are included routers (one entry in ``app.routes`` since
    FastAPI 0.137): the pages' endpoint map holds their endpoint functions all the same."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ex.db'}")
    ep = get_endpoints(create_explorer_app(engine))
    assert {"get_record", "get_list", "get_provenance", "get_joint_job", "get_joint_jobs", "etherscan",
            "list_blocks", "status"} <= set(ep)
    assert ep["get_joint_jobs"].__module__ == "chainshare.explorer.api.joint"


@pytest.mark.parametrize("path", ["/api/v1/credentials/verify", "/credentials/verify"])
def test_a_content_length_of_non_ascii_digits_is_a_400_not_a_500(tmp_path: Path, path: str) -> None:
    """A header byte 0xB2 reads as "²" (latin-1), which str.isdigit() takes and int() refuses. httpx's ASGI
    transport sends the raw bytes (TestClient would re-encode them as UTF-8)."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ex.db'}")
    s.metadata.create_all(engine)
    app = create_explorer_app(engine)
    mount_credential_pages(app, "http://127.0.0.1:9")  # as `chainshare explorer serve --node URL` does

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as c:
            return await c.post(path, content=b"", headers={"Content-Length": b"\xb2",
                                                              "Content-Type": "application/json"})

    r = asyncio.run(post())
    assert (b"Content-Length", b"\xb2") in r.request.headers.raw
    assert r.status_code == 400 and "the request body is at most" in r.text, r.text[:300]


@pytest.mark.parametrize("number", ["٣", "३", "1_0", " 1", "+1", "0x_1", "0x٣", "0x" + "1" * 17])
def test_etherscan_numbers_are_ascii_digits_or_0x_hex_only(client: TestClient, number: str) -> None:
    """int() alone reads "٣" as 3 and takes a sign, spaces and underscores: each is an invalid parameter."""
    r = client.get("/api", params={"module": "block", "action": "getblocknobytime", "timestamp": number})
    assert r.json() == {"status": "0", "message": "NOTOK", "result": "Error! Invalid timestamp"}
    ok = client.get("/api", params={"module": "block", "action": "getblocknobytime", "timestamp": "0x10"})
    assert ok.json()["result"] == "Error! No closest block found"  # a valid number, on an empty index

