"""An auditor's walk through the explorer pages in headless chromium, against a real devnet and its
explorer (``chainshare explorer up``): search a transaction from the home page and see it verified
in the browser; the same pages over a tampered explorer database say loudly which step failed;
a dataset's history from a grant to its delivery; CSV exports; 404s and malformed searches; pages
without JavaScript; the live home page. Screenshots go to test-results/explorer-pages/."""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserkit import SHOTS, Browser
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from explorerkit import anchor, calldata, propose
from netkit import Devnet, DevnetPool, cli_command, cli_json, run_cli, wait_until
from test_sharing_cli import OWNER_FULL_ACCESS, configure_data_plane

from chainshare import codec
from chainshare.client import NodeClient, transact
from chainshare.crypto import bls
from chainshare.execution.contracts.addresses import NOTARY
from chainshare.execution.contracts.membership import compute_validator_set_hash
from chainshare.ledger.merkle import InclusionProof, verify_inclusion_proof
from chainshare.ledger.quorum import aggregate_qc, verify_qc, vote_message
from chainshare.ledger.types import Header, QuorumCertificate

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("explorer-pages")]

HASH0 = "0x" + "00" * 32


def cli(net: Devnet, *args: Any) -> Any:
    proc = run_cli(*args, "--devnet", net.dir, "--as", "agency1", "--json", timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr: {proc.stderr}"
    return cli_json(proc)


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Devnet:
    """A one-node devnet with its data plane (vault, TLS identity), so a dataset can be delivered."""
    return devnet_pool.launch("pages", prepare=configure_data_plane, timeout=90)


@pytest.fixture(scope="module")
def activity(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dataset published, requested, granted and delivered; a burst of anchors (several per block); a proposal."""
    work = tmp_path_factory.mktemp("pages-data")
    data = work / "people.csv"
    data.write_text("district,age\n" + "".join(f"{('north', 'south')[i % 2]},{20 + i % 30}\n" for i in range(40)))
    ds = int(cli(net, "dataset", "publish", data, "--title", "Road traffic counts", "--policy", OWNER_FULL_ACCESS)
             ["dataset_id"])
    grant = cli(net, "access", "request", ds, "--action", "read", "--purpose", "quarterly audit")
    assert grant["allowed"] and grant["grant_id"]
    fetched = cli(net, "dataset", "fetch", ds, "--out", work / "fetched.csv")
    client = NodeClient(net.rpc_url)
    # a burst sent without waiting: the block that takes them has several transactions (a real Merkle path)
    sender = transact(client, net.key_bytes, NOTARY, calldata("anchor(bytes32 digest)", b"\x01" * 32))
    burst = []
    for i in range(6):
        burst.append(_send_anchor(client, net, bytes([i + 2]) * 32))
    receipts = [client.wait_for_receipt(h, 60) for h in burst]
    prop = propose(client, net.key_bytes, "anchor the quarterly report")
    last = anchor(client, net.key_bytes)
    by_block: dict[int, list[str]] = {}
    for r in receipts:
        by_block.setdefault(int(r["blockNumber"], 16), []).append(r["transactionHash"])
    fullest = max(by_block.values(), key=len)
    return {"dataset": ds, "grant_id": grant["grant_id"], "fetched": fetched, "first_anchor": sender,
            "multi_tx": fullest[-1], "block_txs": len(fullest), "other_tx": prop["transactionHash"],
            "last_height": int(last["blockNumber"], 16), "last_tx": last["transactionHash"]}


def _send_anchor(client: NodeClient, net: Devnet, digest: bytes) -> str:
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    sender = "0x" + address_of_private_key(net.key_bytes).hex()
    nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
    raw = sign_eip1559(net.key_bytes, chain_id=net.chain_id, nonce=nonce, to=NOTARY,
                       data=calldata("anchor(bytes32 digest)", digest), gas=200_000)
    return str(client.rpc("eth_sendRawTransaction", "0x" + raw.hex()))


@pytest.fixture(scope="module")
def explorer(net: Devnet, activity: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("pages-explorer") / "explorer.db"
    proc = run_cli("explorer", "up", "--devnet", net.dir, "--db", str(db), "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    url = cli_json(proc)["urls"][0]
    try:
        wait_until(lambda: httpx.get(url + "/api/v1/status", timeout=30).json()["indexed_height"]
                   >= activity["last_height"], 120, "the explorer indexes the activity")
        yield url
    finally:
        run_cli("explorer", "down", "--devnet", net.dir, "--json", timeout=60)


@contextmanager
def _serve_altered_copy(explorer: str, dst: Path, alter: Callable[[sqlite3.Connection], None]) -> Iterator[str]:
    """A copy of the explorer database changed by ``alter``, served by `chainshare explorer serve`."""
    src = Path(httpx.get(explorer + "/api/v1/status", timeout=30).json()["database"]["url"].split("///", 1)[1])
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    with sqlite3.connect(dst) as c:
        alter(c)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*cli_command(), "explorer", "serve", "--db", f"sqlite:///{dst}", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 90, "the altered explorer serves")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def tampered(net: Devnet, explorer: str, activity: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A copy of the explorer database with one transaction's bytes altered and another block's QC
    signature swapped for a valid signature of another block, served by `chainshare explorer serve`."""
    bad_tx, bad_qc_tx = activity["multi_tx"], activity["other_tx"]

    def alter(c: sqlite3.Connection) -> None:
        raw = c.execute("SELECT raw, height FROM txs WHERE hash = ?", (bytes.fromhex(bad_tx[2:]),)).fetchone()
        altered = raw[0][:-1] + bytes([raw[0][-1] ^ 1])
        c.execute("UPDATE txs SET raw = ? WHERE hash = ?", (altered, bytes.fromhex(bad_tx[2:])))
        h = c.execute("SELECT height FROM txs WHERE hash = ?", (bytes.fromhex(bad_qc_tx[2:]),)).fetchone()[0]
        assert h != raw[1]
        qc = QuorumCertificate.from_list(codec.decode(c.execute("SELECT qc FROM blocks WHERE height = ?",
                                                                (h,)).fetchone()[0]))
        other = QuorumCertificate.from_list(codec.decode(c.execute("SELECT qc FROM blocks WHERE height = ?",
                                                                   (h - 1,)).fetchone()[0]))
        forged = QuorumCertificate(qc.block_hash, qc.height, qc.round, qc.signers, other.signature)
        c.execute("UPDATE blocks SET qc = ? WHERE height = ?", (forged.encode(), h))

    with _serve_altered_copy(explorer, tmp_path_factory.mktemp("pages-tampered") / "tampered.db", alter) as url:
        yield {"url": url, "bad_tx": bad_tx, "bad_qc_tx": bad_qc_tx}


@pytest.fixture(scope="module")
def forged_keys(net: Devnet, explorer: str, activity: dict[str, Any],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A copy of the explorer database where an attacker replaced the validator's BLS key (with a valid
    proof of possession of the attacker's key) AND the QC of a block by one the attacker key signed:
    consistent with each other, so the QC verifies against the served keys."""
    tx = activity["multi_tx"]
    sk = bls.generate_secret_key(b"attacker".ljust(32, b"\0"))
    pk, pop = bls.public_key(sk), bls.prove_possession(sk)
    out: dict[str, Any] = {"tx": tx}

    def alter(c: sqlite3.Connection) -> None:
        h = c.execute("SELECT height FROM txs WHERE hash = ?", (bytes.fromhex(tx[2:]),)).fetchone()[0]
        block_hash, epoch, raw_qc = c.execute("SELECT hash, epoch, qc FROM blocks WHERE height = ?", (h,)).fetchone()
        qc = QuorumCertificate.from_list(codec.decode(raw_qc))
        msg = vote_message(net.chain_id, bytes(block_hash), qc.height, qc.round, epoch)
        forged = aggregate_qc(bytes(block_hash), qc.height, qc.round, {0: bls.sign(sk, msg)}, 1)
        verify_qc(forged, [{"bls_public_key": pk}], net.chain_id, epoch)  # a forgery the BLS step alone accepts
        c.execute("UPDATE blocks SET qc = ? WHERE height = ?", (forged.encode(), h))
        assert c.execute("UPDATE validator_sets SET bls_public_key = ?, bls_pop = ? WHERE epoch = ? AND position = 0",
                         (pk, pop, epoch)).rowcount == 1
        out["key"] = "0x" + pk.hex()

    with _serve_altered_copy(explorer, tmp_path_factory.mktemp("pages-forged-keys") / "forged.db", alter) as url:
        yield {**out, "url": url}


def _record_timing(name: str, value: float) -> None:
    path = SHOTS / "timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(name, []).append(round(value, 1))
    path.write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------------------- scenarios


def test_search_a_transaction_from_home_and_see_it_verified_in_the_browser(
        browser: Browser, explorer: str, activity: dict[str, Any], net: Devnet) -> None:
    tx = activity["multi_tx"]
    res = browser.run([
        {"do": "goto", "url": explorer + "/"},
        browser.shot("home"),
        {"do": "fill", "sel": "#q", "value": tx},
        {"do": "press", "sel": "#q", "key": "Enter", "navigates": True},
        {"do": "verify"},
        browser.shot("tx-verified"),
        {"do": "download", "sel": "a[href$='proof.json']"},
        {"do": "viewport", "width": 390, "height": 844},
        browser.shot("tx-verified-phone"),
    ])
    assert res[0]["status"] == 200
    assert res[3]["url"] == f"{explorer}/tx/{tx}"
    verdict = res[4]
    assert verdict["state"] == "verified", verdict
    steps = verdict["steps"]
    assert len(steps) == 10 and all(s["ok"] for s in steps), steps
    assert f"of {activity['block_txs']}" in steps[1]["detail"]  # the path of a block of several transactions
    assert "Validator set matches the chain" in steps[4]["step"] and "1 validators hash to 0x" in steps[4]["detail"]
    genesis = httpx.get(explorer + "/api/v1/status", timeout=30).json()["genesis_hash"]
    assert "genesis set" in steps[5]["step"] and genesis in steps[5]["detail"] and genesis == net.info["genesis_hash"]
    assert "proofs of possession" in steps[6]["step"] and steps[6]["detail"] == "1 of 1"
    assert "1 of 1 (quorum 1): node1" in steps[8]["detail"]
    _record_timing("in_browser_verification_ms", verdict["ms"])

    # the downloaded proof checks offline with chainshare's own verification code
    proof = json.loads(res[6]["text"])
    header = Header.from_list(codec.decode(bytes.fromhex(proof["header"][2:])))
    assert "0x" + header.hash.hex() == proof["block_hash"]
    p = proof["transaction"]["proof"]
    ip = InclusionProof(p["index"], p["size"], tuple(bytes.fromhex(x[2:]) for x in p["path"]))
    assert p["size"] == activity["block_txs"] and p["path"]
    assert verify_inclusion_proof(bytes.fromhex(proof["transaction"]["leaf"][2:]), ip, header.tx_root)
    parent = Header.from_list(codec.decode(bytes.fromhex(proof["parent_header"][2:])))
    assert parent.hash == header.parent_hash
    assert compute_validator_set_hash([{k: bytes.fromhex(v[k][2:]) if v[k].startswith("0x") else v[k]
                                        for k in ("name", "agency", "address", "bls_public_key", "bls_pop")}
                                       for v in proof["validators"]]) == parent.validator_set_hash
    qc = QuorumCertificate.from_list(codec.decode(bytes.fromhex(proof["qc"][2:])))
    vals = [{"bls_public_key": bytes.fromhex(v["bls_public_key"][2:])} for v in proof["validators"]]
    verify_qc(qc, vals, net.chain_id, proof["epoch"])


def test_a_tampered_explorer_database_fails_loudly_at_the_step_that_broke(
        browser: Browser, tampered: dict[str, Any]) -> None:
    url = tampered["url"]
    res = browser.run([
        {"do": "goto", "url": f"{url}/tx/{tampered['bad_tx']}"},
        {"do": "verify"},
        browser.shot("tx-tampered-transaction"),
        {"do": "goto", "url": f"{url}/tx/{tampered['bad_qc_tx']}"},
        {"do": "verify"},
        browser.shot("tx-tampered-qc"),
    ])
    for verdict, failing in ((res[1], "Transaction in the block"), (res[4], "BLS aggregate signature")):
        assert verdict["state"] == "failed", verdict
        assert "NOT VERIFIED" in verdict["text"] and failing in verdict["text"]
        assert verdict["background"] == "rgb(176, 0, 32)"  # the red of a failure
        assert not verdict["steps"][-1]["ok"] and failing in verdict["steps"][-1]["step"]
        assert all(s["ok"] for s in verdict["steps"][:-1])
    assert "does not verify" in res[4]["steps"][-1]["detail"]


def test_validator_keys_and_a_qc_forged_together_fail_at_the_validator_set_step(
        browser: Browser, forged_keys: dict[str, Any]) -> None:
    res = browser.run([
        {"do": "goto", "url": f"{forged_keys['url']}/tx/{forged_keys['tx']}"},
        {"do": "verify"},
        browser.shot("tx-forged-validator-keys"),
        {"do": "goto", "url": f"{forged_keys['url']}/validators"},
        {"do": "text", "sel": "main"},
    ])
    verdict = res[1]
    assert verdict["state"] == "failed", verdict
    assert verdict["background"] == "rgb(176, 0, 32)"
    assert "NOT VERIFIED" in verdict["text"] and "Validator set matches the chain" in verdict["text"]
    last = verdict["steps"][-1]
    assert not last["ok"] and "Validator set matches the chain" in last["step"], last
    assert "these are not the chain's keys" in last["detail"]
    assert [s["ok"] for s in verdict["steps"]] == [True] * 4 + [False]  # header and Merkle paths still pass
    assert forged_keys["key"][:10] in res[4]  # the page does serve the forged key


def test_follow_a_dataset_from_its_grant_to_the_delivery(browser: Browser, explorer: str,
                                                         activity: dict[str, Any]) -> None:
    ds = activity["dataset"]
    res = browser.run([
        {"do": "goto", "url": f"{explorer}/search?q=Road%20traffic"},
        browser.shot("dataset"),
        {"do": "texts", "sel": "tr[class^=hist-] td:nth-child(3)"},
        {"do": "text", "sel": "tr.hist-DeliveryRecorded"},
        {"do": "click", "sel": "tr.hist-GrantIssued td:last-child a", "navigates": True},
        {"do": "verify"},
        {"do": "text", "sel": "main"},
    ])
    assert res[0]["url"] == f"{explorer}/dataset/{ds}"
    kinds = res[2]
    assert kinds.index("DatasetRegistered") < kinds.index("AccessRequested") < kinds.index("GrantIssued") \
        < kinds.index("DeliveryRecorded"), kinds
    delivery = res[3]
    fetched = activity["fetched"]
    assert fetched["delivered_hash"] in delivery and "agency1" in delivery
    assert "/tx/" in res[4]["url"] and res[5]["state"] == "verified"
    assert "AccessControl.request" in res[6] and "quarterly audit" in res[6]


def test_export_a_csv_and_check_its_rows_and_get_search_suggestions(browser: Browser, explorer: str, activity: dict[str, Any]) -> None:
    res = browser.run([{"do": "goto", "url": explorer + "/txs"}, {"do": "download", "sel": "a.csv"},
                       # search suggestions as you type (a misspelt agency name)
                       {"do": "fill", "sel": "#q", "value": "agnecy1"},
                       {"do": "wait", "sel": "#q-suggestions option"},
                       {"do": "eval", "js": "[...document.querySelectorAll('#q-suggestions option')]"
                                            ".map(o => o.value + ' ' + o.label)"}])
    assert "agency1 agency" in res[4]
    rows = list(csv.DictReader(io.StringIO(res[1]["text"])))
    api = httpx.get(explorer + "/api/v1/txs", params={"limit": 1000}, timeout=30).json()["items"]
    assert [r["hash"] for r in rows] == [t["hash"] for t in api]
    assert activity["last_tx"] in {r["hash"] for r in rows}
    row = next(r for r in rows if r["hash"] == activity["multi_tx"])
    assert (row["contract"], row["method"], row["status"], row["agency"]) == ("Notary", "anchor", "1", "agency1")


def test_unknown_hash_malformed_search_and_unknown_page_are_friendly(browser: Browser, explorer: str) -> None:
    res = browser.run([
        {"do": "goto", "url": f"{explorer}/tx/{HASH0}"}, {"do": "text", "sel": "main"}, browser.shot("404"),
        {"do": "goto", "url": f"{explorer}/search?q=0x12zz"}, {"do": "text", "sel": "main"},
        {"do": "goto", "url": f"{explorer}/search?q=0x1234"}, {"do": "text", "sel": "main"},
        {"do": "goto", "url": f"{explorer}/no/such/page"}, {"do": "text", "sel": "main"},
        {"do": "goto", "url": f"{explorer}/block/notablock"}, {"do": "text", "sel": "main"},
        {"do": "goto", "url": f"{explorer}/txs?before=abc"}, {"do": "text", "sel": "main"},
    ], http_errors=True)
    assert res[0]["status"] == 404 and "Not found" in res[1] and f"no indexed transaction {HASH0}" in res[1]
    assert res[3]["status"] == 400 and "not hex digits" in res[4]
    assert res[5]["status"] == 400 and "has 4 hex digits: a block or transaction hash has 64" in res[6]
    assert res[7]["status"] == 404 and "Page not found" in res[8]
    assert res[9]["status"] == 400 and "neither a block number nor" in res[10]
    assert res[11]["status"] == 400 and "page cursor" in res[12]
    for text in res[1::2][:6]:
        assert "Traceback" not in str(text)


def test_pages_work_without_javascript(browser: Browser, explorer: str, activity: dict[str, Any],
                                      net: Devnet) -> None:
    tx = activity["multi_tx"]
    pages = ["/", f"/block/{activity['last_height']}", "/agency/agency1", f"/dataset/{activity['dataset']}",
             "/validators", "/governance", "/governance/1", "/evidence", "/datasets", "/agencies", "/blocks",
             "/txs", f"/address/{net.address.lower()}", f"/tx/{tx}"]
    actions: list[dict[str, Any]] = []
    for p in pages:
        actions += [{"do": "goto", "url": explorer + p}, {"do": "text", "sel": "main"}]
        name = "-".join(p.strip("/").split("/")[:2])[:40] or "home"
        actions.append(browser.shot(f"nojs-{name}"))
    actions += [{"do": "goto", "url": f"{explorer}/search?q=agnecy1"}]
    res = browser.run(actions, js=False)
    for i, p in enumerate(pages):
        assert res[3 * i]["status"] == 200, p
        assert "Traceback" not in res[3 * i + 1]
    home, block, agency, dataset = (res[3 * i + 1] for i in range(4))
    assert "Latest blocks" in home and "Validators of epoch 0" in home and "node1" in home
    assert "Quorum certificate" in block and "Missing signers: none" in block
    assert "Road traffic counts" in agency and "GrantIssued" in agency
    cert = x509.load_pem_x509_certificate((Path(net.dir) / "agencies" / "agency1" / "agency.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((Path(net.dir) / "ca" / "ca.crt").read_bytes())
    assert "Certificates on chain" in agency and "0x" + cert.fingerprint(hashes.SHA256()).hex() in agency
    assert "0x" + ca.fingerprint(hashes.SHA256()).hex() in agency and "O=agency1" in agency
    assert "DeliveryRecorded" in dataset
    assert "In-browser verification needs JavaScript" in res[3 * (len(pages) - 1) + 1]
    assert res[-1]["url"] == f"{explorer}/agency/agency1"  # a misspelt agency finds its page


def test_the_live_home_page_shows_a_newly_finalized_block(browser: Browser, explorer: str, net: Devnet,
                                                          tmp_path: Path) -> None:
    signal = tmp_path / "tx-hash.txt"
    proc = browser.start([
        {"do": "goto", "url": explorer + "/"},
        {"do": "wait", "sel": "#live-state:not([hidden])"},
        {"do": "eval", "js": "Number(document.querySelector('#latest-blocks tbody tr').dataset.height)"},
        {"do": "mark"},
        {"do": "waitFileText", "path": str(signal), "sel": "#latest-txs"},
        {"do": "eval", "js": "Number(document.querySelector('#latest-blocks tbody tr').dataset.height)"},
        browser.shot("home-live"),
    ])
    seen = Browser.read_until_mark(proc)
    before = seen[2]["result"]
    started = time.monotonic()
    receipt = anchor(NodeClient(net.rpc_url), net.key_bytes)
    signal.write_text(receipt["transactionHash"][:10])
    res = Browser.finish(proc, seen)
    assert res[4] == receipt["transactionHash"][:10]
    assert res[5] >= int(receipt["blockNumber"], 16) > before
    _record_timing("live_update_after_receipt_s", time.monotonic() - started)
