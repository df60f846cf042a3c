"""An auditor's walk through the explorer's credit pages in headless chromium, on a real one-node devnet and its
explorer (``chainshare explorer up``): a record published, objected to and corrected shows its history and
lifecycle, and its provenance (every step's block proof, the event in its receipt, the version hash chain) is
verified in the browser; over a copy of the database with one record version altered, the panel fails in red
at the step that broke; the lists and the subject page update live when a new credit event is indexed.
Screenshots go to test-results/explorer-pages/."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserkit import Browser
from netkit import DevnetPool, cli_command, cli_json, run_cli, wait_until
from test_credit_network import ORG, PENALTY, RULE, Net, publish_args

from chainshare.bench import free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("credit-pages")]


@pytest.fixture(scope="module")
def credit(devnet_pool: DevnetPool) -> dict[str, Any]:
    """One record published, objected to, reviewed and corrected (two versions, five lifecycle events)."""
    net = Net(devnet_pool.launch("creditpages", nodes=1))
    for fn, *args in (("setCategory", PENALTY, "Administrative penalty", True), ("setIssuer", PENALTY, "agency1", True),
                      ("installScoringRule", json.dumps(RULE))):
        net.govern(fn, *args, voters=("agency1",))
    rid = cli_json(net.cli(*publish_args(net, "agency1")))["record"]
    net.cli("object", rid, "--reason", "the amount is wrong", *net.as_agency("agency1"), "--json")
    net.cli("resolve", rid, "--review", *net.as_agency("agency1"), "--json")
    out = cli_json(net.cli("correct", rid, "--severity", "2", "--summary", "Fine reduced on objection",
                           "--reason", "objection upheld in part", *net.as_agency("agency1"), "--json"))
    return {"net": net, "record": rid, "height": out["block"]}


@pytest.fixture(scope="module")
def explorer(credit: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    net = credit["net"]
    db = tmp_path_factory.mktemp("credit-explorer") / "explorer.db"
    proc = run_cli("explorer", "up", "--devnet", net.devnet.dir, "--db", str(db), "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    url = cli_json(proc)["urls"][0]
    try:
        wait_until(lambda: httpx.get(url + "/api/v1/status", timeout=30).json()["indexed_height"]
                   >= credit["height"], 120, "the explorer indexes the credit record")
        yield {"url": url, "db": db}
    finally:
        run_cli("explorer", "down", "--devnet", net.devnet.dir, "--json", timeout=60)


@pytest.fixture(scope="module")
def tampered(credit: dict[str, Any], explorer: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A copy of the explorer database whose record version 2 summary was rewritten, served on its own."""
    dst = tmp_path_factory.mktemp("credit-tampered") / "tampered.db"
    with sqlite3.connect(explorer["db"]) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    with sqlite3.connect(dst) as c:
        seq, data = c.execute("SELECT seq, data FROM credit_events WHERE name = 'RecordCorrected'").fetchone()
        assert b"Fine reduced on objection" in data
        c.execute("UPDATE credit_events SET data = ? WHERE seq = ?",
                  (data.replace(b"Fine reduced on objection", b"Fine waived on objection!"), seq))
    port = free_port_block(1)
    proc = subprocess.Popen([*cli_command(), "explorer", "serve", "--db", f"sqlite:///{dst}", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        wait_until(up, 90, "the tampered explorer serves")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Browser:
    return Browser()


def test_record_page_provenance_is_verified_in_the_browser(browser: Browser, credit: dict[str, Any],
                                                           explorer: dict[str, Any]) -> None:
    url, rid = explorer["url"], credit["record"]
    res = browser.run([
        {"do": "goto", "url": f"{url}/search?q={ORG}"},
        browser.shot("credit-subject"),
        {"do": "texts", "sel": "#current-records tbody tr td:nth-child(8)"},
        {"do": "goto", "url": f"{url}/credit/records/{rid}"},
        {"do": "verify"},
        browser.shot("credit-record-verified"),
        {"do": "texts", "sel": "#timeline li strong"},
    ])
    assert res[0]["url"] == f"{url}/credit/subjects/{ORG}"
    assert res[2] == ["Fine reduced on objection"]
    verdict = res[4]
    assert verdict["state"] == "verified", verdict
    steps = verdict["steps"]
    # five lifecycle steps of 10 block checks (the transaction page's, the set proven from genesis among them)
    # and the event check each, plus the two version links
    assert len(steps) == 5 * 11 + 2 and all(s["ok"] for s in steps), [s for s in steps if not s["ok"]]
    assert len([s for s in steps if s["step"].endswith("Validator set is the genesis set (block 0 hashes to the "
                                                       "genesis hash shown)")]) == 5
    links = [s["step"] for s in steps if "follows version" in s["step"]]
    assert len(links) == 2
    assert "Step 1 (RecordPublished" in links[0] and links[0].endswith("version 1 follows version 0 by hash")
    assert "Step 4 (RecordCorrected" in links[1] and links[1].endswith("version 2 follows version 1 by hash")
    assert res[6] == ["RecordPublished", "ObjectionFiled", "ObjectionUnderReview", "RecordCorrected",
                      "ObjectionResolved"]


def test_an_altered_record_version_fails_in_red(browser: Browser, credit: dict[str, Any], tampered: str) -> None:
    res = browser.run([
        {"do": "goto", "url": f"{tampered}/credit/records/{credit['record']}"},
        {"do": "verify"},
        browser.shot("credit-record-tampered"),
    ])
    verdict = res[1]
    assert verdict["state"] == "failed" and "NOT VERIFIED" in verdict["text"], verdict
    assert verdict["background"] == "rgb(176, 0, 32)"
    last = verdict["steps"][-1]
    assert not last["ok"] and "Step 4 (RecordCorrected" in last["step"]
    assert "the explorer's copy was altered" in last["detail"]
    assert all(s["ok"] for s in verdict["steps"][:-1])


def test_the_black_list_updates_live_when_a_record_is_published(browser: Browser, credit: dict[str, Any],
                                                                explorer: dict[str, Any], tmp_path: Path) -> None:
    net, url = credit["net"], explorer["url"]
    signal = tmp_path / "record.txt"
    proc = browser.start([
        {"do": "goto", "url": f"{url}/credit/lists/black"},
        {"do": "wait", "sel": "#credit-live:not([hidden])"},
        {"do": "texts", "sel": "tr[data-record]"},
        {"do": "mark"},
        {"do": "waitFileText", "path": str(signal), "sel": "table.credit-records"},
        browser.shot("credit-black-list-live"),
        {"do": "texts", "sel": "tr[data-record] td:first-child a"},
    ])
    seen = Browser.read_until_mark(proc)
    assert len(seen[2]["result"]) == 1
    new = cli_json(net.cli(*publish_args(net, "agency1", summary="Second fine")))["record"]
    signal.write_text(f"#{new}")
    res = Browser.finish(proc, seen)
    assert f"#{new}" in res[6] and f"#{credit['record']}" in res[6]
    csv_text = httpx.get(f"{url}/api/v1/credit/lists/black?format=csv", timeout=30).text
    assert csv_text.splitlines()[0].startswith("id,subject,category") and len(csv_text.splitlines()) == 3
