"""Credit records on a real 4-node devnet, driven the way users drive it: Governance configures the registry
(web3.py proposals and votes of the agencies), agencies publish and manage records with `chainshare credit`,
readers use the REST API and the CLI (over the node, and offline over a stopped node's data directory).

Scenario (one devnet for the module; the tests run in order and build on each other):
two issuers publish for the same organisation; an unauthorised agency's publish reverts with the reason;
objection -> review -> correction, after which the subject page shows version 2 with its history and the
provenance verifies against the genesis; repair after the minimum period; expiry by block time; score
recomputed by the CLI equals the node's; watch resumes from its cursor file without gaps or duplicates."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netkit import (
    Devnet,
    DevnetPool,
    cli_command,
    cli_json,
    load_artifact,
    run_cli,
    wait_agencies_synced,
    wait_until,
)
from test_explorer import pg_url  # noqa: F401 (a fixture)
from web3.logs import DISCARD

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("credit")]

ORG = "91110000600037341L"
ORG_BAD = "91110000600037341X"
PENALTY, RED = "administrative_penalty", "red_list"
RULE = {"name": "integration", "base": 1000, "min": 0, "max": 2000,
        "weights": {PENALTY: {"1": -20, "2": -50, "3": -100}, RED: {"1": 40}}, "decay_days": {PENALTY: 365}}
EVIDENCE = "0x" + "ab" * 32


class Net:
    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self.w3 = devnet.web3()
        self.gov = self.w3.eth.contract(address=load_artifact("Governance")["address"],
                                        abi=load_artifact("Governance")["abi"])
        self.cr = self.w3.eth.contract(address=load_artifact("CreditRegistry")["address"],
                                       abi=load_artifact("CreditRegistry")["abi"])
        from eth_account import Account

        self.accounts = {a["agency"]: Account.from_key(a["private_key"]) for a in devnet.info["accounts"]}
        self.state: dict[str, Any] = {}

    def send(self, fn: Any, agency: str) -> str:
        acct = self.accounts[agency]
        tx = fn.build_transaction({"from": acct.address, "chainId": self.w3.eth.chain_id, "gas": 3_000_000,
                                   "nonce": self.w3.eth.get_transaction_count(acct.address, "pending")})
        return self.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)

    def wait(self, tx_hash: Any) -> Any:
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.1)

    def govern(self, fn_name: str, *args: Any, voters: tuple[str, ...] = ("agency1", "agency2", "agency3")) -> None:
        """Pass CreditRegistry.fn(*args) through Governance: agency1 proposes, ``voters`` vote (3 of 4)."""
        inner = self.cr.encode_abi(fn_name, args=list(args))
        self.govern_call(self.cr.address, bytes.fromhex(inner[2:]), f"credit: {fn_name}{args}", voters=voters)

    def govern_call(self, target: str, call: bytes, description: str,
                    voters: tuple[str, ...] = ("agency1", "agency2", "agency3"), check: bool = True) -> Any:
        """Pass ``call`` to ``target`` through Governance (agency1 proposes, agencies 1-3 vote); the receipt of
        the execution (with ``check``: a success)."""
        receipt = self.wait(self.send(self.gov.functions.propose(target, call, description), "agency1"))
        (created,) = self.gov.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
        pid = created["args"]["id"]
        for v in [self.send(self.gov.functions.vote(pid, True), a) for a in voters]:
            assert self.wait(v)["status"] == 1
        executed = self.wait(self.send(self.gov.functions.execute(pid), "agency1"))
        assert not check or executed["status"] == 1
        return executed

    def api(self, path: str, node: int = 0, **params: Any) -> Any:
        url = self.devnet.info["nodes"][node]["api"]
        r = self.devnet.http.get(url + path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def cli(self, *args: Any, ok: bool = True, timeout: float = 180) -> Any:
        proc = run_cli("credit", *args, timeout=timeout)
        if ok:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        self.sync_after(proc)
        return proc

    def sync_after(self, proc: Any) -> None:
        """A command acting through one agency's node answers once ITS node has the block; wait until every
        node has it before reading from another (read-your-writes across nodes)."""
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        try:
            block = json.loads(lines[-1]).get("block") if lines else None
        except ValueError:
            return
        if isinstance(block, int):
            wait_until(lambda: all(self.api("/status", node=i)["head"]["height"] >= block
                                   for i in range(len(self.devnet.info["nodes"]))
                                   if self.devnet.info["nodes"][i].get("pid") and _alive(self.devnet.info["nodes"][i])),
                       60, f"every node at block {block}")

    def as_agency(self, agency: str) -> list[Any]:
        return ["--devnet", self.devnet.dir, "--as", agency]

    def chain_time(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Net:
    n = Net(devnet_pool.launch("credit4", nodes=4))
    n.govern("setCategory", PENALTY, "Administrative penalty", True)
    n.govern("setCategory", RED, "Red list (commendation)", True)
    n.govern("setIssuer", PENALTY, "agency1", True)
    n.govern("setIssuer", PENALTY, "agency2", True)
    n.govern("setIssuer", RED, "agency2", True)
    n.govern("installScoringRule", json.dumps(RULE))
    return n


def _alive(node: dict[str, Any]) -> bool:
    from chainshare.devnet import is_running

    return bool(is_running(node["pid"]))


def publish_args(net: Net, agency: str, *, category: str = PENALTY, polarity: str = "negative", severity: int = 3,
                 summary: str = "Fined for false advertising", min_period: str = "180d",
                 max_period: str = "1095d", subject: str = ORG) -> list[Any]:
    return ["publish", *net.as_agency(agency), "--subject", subject, "--category", category,
            "--polarity", polarity, "--severity", severity, "--document", f"DOC-{agency}-{time.monotonic_ns()}",
            "--authority", f"{agency} bureau", "--legal-basis", "Regulation art. 1", "--summary", summary,
            "--min-period", min_period, "--max-period", max_period, "--evidence-hash", EVIDENCE, "--json"]


def test_config_is_served(net: Net) -> None:
    config = net.api("/credit/config")
    assert config["categories"][PENALTY]["issuers"] == ["agency1", "agency2"]
    assert config["categories"][RED]["issuers"] == ["agency2"]
    assert [r["version"] for r in config["scoring_rules"]] == [1]


def test_governance_cli_configures_the_registry(net: Net, tmp_path: Path) -> None:
    proposed = cli_json(net.cli("govern", "set-objection-deadline", "30d", *net.as_agency("agency1"), "--json"))
    pid = proposed["proposal"]
    early = net.cli("govern", "execute", pid, *net.as_agency("agency1"), "--json", ok=False)
    assert early.returncode == 1 and "needs 3" in cli_json(early)["reason"]
    for agency in ("agency1", "agency2", "agency3"):
        net.cli("govern", "vote", pid, *net.as_agency(agency), "--json")
    net.cli("govern", "execute", pid, *net.as_agency("agency4"), "--json")
    assert net.api("/credit/config")["objection_deadline_seconds"] == 30 * 86400
    bad_rule = tmp_path / "rule.json"
    bad_rule.write_text(json.dumps({"name": "x", "base": 5, "min": 0, "max": 1, "weights": {}}))
    refused = net.cli("govern", "install-rule", bad_rule, *net.as_agency("agency1"), ok=False)
    assert refused.returncode == 2 and "min <= base <= max" in refused.stderr


@pytest.mark.parametrize("path", [
    f"/credit/subjects/{ORG_BAD}", "/credit/subjects/%00", "/credit/subjects/" + "9" * 100, "/credit/subjects/P-zz",
    "/credit/subjects/%ff%fe", "/credit/subjects/ 91110000600037341L", f"/credit/subjects/{ORG}?at=-1",
    f"/credit/subjects/{ORG}?at=99999999999", f"/credit/subjects/{ORG}/score?rule_version=0",
    f"/credit/subjects/{ORG}/score?rule_version=99", "/credit/records/0", "/credit/records/abc",
    "/credit/records/99999999999999999999999", "/credit/records/999999", "/credit/records/999999/provenance",
    "/credit/records/0/details", "/credit/records/999999/details", "/credit/records/abc/details",
    "/credit/events?after=abc", "/credit/events?after=1-2-3", "/credit/events?subject=bad",
    "/credit/events?limit=0", "/credit/events?category=" + "c" * 100,
])
def test_malformed_credit_requests_are_4xx_never_500(net: Net, path: str) -> None:
    r = net.devnet.http.get(net.devnet.info["nodes"][0]["api"] + path)
    assert r.status_code in (400, 404, 422), (path, r.status_code, r.text[:200])
    assert r.json()["error"]["message"]


def test_two_issuers_publish_for_one_organisation_and_an_outsider_reverts(net: Net) -> None:
    first = cli_json(net.cli(*publish_args(net, "agency1")))
    second = cli_json(net.cli(*publish_args(net, "agency2", category=RED, polarity="positive", severity=1,
                                            summary="Model taxpayer 2025")))
    assert first["status"] == second["status"] == "success"
    net.state["penalty"], net.state["red"] = first["record"], second["record"]
    refused = net.cli(*publish_args(net, "agency3"), ok=False)
    assert refused.returncode == 1
    out = cli_json(refused)
    assert out["status"] == "reverted"
    assert out["reason"] == "agency 'agency3' is not authorised by Governance to issue 'administrative_penalty' records"
    # A bad USCC is refused before anything is sent, naming the expected check character.
    bad = net.cli(*publish_args(net, "agency1", subject=ORG_BAD), ok=False)
    assert bad.returncode == 2 and "expected 'L'" in bad.stderr
    r = net.devnet.http.get(net.devnet.info["nodes"][1]["api"] + f"/credit/subjects/{ORG_BAD}")
    assert r.status_code == 400 and "expected 'L'" in r.json()["error"]["message"]
    # Every node serves both records (the same finalized chain).
    def both_everywhere() -> bool:
        return all({x["issuer"] for x in net.api(f"/credit/subjects/{ORG}", node=i)["records"]} == {"agency1", "agency2"}
                   for i in range(4))
    wait_until(both_everywhere, 60, "both records on every node")


def test_objection_review_correction_keeps_history(net: Net) -> None:
    rid = net.state["penalty"]
    assert cli_json(net.cli("object", rid, "--reason", "the amount is wrong", *net.as_agency("agency3"),
                            "--json"))["status"] == "success"
    not_issuer = net.cli("resolve", rid, "--review", *net.as_agency("agency2"), "--json", ok=False)
    assert not_issuer.returncode == 1 and "only accounts of agency 'agency1'" in cli_json(not_issuer)["reason"]
    net.cli("resolve", rid, "--review", *net.as_agency("agency1"), "--json")
    corrected = cli_json(net.cli("correct", rid, "--severity", "2", "--summary", "Fine reduced on objection",
                                 "--reason", "objection upheld in part", *net.as_agency("agency1"), "--json"))
    assert [e["event"] for e in corrected["events"]] == ["RecordCorrected", "ObjectionResolved"]
    page = net.api(f"/credit/subjects/{ORG}")
    current = next(r for r in page["records"] if r["id"] == rid)
    assert (current["version"], current["severity"], current["summary"], current["objection"]) == (
        2, 2, "Fine reduced on objection", "corrected")
    record = net.api(f"/credit/records/{rid}")
    assert [v["version"] for v in record["versions"]] == [1, 2]
    assert record["versions"][1]["previous_version_hash"] == record["versions"][0]["version_hash"]
    assert record["versions"][0]["summary"] == "Fined for false advertising"
    assert [e["event"] for e in record["timeline"]] == ["RecordPublished", "ObjectionFiled", "ObjectionUnderReview",
                                                        "RecordCorrected", "ObjectionResolved"]


def test_history_provenance_verifies_offline_with_the_genesis(net: Net, tmp_path: Path) -> None:
    rid = net.state["penalty"]
    bundle_file = tmp_path / "bundle.json"
    out = cli_json(net.cli("history", rid, "--devnet", net.devnet.dir, "--genesis", net.devnet.dir / "genesis.json",
                           "--out", bundle_file, "--json"))
    assert out["verified"] and out["issuer"] == "agency1" and out["versions"] == 2
    assert all(s["signers"] >= 3 for s in out["steps"])  # 3-of-4 QCs
    assert [s["event"] for s in out["steps"]][0] == "RecordPublished"
    assert cli_json(net.cli("verify", bundle_file, "--genesis", net.devnet.dir / "genesis.json", "--json"))["verified"]
    # Rewriting what the issuer published is caught offline.
    bundle = json.loads(bundle_file.read_text())
    bundle["steps"][0]["args"]["summary"] = "nothing happened"
    bundle_file.write_text(json.dumps(bundle))
    tampered = net.cli("verify", bundle_file, "--genesis", net.devnet.dir / "genesis.json", "--json", ok=False)
    assert tampered.returncode == 1 and "differs" in cli_json(tampered)["error"]


def test_repair_after_the_minimum_period(net: Net) -> None:
    rec = cli_json(net.cli(*publish_args(net, "agency2", severity=1, min_period="20s", summary="Late filing")))
    rid = rec["record"]
    earliest = net.api(f"/credit/records/{rid}")["effectiveFrom"] + 20
    # Asked early, the request is refused; what decides is the block time of the block that carries it.
    early = net.cli("repair", rid, "--reason", "filed since", *net.as_agency("agency4"), "--json", ok=False)
    early_out = cli_json(early)
    block_time = int(net.w3.eth.get_block(early_out["block"])["timestamp"])
    if block_time < earliest:
        assert early.returncode == 1 and early_out["reason"] == (
            f"repair may be requested from block time {earliest} (after the minimum display period)")
        wait_until(lambda: net.chain_time() >= earliest, 90, "block time past the minimum period")
        net.cli("repair", rid, "--reason", "filed since", *net.as_agency("agency4"), "--json")
    else:  # a very loaded machine: the block came after the period, so the request had to pass
        assert early.returncode == 0, early_out
    net.cli("repair", rid, "--approve", "--note", "verified", *net.as_agency("agency2"), "--json")
    record = net.api(f"/credit/records/{rid}")
    assert record["status"] == "repaired" and record["repair"] == "approved"
    assert rid not in {r["id"] for r in net.api(f"/credit/subjects/{ORG}")["records"] if r["status"] == "active"}
    net.state["repaired"] = rid


def test_expiry_by_block_time(net: Net) -> None:
    rec = cli_json(net.cli(*publish_args(net, "agency1", severity=1, min_period="1s", max_period="5s",
                                         summary="Short-lived")))
    rid = rec["record"]
    assert net.api(f"/credit/records/{rid}")["status"] == "active"
    wait_until(lambda: net.api(f"/credit/records/{rid}")["status"] == "expired", 90, "expiry by block time")
    out = cli_json(net.cli("expire", rid, *net.as_agency("agency3"), "--json"))
    assert [e["event"] for e in out["events"]] == ["RecordExpired"]
    assert net.api(f"/credit/records/{rid}")["timeline"][-1]["event"] == "RecordExpired"


def test_publish_a_csv_in_batches(net: Net, tmp_path: Path) -> None:
    org2 = "91350100M000100Y43"
    header = "subject,category,polarity,severity,document_number,authority,legal_basis,summary,max_period,evidence_hash\n"
    rows = [f"{org2},{RED},positive,1,RL-{i},Tax Bureau,Rule 7,Commendation {i},365d,{EVIDENCE}\n" for i in range(5)]
    good = tmp_path / "good.csv"
    good.write_text(header + "".join(rows))
    out = cli_json(net.cli("publish", "--csv", good, "--per-tx", "2", *net.as_agency("agency2"), "--json"))
    assert out["published"] == 5 and out["failed"] == 0 and len(set(out["records"])) == 5
    assert len(net.api(f"/credit/subjects/{org2}")["records"]) == 5
    bad = tmp_path / "bad.csv"
    bad.write_text(header + rows[0] + rows[1].replace(org2, "91350100M000100Y44"))
    refused = net.cli("publish", "--csv", bad, *net.as_agency("agency2"), "--json", ok=False)
    assert refused.returncode == 2 and "line 3" in refused.stderr and "expected '3'" in refused.stderr
    # A batch an issuer may not publish reverts whole, and every row of it is reported failed.
    denied = net.cli("publish", "--csv", good, *net.as_agency("agency1"), "--json", ok=False)
    assert denied.returncode == 1 and cli_json(denied)["failed"] == 5
    assert len(net.api(f"/credit/subjects/{org2}")["records"]) == 5


def test_a_large_csv_is_cut_under_the_transaction_size_limit_with_tight_gas(net: Net, tmp_path: Path) -> None:
    from chainshare.bench_credit import make_uscc

    header = "subject,category,polarity,severity,document_number,authority,legal_basis,summary,max_period,evidence_hash\n"
    legal = "Regulation on commendations article 7 paragraph 2. " * 36  # ~1.9 KB: 120 records are ~290 KB
    rows = [f"{make_uscc(7000 + i % 30)},{RED},positive,1,RL-L{i},Tax Bureau,{legal},Commendation {i},365d,{EVIDENCE}\n"
            for i in range(120)]
    big = tmp_path / "big.csv"
    big.write_text(header + "".join(rows))
    out = cli_json(net.cli("publish", "--csv", big, "--per-tx", "200", *net.as_agency("agency2"), "--json"))
    assert out["published"] == 120 and out["failed"] == 0, out["failures"][:1]
    assert len(net.api(f"/credit/subjects/{make_uscc(7000)}")["records"]) == 4


def test_score_from_the_cli_equals_the_node(net: Net) -> None:
    node_score = net.api(f"/credit/subjects/{ORG}/score")
    height = node_score["height"]
    # The penalty (v2, severity 2) counts with decay; the red-list record adds 40; repaired/expired do not count.
    counted = {c["record"] for c in node_score["contributions"]}
    assert counted == {net.state["penalty"], net.state["red"]}
    cli_score = cli_json(net.cli("score", ORG, "--at", height, "--devnet", net.devnet.dir, "--json"))
    assert cli_score == node_score
    assert net.api(f"/credit/subjects/{ORG}/score", at=height) == node_score
    net.state["score"] = node_score


def test_watch_resumes_without_gaps_or_duplicates(net: Net, tmp_path: Path) -> None:
    cursor_file = tmp_path / "cursor"
    common = ["watch", "--devnet", net.devnet.dir, "--category", PENALTY, "--cursor-file", cursor_file]
    everything = [json.loads(line) for line in net.cli("watch", "--devnet", net.devnet.dir, "--category", PENALTY,
                                                       "--from-height", 0, "--max-events", 9).stdout.splitlines()]
    assert len(everything) == 9
    first = net.cli(*common, "--from-height", 0, "--max-events", 4)
    second = net.cli(*common, "--max-events", 5)
    got = [json.loads(line) for line in (first.stdout + second.stdout).splitlines()]
    assert [e["cursor"] for e in got] == [e["cursor"] for e in everything]
    assert all(e["args"]["categoryKey"] == everything[0]["args"]["categoryKey"] for e in got)


def test_watch_delivers_a_new_record_as_it_finalizes(net: Net) -> None:
    proc = subprocess.Popen([*cli_command(), "credit", "watch", "--devnet", str(net.devnet.dir), "--subject", ORG,
                             "--max-events", "1", "--poll", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        time.sleep(3)  # let it start and take the head as its starting point
        rec = cli_json(net.cli(*publish_args(net, "agency2", category=RED, polarity="positive", severity=1,
                                             summary="Second commendation")))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["event"] == "RecordPublished" and event["args"]["id"] == rec["record"], err


class DroppingProxy:
    """A TCP relay in front of a node's port whose open connections the test can cut (a dropped websocket)."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[Any] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def drop_all(self) -> None:
        import socket

        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.drop_all()


