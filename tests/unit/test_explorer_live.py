"""The explorer's live streams (``/live/blocks``, ``/live/credit``) over one SSE loop (``web.live``), on an
indexed certified chain: each resumes after ``after`` with one event per new block or credit event, in
order and with its id; nothing new is a keep-alive; a database outage is a comment, not a broken stream;
bad parameters are 400s; an oversized event is named, not sent. The streams are cut short (the module's
lifetime patched down) so that the test client, which reads a response to its end, sees them whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from chainshare.explorer.api.app import create_explorer_app
from chainshare.explorer.bench import MemorySource
from chainshare.explorer.credit_bench import bench_subject, build_chain, credit_plan
from chainshare.explorer.db.engine import create_db_engine
from chainshare.explorer.indexer.service import Indexer, IndexerConfig
from chainshare.explorer.web import live

RECORDS, SUBJECTS = 12, 3


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    chain: MemorySource = build_chain(0, blocks_plan=credit_plan(RECORDS, SUBJECTS))
    url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'x.db'}"
    Indexer(create_db_engine(url), IndexerConfig(urls=(), batch_blocks=50, batch_txs=10_000),
            sources=[chain]).run(until_caught_up=True)
    return TestClient(create_explorer_app(create_db_engine(url, readonly=True)))


@pytest.fixture(autouse=True)
def short_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "STREAM_SECONDS", 0.6)
    monkeypatch.setattr(live, "POLL_SECONDS", 0.2)


def read_stream(api: TestClient, path: str, **headers: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The comments and the events (type, id, data) of the stream at ``path``."""
    r = api.get(path, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text[:300]
    assert r.headers["cache-control"] == "no-store"
    blocks = [b for b in r.text.split("\n\n") if b]
    assert blocks[0] == f"retry: {live.RETRY_MS}"
    comments = [b for b in blocks[1:] if b.startswith(":")]
    events = []
    for b in blocks[1:]:
        if not b.startswith(":"):
            fields = dict(line.split(": ", 1) for line in b.split("\n"))
            events.append({"event": fields["event"], "id": int(fields["id"]), "data": json.loads(fields["data"])})
    return comments, events


def test_live_blocks_resume_after_the_given_height_one_event_per_block(api: TestClient) -> None:
    head = api.get("/api/v1/blocks", params={"limit": 1}).json()["items"][0]["height"]
    _, events = read_stream(api, f"/live/blocks?after={head - 3}")
    assert [e["id"] for e in events] == [head - 2, head - 1, head]  # once each, oldest first, then keep-alives
    for e in events:
        assert e["event"] == "block" and e["data"]["block"]["height"] == e["id"]
        assert all(tx["block_height"] == e["id"] for tx in e["data"]["txs"])
        assert len(e["data"]["txs"]) == min(e["data"]["block"]["tx_count"], 20)
        assert e["data"]["status"]["indexed_height"] == head
    comments, events = read_stream(api, f"/live/blocks?after={head}")
    assert events == [] and ": keep-alive" in comments
    comments, events = read_stream(api, "/live/blocks")  # no ``after``: from the head on
    assert events == [] and ": keep-alive" in comments


def test_a_reconnecting_event_source_resumes_after_its_last_event_id(api: TestClient) -> None:
    """EventSource reconnects to the URL it opened (its first ``after``) and names the last event it got."""
    head = api.get("/api/v1/blocks", params={"limit": 1}).json()["items"][0]["height"]
    _, events = read_stream(api, f"/live/blocks?after={head - 3}", **{"Last-Event-ID": str(head - 1)})
    assert [e["id"] for e in events] == [head]
    _, events = read_stream(api, f"/live/blocks?after={head - 3}", **{"Last-Event-ID": "junk"})
    assert [e["id"] for e in events] == [head - 2, head - 1, head]
    _, any_events = read_stream(api, "/live/credit?after=0")
    _, none = read_stream(api, "/live/credit?after=0", **{"Last-Event-ID": str(any_events[0]["id"])})
    assert none == []


def test_live_credit_signals_new_events_of_the_subject_or_any(api: TestClient) -> None:
    _, any_events = read_stream(api, "/live/credit?after=0")
    assert len(any_events) == 1 and any_events[0]["event"] == "credit"
    latest = any_events[0]["id"]
    assert any_events[0]["data"] == {"seq": latest}
    _, mine = read_stream(api, f"/live/credit?after=0&subject={bench_subject(1)}")
    assert len(mine) == 1 and 0 < mine[0]["id"] <= latest
    comments, none = read_stream(api, f"/live/credit?after={latest}")
    assert none == [] and ": keep-alive" in comments


@pytest.mark.parametrize(("path", "words"), [
    ("/live/credit?subject=nope", "USCC"),
    ("/live/credit?subject=" + "9" * 81, "80"),
    ("/live/blocks?after=-1", "after"),
    ("/live/blocks?after=" + "9" * 30, "after"),
    ("/live/credit?after=x", "after"),
])
def test_bad_live_parameters_are_400s(api: TestClient, path: str, words: str) -> None:
    r = api.get(path)
    assert r.status_code == 400 and words in r.text, r.text[:300]


def test_a_database_outage_keeps_the_stream_open_with_a_comment(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'missing.db'}")  # no tables
    comments, events = read_stream(TestClient(create_explorer_app(engine)), "/live/credit")
    assert events == [] and comments.count(": database unavailable") >= 2


def test_an_oversized_event_is_named_not_sent() -> None:
    big = live.LiveEvent("block", 7, {"pad": "x" * live.MAX_EVENT_BYTES})
    assert live.format_event(big).startswith(": block 7 omitted:")
    small = live.LiveEvent("credit", 8, {"seq": 8, "text": "a\nb"})
    assert live.format_event(small) == 'event: credit\nid: 8\ndata: {"seq":8,"text":"a\\nb"}\n\n'


def test_a_last_event_id_of_non_ascii_digits_is_ignored_like_junk(api: TestClient) -> None:
    """A header byte 0xB2 reads as "²" (latin-1), which str.isdigit() takes and int() refuses. httpx's ASGI
    transport sends the raw bytes (TestClient would re-encode them as UTF-8)."""
    head = api.get("/api/v1/blocks", params={"limit": 1}).json()["items"][0]["height"]

    async def get(path: str, last_event_id: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://explorer") as c:
            return await c.get(path, headers={"Last-Event-ID": last_event_id})

    for path, first in ((f"/live/blocks?after={head - 1}", f"event: block\nid: {head}\n"),
                        ("/live/credit?after=0", "event: credit\nid: ")):
        r = asyncio.run(get(path, b"\xb2"))
        assert (b"Last-Event-ID", b"\xb2") in r.request.headers.raw
        assert r.status_code == 200 and first in r.text, r.text[:300]  # resumed after ``after``, as for "junk"
