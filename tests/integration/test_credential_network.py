"""Zero-knowledge credit credentials on a real devnet, driven through the CLI a user runs
(`chainshare credit credential issue | prove | verify | revoke`) and the explorer's paste-a-proof page over HTTP.

Scenario (one one-node devnet for the module; the tests run in order and build on each other): Governance
configures the credit registry; agency1 issues an organisation a credential computed from its records; the
subject proves predicates that a verifier checks against the chain (a replay, a tampered proof, a false
predicate and garbage are refused); the explorer verifies the pasted proof; a new black-list record,
`revoke --changed`, and the old proof fails once the new status list is final."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from netkit import Devnet, cli_command, cli_json, run_cli, wait_until

from chainshare.bench_credit import _govern
from chainshare.client import NodeClient
from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.execution.runtime import encode_call

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("credential")]

PENALTY = "administrative_penalty"
RULE = {"name": "credential", "base": 1000, "min": 0, "max": 2000, "weights": {PENALTY: {"1": -20, "3": -100}}}
EVIDENCE = "0x" + "ab" * 32


class Net:
    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self.state: dict[str, Any] = {}

    def as_agency(self, agency: str) -> list[Any]:
        return ["--devnet", self.devnet.dir, "--as", agency]

    def cli(self, *args: Any, ok: bool = True, timeout: float = 300) -> Any:
        proc = run_cli("credit", *args, timeout=timeout)
        if ok:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc


@pytest.fixture(scope="module")
def net(devnet: Devnet) -> Net:
    return configure_credit(devnet)


def configure_credit(devnet: Devnet) -> Net:
    """Governance sets up the penalty and black-list categories (agency1 issues both) and a scoring rule."""
    cr = CreditRegistry()
    key = bytes.fromhex(devnet.info["accounts"][0]["private_key"][2:])
    with NodeClient(devnet.rpc_url, timeout=60) as client:
        for call in (encode_call(cr, "setCategory", PENALTY, "Administrative penalty", True),
                     encode_call(cr, "setCategory", "black_list", "Black list (serious dishonesty)", True),
                     encode_call(cr, "setIssuer", PENALTY, "agency1", True),
                     encode_call(cr, "setIssuer", "black_list", "agency1", True),
                     encode_call(cr, "installScoringRule", json.dumps(RULE))):
            _govern(client, [key], call)
    return Net(devnet)


def publish_args(net: Net, agency: str, *, category: str = PENALTY, severity: int = 3, subject: str) -> list[Any]:
    return ["publish", *net.as_agency(agency), "--subject", subject, "--category", category,
            "--polarity", "negative", "--severity", severity, "--document", f"DOC-{agency}-{time.monotonic_ns()}",
            "--authority", f"{agency} bureau", "--legal-basis", "Regulation art. 1", "--summary", "Finding",
            "--min-period", "180d", "--max-period", "1095d", "--evidence-hash", EVIDENCE, "--json"]


ORG_ZK = "91110000000000777X"


def _zk(net: Net, *args: Any, code: int = 0) -> Any:
    proc = net.cli("credential", *args, ok=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


def test_credential_issue_prove_and_verify_on_chain(net: Net, tmp_path: Path) -> None:
    from stdnum.cn import uscc

    subject = ORG_ZK[:17] + uscc.calc_check_digit(ORG_ZK[:17])
    net.cli(*publish_args(net, "agency1", subject=subject, severity=1))  # one penalty: score 1000 - 20
    cred, proof = tmp_path / "cred.json", tmp_path / "proof.json"
    issued = cli_json(_zk(net, "issue", "--subject", subject, "--registry-size", "8", "--out", cred,
                          *net.as_agency("agency1"), "--json"))
    assert issued["attributes"] == {"black_list_active": 0, "penalties_3y": 1, "score": 980,
                                    "computed_height": issued["computed_at_height"]}
    assert [p["method"] for p in issued["published"]] == ["publishSchema", "publishCredentialDefinition",
                                                          "publishRevocationRegistry"]
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    nonce = _zk(net, "nonce").stdout.strip()
    made = cli_json(_zk(net, "prove", "--cred", cred, "--predicate", "score>=700", "--predicate",
                        "black_list_active<=0", "--nonce", nonce, "--out", proof, "--devnet", net.devnet.dir, "--json"))
    assert made["bytes"] > 1000
    ok = cli_json(_zk(net, "verify", "--proof", proof, "--nonce", nonce, "--require", "score>=700",
                      "--devnet", net.devnet.dir, "--json"))
    assert ok["valid"] and ok["issuer"] == "agency1" and ok["predicates"] == ["score>=700", "black_list_active<=0"]
    # The proof carries no attribute value; another nonce (a replay) or a tampered proof fails with exit 1.
    presentation = json.loads(proof.read_text())["presentation"]
    assert presentation["requested_proof"]["revealed_attrs"] == {}
    assert presentation["proof"]["proofs"][0]["primary_proof"]["eq_proof"]["revealed_attrs"] == {}
    _zk(net, "verify", "--proof", proof, "--nonce", nonce + "1", "--devnet", net.devnet.dir, code=1)
    tampered = tmp_path / "tampered.json"
    doc = json.loads(proof.read_text())
    doc["predicates"] = ["score>=900", "black_list_active<=0"]
    for ge in doc["presentation"]["proof"]["proofs"][0]["primary_proof"]["ge_proofs"]:
        if ge["predicate"]["attr_name"] == "score":
            ge["predicate"]["value"] = 900
    tampered.write_text(json.dumps(doc))
    _zk(net, "verify", "--proof", tampered, "--nonce", nonce, "--devnet", net.devnet.dir, code=1)
    # A false predicate cannot be proven (exit 2, saying so); garbage is refused with exit 2.
    false = _zk(net, "prove", "--cred", cred, "--predicate", "score>=990", "--nonce", nonce, "--out",
                tmp_path / "no.json", "--devnet", net.devnet.dir, code=2)
    assert "score>=990 is false for this credential" in false.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert "not JSON" in _zk(net, "verify", "--proof", garbage, "--nonce", nonce, "--devnet", net.devnet.dir,
                             code=2).stderr
    net.state["zk"] = {"proof": proof, "nonce": nonce, "cred": cred, "subject": subject,
                       "index": issued["revocation_index"]}


def test_the_explorer_verifies_a_pasted_proof(net: Net, tmp_path: Path) -> None:
    import httpx

    zk = net.state["zk"]
    proof = zk["proof"]
    with serve_explorer(net, tmp_path) as base:
        page = httpx.get(base + "/credentials/verify")
        assert "<form" in page.text and 'name="proof"' in page.text
        valid = httpx.post(base + "/credentials/verify", data={"proof": proof.read_text(), "nonce": zk["nonce"]},
                           timeout=60)
        assert valid.status_code == 200 and "<h2>Valid</h2>" in valid.text and "score&gt;=700" in valid.text
        replayed = httpx.post(base + "/api/v1/credentials/verify", json={"proof": json.loads(proof.read_text()),
                                                                        "nonce": zk["nonce"] + "7"}, timeout=60)
        assert replayed.status_code == 200 and replayed.json()["valid"] is False
        for body in ({"proof": "garbage", "nonce": "1"}, {"proof": proof.read_text(), "nonce": "abc"}, {}):
            bad = httpx.post(base + "/credentials/verify", data=body, timeout=60)
            assert bad.status_code == 400 and "Cannot verify" in bad.text, bad.text[:300]
        huge = httpx.post(base + "/api/v1/credentials/verify", content=b"x" * (1024 * 1024),
                          headers={"content-type": "application/json"}, timeout=60)
        assert huge.status_code == 400 and "at most" in huge.json()["error"]
        assert httpx.post(base + "/api/v1/credentials/verify", content=b"\xff\xfe",
                          headers={"content-type": "application/json"}, timeout=60).status_code == 400


@contextmanager
def serve_explorer(net: Net, tmp_path: Path) -> Iterator[str]:
    """``chainshare explorer serve --node`` over an empty explorer database: its base URL while it runs."""
    import httpx

    from chainshare.bench import free_port_block
    from chainshare.explorer.db.engine import apply_migrations, create_db_engine

    db = f"sqlite:///{tmp_path / 'explorer.db'}"
    apply_migrations(create_db_engine(db))
    port = free_port_block(1)
    server = subprocess.Popen(cli_command() + ["explorer", "serve", "--db", db, "--port", str(port), "--node",
                                               net.devnet.info["nodes"][0]["rpc"]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(base + "/credentials/verify", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 60, "the explorer to serve")
        yield base
    finally:
        server.terminate()
        server.wait(30)


def test_a_revoked_credentials_proof_fails_once_the_revocation_is_final(net: Net, tmp_path: Path) -> None:
    zk = net.state["zk"]
    subject, proof, nonce, cred = zk["subject"], zk["proof"], zk["nonce"], zk["cred"]
    # The credit status changes (a black-list record); the issuer's `revoke --changed` finds it and publishes a
    # new status list; once that block is final the old proof fails and no new one can be made.
    unchanged = cli_json(_zk(net, "revoke", "--changed", *net.as_agency("agency1"), "--json"))
    assert unchanged["revoked"] == []  # before the record: nothing changed
    net.cli(*publish_args(net, "agency1", subject=subject, category="black_list", severity=5))
    revoked = cli_json(_zk(net, "revoke", "--changed", *net.as_agency("agency1"), "--json"))
    assert revoked["revoked"] == [zk["index"]]
    stale = cli_json(_zk(net, "verify", "--proof", proof, "--nonce", nonce, "--devnet", net.devnet.dir, "--json",
                         code=1))
    assert not stale["valid"] and "ask the holder for a fresh proof" in stale["reason"]
    refused = _zk(net, "prove", "--cred", cred, "--predicate", "score>=700", "--nonce", nonce, "--out",
                  tmp_path / "again.json", "--devnet", net.devnet.dir, code=2)
    assert "this credential is revoked" in refused.stderr


ORG_FOLLOW = "91110000000000888X"


def start_follower(net: Net, log: Path) -> subprocess.Popen[str]:
    """``revoke --changed --follow`` as the issuer runs it next to its node (structured log lines to ``log``)."""
    proc = subprocess.Popen(cli_command() + ["credit", "credential", "revoke", "--changed", "--follow",
                                             *map(str, net.as_agency("agency1")), "--json"],
                            stdout=subprocess.PIPE, stderr=log.open("w"), stdin=subprocess.DEVNULL, text=True)
    def following() -> bool:
        assert proc.poll() is None, log.read_text()
        return "following" in log_lines(log, "msg")
    wait_until(following, 120, "the follower to start following")
    return proc


def log_lines(log: Path, key: str) -> list[Any]:
    return [json.loads(x).get(key) for x in log.read_text().splitlines() if x.startswith("{")]


def stop_follower(proc: subprocess.Popen[str]) -> Any:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_the_follower_revokes_when_a_holders_credit_status_changes(net: Net, tmp_path: Path) -> None:
    from stdnum.cn import uscc

    subject = ORG_FOLLOW[:17] + uscc.calc_check_digit(ORG_FOLLOW[:17])
    log = tmp_path / "follower.log"
    follower = start_follower(net, log)
    try:
        cred, proof = tmp_path / "cred.json", tmp_path / "proof.json"
        index = cli_json(_zk(net, "issue", "--subject", subject, "--registry-size", "8", "--out", cred,
                             *net.as_agency("agency1"), "--json"))["revocation_index"]
        nonce = _zk(net, "nonce").stdout.strip()
        _zk(net, "prove", "--cred", cred, "--predicate", "black_list_active<=0", "--nonce", nonce, "--out", proof,
            "--devnet", net.devnet.dir)
        _zk(net, "verify", "--proof", proof, "--nonce", nonce, "--devnet", net.devnet.dir)
        # A black-list record for the subject: the follower (re-reading the issuer state, so it knows the
        # credential issued after it started) revokes it by itself, and the old proof fails once that is final.
        record = cli_json(net.cli(*publish_args(net, "agency1", subject=subject, category="black_list",
                                                severity=5)))
        wait_until(lambda: "revoked" in log_lines(log, "msg"), 120, "the follower to revoke the credential")
        done = next(json.loads(x) for x in log.read_text().splitlines() if '"msg": "revoked"' in x)
        assert done["indexes"] == [index] and done["subject"] == subject and done["record"] == record["record"]
        assert done["block"] > done["record_block"] >= record["block"] - 1
        stale = cli_json(_zk(net, "verify", "--proof", proof, "--nonce", nonce, "--devnet", net.devnet.dir,
                             "--json", code=1))
        assert not stale["valid"]
        refused = _zk(net, "prove", "--cred", cred, "--predicate", "black_list_active<=0", "--nonce", nonce,
                      "--out", tmp_path / "again.json", "--devnet", net.devnet.dir, code=2)
        assert "this credential is revoked" in refused.stderr
        first = stop_follower(follower)
        assert first["revoked"] == [index] and [r["record_cursor"] for r in first["revocations"]] == [done["cursor"]]
        # Restarted, it resumes from its cursor: the black-list event is not handled again, nothing is revoked.
        follower = start_follower(net, log2 := tmp_path / "follower2.log")
        resumed = next(json.loads(x) for x in log2.read_text().splitlines() if '"msg": "following"' in x)
        assert tuple(map(int, resumed["cursor"].split("-"))) >= tuple(map(int, done["cursor"].split("-")))
        second = stop_follower(follower)
        assert second["revoked"] == [] and "revoked" not in log_lines(log2, "msg")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(30)
    # Misuse is refused with exit 2 and the reason.
    alone = _zk(net, "revoke", "--follow", *net.as_agency("agency1"), code=2)
    assert "--follow goes with --changed alone" in alone.stderr
    assert "go with --follow" in _zk(net, "revoke", "--changed", "--cursor-file", tmp_path / "c",
                                      *net.as_agency("agency1"), code=2).stderr
    (bad := tmp_path / "bad.cursor").write_text("yesterday\n")
    assert "must look like BLOCK-LOG" in _zk(net, "revoke", "--changed", "--follow", "--cursor-file", bad,
                                             *net.as_agency("agency1"), code=2).stderr