def test_watch_over_the_websocket_survives_a_dropped_connection(net: Net) -> None:
    """The watch is woken by the websocket's finalized heads; the connection is cut mid-stream, the watch
    polls, reconnects, and still delivers every event exactly once, in chain order."""
    import threading
    from urllib.parse import urlparse

    from chainshare.client import HeadSubscription, NodeClient
    from chainshare.credit import query
    from chainshare.credit.events import RpcSource

    rpc = net.devnet.info["nodes"][0]["rpc"]
    proxy = DroppingProxy(urlparse(rpc).port or 0)
    got: list[Any] = []
    done = threading.Event()
    client = NodeClient(rpc)
    src = RpcSource(client)
    start = src.head_height() + 1
    heads = HeadSubscription(f"ws://127.0.0.1:{proxy.port}/", src.head_height, poll_s=0.1, retry_s=0.5)
    topics = query.watch_topics(PENALTY, None)
    transports: list[str] = []

    def next_head(scanned: int) -> int:
        head = heads.next_head(scanned)
        transports.append(heads.transport)
        return head

    thread = threading.Thread(target=lambda: query.watch(src, (start, -1), topics, got.append, stop=done.is_set,
                                                         next_head=next_head), daemon=True)
    thread.start()
    try:
        published = []
        for step in range(3):
            rec = cli_json(net.cli(*publish_args(net, "agency1", severity=1, summary=f"ws step {step}")))
            published.append(rec["record"])
            rid = rec["record"]
            wait_until(lambda rid=rid: rid in {e.args["id"] for e in got}, 60, f"record {rid} delivered")
            if step == 0:
                assert heads.transport == "websocket" and heads.connects == 1
                proxy.drop_all()
        wait_until(lambda: heads.connects >= 2, 60, "the watch to reconnect its subscription")
        rec = cli_json(net.cli(*publish_args(net, "agency1", severity=1, summary="ws after reconnect")))
        published.append(rec["record"])
        wait_until(lambda: rec["record"] in {e.args["id"] for e in got}, 60, "the last record delivered")
    finally:
        done.set()
        thread.join(30)
        heads.close()
        proxy.close()
    assert "poll" in transports and transports[-1] == "websocket"
    everything = list(query.iter_new_events(src, (start, -1), topics, src.head_height()))
    client.close()
    assert [e.position for e in got] == [e.position for e in everything][:len(got)]
    assert len({e.position for e in got}) == len(got)
    assert [e.args["id"] for e in got if e.name == "RecordPublished"] == published


RIC = "11010519491231002X"  # a resident ID number (GB 11643); never to appear on chain in any encoding


def id_encodings(ric: str) -> list[bytes]:
    """The resident ID in every form we can think of: text, case, UTF-16, hex, base64, its number, and its
    unsalted hashes (the ID space is small enough to invert those)."""
    import base64
    import hashlib

    from eth_utils import keccak

    raw = ric.encode()
    forms = [raw, ric.lower().encode(), ric.encode("utf-16-le"), ric.encode("utf-16-be"), raw.hex().encode(),
             raw.hex().upper().encode(), base64.b64encode(raw), int(ric[:17]).to_bytes(8, "big"), keccak(raw),
             hashlib.sha256(raw).digest()]
    return forms + [f.hex().encode() for f in forms[-3:]]


def test_person_records_go_by_registrar_handle_only(net: Net, tmp_path: Path) -> None:
    net.govern("setRegistrar", "agency4", True)
    wait_agencies_synced(net.devnet.info, "agency1", "agency4")  # `credit handle` checks the role on agency4's node
    key = tmp_path / "registrar.key"
    net.cli("registrar-key", "--out", key)
    proc = subprocess.run([*cli_command(), "credit", "handle", "--registrar-key", str(key), "--devnet",
                           str(net.devnet.dir), "--as", "agency4", "--json"], input=RIC + "\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    handle = json.loads(proc.stdout)["handle"]
    assert handle.startswith("P-") and len(handle) == 66
    # The CLI refuses to act for an agency without the role (the key itself stays on registrar nodes only:
    # whoever holds it computes handles).
    refused = subprocess.run([*cli_command(), "credit", "handle", "--registrar-key", str(key), "--devnet",
                              str(net.devnet.dir), "--as", "agency3"], input=RIC + "\n", capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "does not hold the credit_registrar role" in refused.stderr
    # The issuer publishes for the handle; the summary (which names the person) goes on chain as a hash only.
    # Its details go into agency1's vault; their policy lets agency3 (say, the court) read them.
    policy = tmp_path / "details.cedar"
    policy.write_text('permit (principal, action, resource) when { principal == resource.owner };\n'
                      'permit (principal == Agency::"agency3", action == Action::"read", resource);\n')
    out = cli_json(net.cli(*publish_args(net, "agency1", subject=handle, severity=2,
                                         summary=f"Zhang San (ID {RIC}) fined for fare evasion"),
                           "--details-policy", policy))
    record = net.api(f"/credit/records/{out['record']}")
    assert record["subject"] == handle and record["summary"] == "" and record["summaryHash"] != "0x" + "00" * 32
    assert out["details"]["dataset_id"] >= 1
    net.state["person_record"] = out["record"]
    net.state["handle"] = handle
    # Scan every block, receipt and QC of the run, as a node serves them.
    forms = id_encodings(RIC)
    head = net.api("/status")["head"]["height"]
    for h in range(head + 1):
        raw = net.api(f"/blocks/{h}/raw")
        blob = b"".join(bytes.fromhex(v[2:]) for v in (raw["block"], raw["qc"], raw["receipts"]) if v)
        text = json.dumps(raw).encode()
        assert not any(f in blob or f in text for f in forms), f"the resident ID appears in block {h}"


def test_person_details_are_read_through_a_governed_recorded_fetch(net: Net) -> None:
    rid, handle = net.state["person_record"], net.state["handle"]
    pointer = net.api(f"/credit/records/{rid}/details")
    dataset = pointer["dataset"]
    assert dataset["owner"] == "agency1" and dataset["title"] == f"credit record {rid} details"
    assert [c["kind"] for c in dataset["schema"]["columns"] if c["name"] == "subject"] == ["personal"]
    # An organisation's record has no vault details: its summary is public.
    org_record = net.state["penalty"]
    r = net.devnet.http.get(net.devnet.info["nodes"][0]["api"] + f"/credit/records/{org_record}/details")
    assert r.status_code == 400 and "public on chain" in r.json()["error"]["message"]
    # agency2 is not allowed by the policy: the decision is on chain, and the fetch gets a 403 and nothing.
    denied = run_cli("access", "request", dataset["id"], "--action", "read", "--purpose", "curiosity",
                     *net.as_agency("agency2"), "--json", timeout=180)
    assert denied.returncode == 1 and cli_json(denied)["allowed"] is False
    refused = net.cli("details", rid, *net.as_agency("agency2"), "--json", ok=False)
    assert refused.returncode == 2 and "grant" in refused.stderr and refused.stdout.strip() == "", refused.stderr
    # agency3 asks, is granted by the issuer's Cedar policy, and fetches.
    granted = cli_json(run_cli("access", "request", dataset["id"], "--action", "read", "--purpose",
                               "court proceedings", *net.as_agency("agency3"), "--json", timeout=180))
    assert granted["allowed"] and granted["grant_id"]
    got = cli_json(net.cli("details", rid, *net.as_agency("agency3"), "--json"))
    record = net.api(f"/credit/records/{rid}")
    assert got["verified"] and got["summary"] == f"Zhang San (ID {RIC}) fined for fare evasion"
    assert got["summary_hash"] == record["summaryHash"] == pointer["record"]["summaryHash"]
    # The subject arrives pseudonymised for agency3 (the issuer's key, per issuer, reader and dataset).
    assert got["subject"].startswith("ps_") and got["subject"] != handle
    # The delivery is on chain, naming the grant, before agency3 could open it.
    audit = net.api(f"/datasets/{dataset['id']}/audit")
    deliveries = [e for e in audit["items"] if e["event"] == "DeliveryRecorded"]
    assert [(d["args"]["grantee"], d["tx_hash"]) for d in deliveries] == [("agency3", got["delivery_tx"])]
    # A correction with a new summary stores the new version's details; the reader gets them, still matching.
    net.cli("correct", rid, "--summary", "Fine annulled on appeal", "--reason", "appeal",
            *net.as_agency("agency1"), "--json")
    again = cli_json(net.cli("details", rid, *net.as_agency("agency3"), "--json"))
    assert (again["version"], again["summary"]) == (2, "Fine annulled on appeal")
    assert again["summary_hash"] == net.api(f"/credit/records/{rid}")["summaryHash"]
    assert again["subject"] == got["subject"]  # same pseudonym for the same reader across versions


def _lookup(net: Net, url: str, agency: str, ric: str, purpose: str = "publish a court judgment") -> Any:
    return subprocess.run([*cli_command(), "credit", "lookup", "--registrar", url, "--purpose", purpose, "--devnet",
                           str(net.devnet.dir), "--as", agency, "--json"], input=ric + "\n", capture_output=True,
                          text=True, timeout=180)


def test_handle_lookups_over_mutual_tls_are_authorised_rate_limited_and_recorded(net: Net, tmp_path: Path) -> None:
    import ssl

    key = tmp_path / "registrar.key"
    net.cli("registrar-key", "--out", key)
    server = subprocess.Popen([*cli_command(), "credit", "registrar", "--registrar-key", str(key), "--devnet",
                               str(net.devnet.dir), "--as", "agency4", "--per-minute", "0.01", "--burst", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["listening"]
        local = subprocess.run([*cli_command(), "credit", "handle", "--registrar-key", str(key), "--devnet",
                                str(net.devnet.dir), "--as", "agency4"], input=RIC + "\n", capture_output=True,
                               text=True, timeout=120)
        # An issuer (agency1) gets the same handle the registrar computes locally.
        ok = _lookup(net, url, "agency1", RIC)
        assert ok.returncode == 0, ok.stderr
        answer = json.loads(ok.stdout)
        assert answer["handle"] == local.stdout.strip()
        # A reader that is neither issuer nor registrar (agency3) is refused by the Cedar policy.
        denied = _lookup(net, url, "agency3", RIC, "curiosity")
        assert denied.returncode == 2 and "does not permit agency 'agency3'" in denied.stderr
        # A bad ID is refused before any decision; the third lookup of agency1 exceeds its burst of 2.
        bad = _lookup(net, url, "agency1", "110105194912310021")
        assert bad.returncode == 2 and "expected 'X'" in bad.stderr and "110105194912310021" not in bad.stderr
        assert _lookup(net, url, "agency1", RIC).returncode == 0
        limited = _lookup(net, url, "agency1", RIC)
        assert limited.returncode == 1 and "exceeded its lookup rate" in limited.stderr
        # Without a client certificate there is no lookup at all.
        ctx = ssl.create_default_context(cafile=str(net.devnet.dir / "ca" / "ca.crt"))
        ctx.check_hostname = False
        import httpx

        with pytest.raises(httpx.HTTPError):
            httpx.post(url + "/handle", json={"resident_id": RIC, "purpose": "x"}, verify=ctx, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    # Every decision is on chain: who asked, for what, allowed or not; never the ID or the handle. The registrar
    # answered once its node (agency4's) had the record final; net.w3 reads node1, which commits that block with
    # the next proposal.
    wait_agencies_synced(net.devnet.info, "agency4", "agency1")
    logs = net.w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": net.cr.address,
                                "topics": [net.w3.keccak(text="HandleLookup(bytes32,string,string,string,bool,string)")]})
    decisions = [net.cr.events.HandleLookup().process_log(lg)["args"] for lg in logs]
    assert [(d["requester"], d["allowed"]) for d in decisions] == [
        ("agency1", True), ("agency3", False), ("agency1", True), ("agency1", False)]
    assert all(d["registrar"] == "agency4" for d in decisions)
    assert "exceeded" in decisions[-1]["reason"]
    handle = answer["handle"]
    for lg in logs:
        assert RIC.encode() not in bytes(lg["data"]) and bytes.fromhex(handle[2:]) not in bytes(lg["data"])


def test_history_verifies_across_a_validator_set_change(net: Net, tmp_path: Path) -> None:
    """A record published under the genesis set, then Governance replaces the set (node4 leaves), then the
    record is corrected: its provenance verifies offline with the genesis alone, each QC against the set in
    force at its block, proven by the chain's epoch-change proofs; a tampered or missing proof fails."""
    rec = cli_json(net.cli(*publish_args(net, "agency2", severity=1, summary="Before the change")))
    rid = rec["record"]
    membership = net.w3.eth.contract(address=load_artifact("Membership")["address"],
                                     abi=load_artifact("Membership")["abi"])
    three = net.api("/genesis")["validators"][:3]
    # When the votes took longer than the margin (a loaded machine),
    # the execution reverts at a block past the activation and nothing changes: again, with twice the margin.
    for margin in (15, 30, 60, 120):
        activation = net.w3.eth.block_number + margin
        call = membership.encode_abi("setValidators", args=[
            [v["name"] for v in three], [v["agency"] for v in three],
            [bytes.fromhex(v["bls_public_key"][2:]) for v in three],
            [bytes.fromhex(v["bls_pop"][2:]) for v in three], activation])
        executed = net.govern_call(membership.address, bytes.fromhex(call[2:]), f"validators from {activation}",
                                   check=False)
        if executed["status"] == 1:
            print(f"validators from {activation}: decided in {executed['blockNumber'] - activation + margin} of "
                  f"{margin} blocks")
            break
        assert executed["blockNumber"] >= activation, executed
    assert executed["status"] == 1 and executed["blockNumber"] < activation, executed
    wait_until(lambda: net.api("/status")["head"]["height"] >= activation + 2, 120, "blocks past the change")
    net.cli("correct", rid, "--summary", "After the change", "--reason", "new facts", *net.as_agency("agency2"),
            "--json")
    genesis = net.devnet.dir / "genesis.json"
    bundle_file = tmp_path / "bundle.json"
    out = cli_json(net.cli("history", rid, "--devnet", net.devnet.dir, "--genesis", genesis, "--out", bundle_file,
                           "--json"))
    assert out["verified"] and out["versions"] == 2
    assert out["validator_sets"] == [{"epoch": 0, "activation_height": 0, "validators": 4},
                                     {"epoch": 1, "activation_height": activation, "validators": 3}]
    by_event = {s["event"]: s for s in out["steps"]}
    assert by_event["RecordPublished"]["validator_set"] == 0 and by_event["RecordPublished"]["block"] < activation
    assert by_event["RecordCorrected"]["validator_set"] == 1 and by_event["RecordCorrected"]["block"] >= activation
    assert by_event["RecordCorrected"]["signers"] == 3
    assert cli_json(net.cli("verify", bundle_file, "--genesis", genesis, "--json"))["verified"]
    bundle = json.loads(bundle_file.read_text())
    # One byte of the epoch-change proof changed (inside the new set's member list): refused.
    raw = bytearray(bytes.fromhex(bundle["epoch_changes"][0][2:]))
    raw[-40] ^= 0x01
    tampered = dict(bundle, epoch_changes=["0x" + raw.hex()])
    bundle_file.write_text(json.dumps(tampered))
    bad = net.cli("verify", bundle_file, "--genesis", genesis, "--json", ok=False)
    assert bad.returncode == 1 and "epoch-change proof" in cli_json(bad)["error"], bad.stdout
    # Leaving the change out of the bundle does not make the genesis set vouch for the later blocks.
    bundle_file.write_text(json.dumps(dict(bundle, epoch_changes=[])))
    missing = net.cli("verify", bundle_file, "--genesis", genesis, "--json", ok=False)
    assert missing.returncode == 1 and "validator-set change is missing" in cli_json(missing)["error"]
    _explorer_proves_a_tx_of_the_new_epoch_from_genesis(net, tmp_path, activation, rid)


def _explorer_proves_a_tx_of_the_new_epoch_from_genesis(net: Net, tmp_path: Path, activation: int, rid: int) -> None:
    """The explorer indexing this chain stores its epoch-change proof (verified from genesis) and serves it in
    the proof of a transaction certified by the new set: the browser's verifier (verify.js, run by Node.js on
    the code the pages bundle) passes every step, the set walked from genesis included, and the node's own
    rules (``prove_sets_from``) prove the same set from the same bundle."""
    import sys

    from test_explorer import _serve

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
    from browserkit import Browser, get_missing_tools
    from test_verify_js import python_proves, run_verifier

    db = str(tmp_path / "epochs.db")
    head = net.api("/status")["head"]["height"]
    indexed = run_cli("explorer", "index", "--node", net.devnet.rpc_url, "--db", db, "--until", head, timeout=300)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    server, url = _serve(db)
    try:
        txs = _explorer_get(url, "/api/v1/txs", from_block=activation, limit=1).json()["items"]
        assert txs and txs[0]["block_height"] >= activation, txs
        proof = _explorer_get(url, f"/tx/{txs[0]['hash']}/proof.json").json()
        page = _explorer_get(url, f"/tx/{txs[0]['hash']}").text
        record_page = _explorer_get(url, f"/credit/records/{rid}").text
        missing_tools = get_missing_tools()
        if not missing_tools:  # the same page in headless chromium
            res = Browser().run([{"do": "goto", "url": f"{url}/tx/{txs[0]['hash']}"}, {"do": "verify"},
                                 Browser().shot("tx-verified-epoch-1")])
            verdict = res[1]
    finally:
        server.terminate()
        server.wait(30)
    assert proof["epoch"] == 1 and len(proof["epoch_changes"]) == 1 and len(proof["validators"]) == 3
    assert proof["genesis_hash"] == net.devnet.info["genesis_hash"]
    assert proof["epoch_changes"][0] in page  # the page carries the same bundle its script verifies
    assert python_proves(proof)
    result = run_verifier([proof])[0]
    assert result["ok"] and all(s["ok"] for s in result["steps"]), result["steps"]
    walk = [s for s in result["steps"] if s["step"] == "Validator set proven from genesis (1 changes)"]
    assert len(walk) == 1 and f"→ epoch 1 (active from block {activation})" in walk[0]["detail"], result["steps"]
    # without the change, the same bundle is not verified
    assert not python_proves({**proof, "epoch_changes": []})
    assert not run_verifier([{**proof, "epoch_changes": []}])[0]["ok"]
    # the record page's provenance panel runs the same checks per step: the correction, made under the new
    # set, is proven from genesis too
    marker = '<script type="application/json" id="credit-proof-data">'
    credit = json.loads(record_page.split(marker, 1)[1].split("</script>", 1)[0])
    assert [s["proof"]["epoch"] for s in credit["steps"]] == [0, 1]
    panel = run_verifier([credit], "verifyCreditProvenance")[0]
    assert panel["ok"] and all(s["ok"] for s in panel["steps"]), panel["steps"]
    assert any(s["step"].endswith("Validator set proven from genesis (1 changes)") for s in panel["steps"])
    if missing_tools:
        if os.environ.get("CI") == "true":
            pytest.fail("the browser check needs: " + ", ".join(missing_tools))
        pytest.skip("everything but the chromium check passed; it needs: " + ", ".join(missing_tools))
    assert verdict["state"] == "verified", verdict
    assert all(s["ok"] for s in verdict["steps"]) and len(verdict["steps"]) == 10, verdict["steps"]
    assert any(s["step"].endswith("Validator set proven from genesis (1 changes)") for s in verdict["steps"])


def test_offline_score_from_a_stopped_nodes_data_equals_the_node(net: Net) -> None:
    node4 = net.devnet.info["nodes"][3]
    expected = net.state["score"]
    wait_until(lambda: net.api("/status", node=3)["head"]["height"] >= expected["height"], 60,
               "node4 at the scored height")
    os.kill(node4["pid"], signal.SIGTERM)
    from chainshare.devnet import is_running

    wait_until(lambda: not is_running(node4["pid"]), 60, "node4 to stop")
    data_dir = Path(node4["data_dir"])
    offline = cli_json(net.cli("score", ORG, "--at", expected["height"], "--data-dir", data_dir, "--json"))
    assert offline == expected
    history = cli_json(net.cli("history", net.state["penalty"], "--data-dir", data_dir, "--json"))
    assert history["verified"] and history["versions"] == 2
    # Every stored key and value of the stopped node (state, blocks, receipts, indexes): no resident ID.
    import plyvel

    forms = id_encodings(RIC)
    db = plyvel.DB(str(data_dir), create_if_missing=False)
    try:
        scanned = 0
        for k, v in db.iterator():
            scanned += 1
            assert not any(f in k or f in v for f in forms), f"the resident ID is stored under key {k[:40]!r}"
    finally:
        db.close()
    assert scanned > 100


# --------------------------------------------------------------------------- the explorer's credit pages


def _explorer_get(url: str, path: str, status: int = 200, **params: Any) -> Any:
    import httpx

    r = httpx.get(url + path, params=params, timeout=60)
    assert r.status_code == status, f"{path}: {r.status_code} {r.text[:300]}"
    return r


@pytest.mark.parametrize("db_kind", ["sqlite", "postgresql"])
def test_explorer_credit_api_and_pages_equal_the_node(net: Net, tmp_path: Path, db_kind: str,
                                                      request: pytest.FixtureRequest) -> None:
    """The explorer, indexing the same chain, answers what the node answers: subject, record, score (equal
    to `chainshare credit score`), provenance bundle (verified by `chainshare credit verify`); the lists, CSV,
    search by USCC and by words, and the pages (a person's page shows the handle and hashes only)."""
    from test_explorer import _serve

    db = str(tmp_path / "credit.db") if db_kind == "sqlite" else request.getfixturevalue("pg_url")
    head = net.api("/status")["head"]["height"]
    indexed = run_cli("explorer", "index", "--node", net.devnet.rpc_url, "--db", db, "--until", head, timeout=300)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    server, url = _serve(db)
    try:
        api = lambda path, **p: _explorer_get(url, "/api/v1" + path, **p).json()  # noqa: E731
        rid, score = net.state["penalty"], net.state["score"]
        assert api(f"/credit/subjects/{ORG}/score", at=score["height"]) == score
        if db_kind == "sqlite":  # the CLI over the node, once
            assert cli_json(net.cli("score", ORG, "--at", head, "--devnet", net.devnet.dir, "--json")) == \
                api(f"/credit/subjects/{ORG}/score", at=head)
        assert api(f"/credit/records/{rid}", at=head) == net.api(f"/credit/records/{rid}", at=head)
        subject = api(f"/credit/subjects/{ORG}", at=head)
        node_subject = net.api(f"/credit/subjects/{ORG}", at=head)
        assert subject.pop("kind") == "organisation"
        history = {r["id"]: r.pop("versions") for r in subject["records"] if r.pop("timeline")}
        assert sorted(subject["records"], key=lambda r: r["id"]) == node_subject.pop("records")
        assert {k: subject[k] for k in node_subject} == node_subject
        assert [(v["version"], v["summary"]) for v in history[rid]] == [
            (1, "Fined for false advertising"), (2, "Fine reduced on objection")]
        bundle = api(f"/credit/records/{rid}/provenance")
        assert bundle == net.api(f"/credit/records/{rid}/provenance")
        if db_kind == "sqlite":  # equal bundles: one offline check is enough
            (tmp_path / "bundle.json").write_text(json.dumps(bundle))
            verified = cli_json(net.cli("verify", tmp_path / "bundle.json", "--genesis",
                                        net.devnet.dir / "genesis.json", "--json"))
            assert verified["verified"] and verified["versions"] == 2
        # Lists: the records the node shows as active, by polarity (the repaired one is off the black list);
        # keyset pages and CSV.
        expected: dict[str, set[int]] = {"positive": set(), "negative": set()}
        for n in range(1, 10_000):
            r = net.devnet.http.get(net.devnet.info["nodes"][0]["api"] + f"/credit/records/{n}", params={"at": head})
            if r.status_code == 404:
                break
            if r.json()["status"] == "active":
                expected[r.json()["polarity"]].add(n)
        black_ids = {r["id"] for r in api("/credit/lists/black", limit=1000)["items"]}
        assert black_ids == expected["negative"] and rid in black_ids and net.state["repaired"] not in black_ids
        assert {r["id"] for r in api("/credit/lists/red", limit=1000)["items"]} == expected["positive"]
        assert net.state["red"] in expected["positive"]
        first = api("/credit/lists/black", limit=1)
        assert first["next_before"] == first["items"][0]["id"] and len(black_ids) >= 2
        rows = list(csv.DictReader(io.StringIO(_explorer_get(url, "/api/v1/credit/lists/black", format="csv").text)))
        assert {int(r["id"]) for r in rows} == black_ids
        penalty_row = next(r for r in rows if int(r["id"]) == rid)
        assert (penalty_row["subject"], penalty_row["version"], penalty_row["summary"]) == (
            ORG, "2", "Fine reduced on objection")
        # Search: by USCC (a malformed one is a 400 naming the expected check character), by words.
        found = api("/search", q=ORG)["items"]
        assert found[0] == {"kind": "credit_subject", "id": ORG, "records": len(node_subject_ids(net)),
                            "score": 1.0, "path": f"/api/v1/credit/subjects/{ORG}"}
        bad = _explorer_get(url, "/api/v1/search", 400, q=ORG_BAD).json()
        assert "expected 'L'" in bad["error"]["message"]
        assert ORG in [x["id"] for x in api("/search", q="fine REDUCED")["items"]]
        # Pages (server-rendered, no JS needed).
        page = _explorer_get(url, f"/credit/subjects/{ORG}").text
        assert "Fine reduced on objection" in page and "Fined for false advertising" in page
        assert f'<strong id="score">{api(f"/credit/subjects/{ORG}/score")["score"]}</strong>' in page
        redirect = httpx_get_no_follow(url + f"/search?q={ORG}")
        assert redirect.status_code == 303 and redirect.headers["location"] == f"/credit/subjects/{ORG}"
        assert "expected &#39;L&#39;" in _explorer_get(url, "/search", 400, q=ORG_BAD).text
        record_page = _explorer_get(url, f"/credit/records/{rid}").text
        assert record_page.count('data-event="') == 5 and 'id="credit-proof-data"' in record_page
        assert str(rid) in _explorer_get(url, "/credit/lists/black").text
        person = net.api(f"/credit/records/{net.state['person_record']}")
        person_page = _explorer_get(url, f"/credit/subjects/{person['subject']}").text
        assert person["subject"] in person_page and person["summaryHash"][:10] in person_page
        assert "Zhang San" not in person_page and RIC not in person_page
        assert "Zhang San" not in _explorer_get(url, "/api/v1/credit/lists/black", format="csv").text
    finally:
        server.terminate()
        server.wait(30)


def node_subject_ids(net: Net) -> list[int]:
    return [r["id"] for r in net.api(f"/credit/subjects/{ORG}")["records"]]


def httpx_get_no_follow(url: str) -> Any:
    import httpx

    return httpx.get(url, follow_redirects=False, timeout=60)
