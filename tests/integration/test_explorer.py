"""The explorer against a real devnet: `chainshare explorer up|down|index`, the indexer's
verification and failover (a tampering proxy), resume after SIGKILL, the API (keyset pages, CSV,
proofs, search, Etherscan subset), on SQLite and on PostgreSQL, and schemathesis on its OpenAPI.

PostgreSQL: the tests create and drop their own database on 127.0.0.1:5432 (user postgres).
Under CI=true a missing PostgreSQL fails the PostgreSQL tests; elsewhere they are skipped.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from explorerkit import anchor, propose, register_dataset, request_access
from netkit import Devnet, cli_command, cli_json, run_cli, wait_until

from chainshare import codec
from chainshare.client import NodeClient
from chainshare.execution.contracts.membership import select_validator_set
from chainshare.explorer.db.content import compute_content_hash
from chainshare.explorer.db.engine import create_db_engine
from chainshare.explorer.indexer.source import NodeSource
from chainshare.ledger.merkle import InclusionProof, verify_inclusion_proof
from chainshare.ledger.quorum import verify_qc
from chainshare.ledger.types import Header, QuorumCertificate

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("explorer")]

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chain(devnet: Devnet) -> dict[str, Any]:
    """The devnet with some of every kind of activity: anchors, a dataset, access requests, a proposal."""
    client = NodeClient(devnet.rpc_url)
    key = devnet.key_bytes
    anchor(client, key)
    ds = register_dataset(client, key, "Road traffic counts", "agency1")
    request_access(client, key, 1, "read")
    request_access(client, key, 1, "compute")
    prop = propose(client, key, "anchor the quarterly report")
    last = anchor(client, key)
    return {"dataset_tx": ds["transactionHash"], "proposal_tx": prop["transactionHash"],
            "last_height": int(last["blockNumber"], 16), "address": devnet.address.lower()}


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__})"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: PostgreSQL is required under CI")
        pytest.skip(reason)
    import psycopg

    name = "explorer_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _explorer_up(devnet: Devnet, db: str, replicas: int = 1) -> dict[str, Any]:
    proc = run_cli("explorer", "up", "--devnet", devnet.dir, "--db", db, "--replicas", replicas, "--json",
                   timeout=240)
    return dict(cli_json(proc))


def _explorer_down(devnet: Devnet) -> None:
    run_cli("explorer", "down", "--devnet", devnet.dir, "--json", timeout=60)


# --------------------------------------------------------------------------- the API on both databases


def _check_api(url: str, devnet: Devnet, chain: dict[str, Any], kind: str) -> None:
    get = httpx.Client(base_url=url + "/api/v1", timeout=30).get
    wait_until(lambda: get("/status").json()["indexed_height"] >= chain["last_height"], 60, "index catches up")
    st = get("/status").json()
    assert st["database"]["kind"] == kind and st["chain_id"] == devnet.chain_id
    assert st["genesis_hash"] == devnet.info["genesis_hash"]
    assert st["node_heads"] and st["lag"] is not None

    # keyset pages of blocks: contiguous, no overlap, newest first
    p1 = get("/blocks", params={"limit": 5}).json()
    p2 = get("/blocks", params={"limit": 5, "before": p1["next_before"]}).json()
    heights = [b["height"] for b in p1["items"] + p2["items"]]
    assert heights == list(range(heights[0], heights[0] - 10, -1))

    # a transaction: decoded call, events, and proofs that verify against the header the QC certifies
    tx = get(f"/txs/{chain['dataset_tx']}").json()
    assert (tx["contract"], tx["method"], tx["args"]["title"]) == ("Datasets", "register", "Road traffic counts")
    assert "DatasetRegistered" in [e["event"] for e in tx["events"]]
    proof = tx["proof"]
    header = Header.from_list(codec.decode(bytes.fromhex(proof["header"][2:])))
    assert "0x" + header.hash.hex() == proof["block_hash"]
    for what, root in (("transaction", header.tx_root), ("receipt", header.receipts_root)):
        leaf = bytes.fromhex(proof[what]["leaf"][2:])
        p = proof[what]["proof"]
        ip = InclusionProof(p["index"], p["size"], tuple(bytes.fromhex(x[2:]) for x in p["path"]))
        assert verify_inclusion_proof(leaf, ip, root)
    qc = QuorumCertificate.from_list(codec.decode(bytes.fromhex(proof["qc"]["encoded"][2:])))
    sets = NodeSource(devnet.rpc_url).get_validator_sets()
    vs = select_validator_set(sets, header.height)
    verify_qc(qc, list(vs.validators), devnet.chain_id, vs.epoch)
    assert qc.block_hash == header.hash

    blk = get(f"/blocks/{tx['block_height']}").json()
    assert blk["qc_signers"] and blk["qc_signers"][0]["name"] == "node1"
    assert get(f"/blocks/{blk['hash']}").json()["height"] == tx["block_height"]

    # derived tables
    hist = get("/datasets/1/history").json()["items"]
    kinds = [h["kind"] for h in hist]
    assert kinds.count("AccessRequested") == 2 and kinds.count("AccessDecided") == 2
    decided = [h for h in hist if h["kind"] == "AccessDecided"]
    assert any(h["allowed"] for h in decided) and all(isinstance(h["policy_ids"], list) for h in decided)
    assert get("/datasets").json()["items"][0]["requests"] == 2
    agency = get("/agencies/agency1").json()
    assert agency["tx_count"] >= 6 and agency["datasets"] == 1 and agency["activity"]
    props = get("/governance/proposals").json()["items"]
    assert props[0]["call"]["method"] == "anchor" and props[0]["description"] == "anchor the quarterly report"
    addr = get(f"/addresses/{chain['address']}/txs", params={"limit": 2}).json()
    assert len(addr["items"]) == 2 and addr["next_before"] is not None
    more = get(f"/addresses/{chain['address']}/txs", params={"limit": 100, "before": addr["next_before"]}).json()
    assert {t["hash"] for t in addr["items"]}.isdisjoint({t["hash"] for t in more["items"]})
    assert get("/validators").json()["epochs"][0]["items"][0]["name"] == "node1"
    assert get("/stats", params={"interval": "minute"}).json()["totals"]["txs"] >= 6

    # search: hash, number, address, a misspelt agency name
    assert get("/search", params={"q": chain["dataset_tx"]}).json()["items"][0]["kind"] == "tx"
    assert get("/search", params={"q": "agnecy1"}).json()["items"][0]["id"] == "agency1"
    assert get("/search", params={"q": chain["address"]}).json()["items"][0]["kind"] == "address"

    # CSV, streamed
    r = get("/txs", params={"format": "csv", "limit": 1000})
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("hash,") and len(lines) >= 7

    # errors: precise 4xx, never 500
    assert get("/txs/0x" + "00" * 32).status_code == 404
    assert get("/blocks/notablock").status_code in (400, 404)
    bad = get("/blocks", params={"limit": 0})
    assert bad.status_code == 400 and "error" in bad.json()

    # Etherscan subset
    es = httpx.get(url + "/api", params={"module": "account", "action": "txlist", "address": chain["address"],
                                         "sort": "desc", "page": 1, "offset": 3}, timeout=30).json()
    assert es["status"] == "1" and len(es["result"]) == 3 and es["result"][0]["functionName"] == "anchor"
    st2 = httpx.get(url + "/api", params={"module": "transaction", "action": "gettxreceiptstatus",
                                          "txhash": chain["dataset_tx"]}, timeout=30).json()
    assert st2["result"]["status"] == "1"
    notary = devnet.info["contracts"]["Notary"]
    logs = httpx.get(url + "/api", params={"module": "logs", "action": "getLogs", "address": notary, "fromBlock": 0,
                                           "toBlock": "latest"}, timeout=30).json()
    assert logs["status"] == "1" and len(logs["result"]) == 2 and all(len(x["topics"]) == 3 for x in logs["result"])
    ts = int(tx["timestamp_ms"]) // 1000
    bn = httpx.get(url + "/api", params={"module": "block", "action": "getblocknobytime", "timestamp": ts + 1,
                                         "closest": "before"}, timeout=30).json()
    assert bn["status"] == "1" and int(bn["result"]) >= tx["block_height"]
    too_big = httpx.get(url + "/api", params={"module": "account", "action": "txlist", "address": chain["address"],
                                              "page": 1000, "offset": 1000}, timeout=30).json()
    assert too_big["status"] == "0" and "Result window" in too_big["result"]


def test_explorer_up_on_sqlite_serves_the_verified_chain(devnet: Devnet, chain: dict[str, Any],
                                                         tmp_path: Path) -> None:
    out = _explorer_up(devnet, str(tmp_path / "ex.db"), replicas=2)
    try:
        assert len(out["urls"]) == 2 and set(out["pids"]) == {"indexer", "api1", "api2", "balancer"}
        assert json.loads((devnet.dir / "explorer.json").read_text())["urls"] == out["urls"]
        for url in [*out["urls"], out["balancer_url"]]:
            _check_api(url, devnet, chain, "sqlite")
    finally:
        _explorer_down(devnet)
    assert not (devnet.dir / "explorer.json").exists()


def test_explorer_up_on_postgresql_serves_the_verified_chain(devnet: Devnet, chain: dict[str, Any],
                                                             pg_url: str) -> None:
    out = _explorer_up(devnet, pg_url)
    try:
        _check_api(out["urls"][0], devnet, chain, "postgresql")
    finally:
        _explorer_down(devnet)


# --------------------------------------------------------------------------- resume after SIGKILL


def _index(devnet: Devnet, db: str, until: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*cli_command(), "explorer", "index", "--node", devnet.rpc_url, "--db", db,
                             "--until", str(until), "--batch-blocks", "3", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _resume_after_kills(devnet: Devnet, chain: dict[str, Any], db_a: str, db_b: str) -> None:
    until = chain["last_height"] + 5
    devnet.wait_for_head(until, timeout=60)
    clean = _index(devnet, db_a, until)
    assert clean.wait(timeout=240) == 0, clean.stderr.read().decode()[-2000:] if clean.stderr else ""
    kills = 0
    for delay in (1.0, 1.5, 2.0, 2.5, 3.0):
        p = _index(devnet, db_b, until)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
    final = _index(devnet, db_b, until)
    assert final.wait(timeout=240) == 0
    assert kills >= 1, "the indexer finished before any kill: the test interrupted nothing"
    a, b = compute_content_hash(create_db_engine(db_a)), compute_content_hash(create_db_engine(db_b))
    assert a == b
    with create_db_engine(db_b).connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT height FROM progress")).scalar() == until


def test_indexer_killed_at_any_moment_resumes_to_an_identical_index(devnet: Devnet, chain: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    _resume_after_kills(devnet, chain, str(tmp_path / "a.db"), str(tmp_path / "b.db"))


def test_indexer_resumes_after_sigkill_on_postgresql(devnet: Devnet, chain: dict[str, Any], pg_url: str,
                                                    tmp_path: Path) -> None:
    _resume_after_kills(devnet, chain, str(tmp_path / "a.db"), pg_url)


# --------------------------------------------------------------------------- tampering node


class TamperProxy:
    """A node's API in front of the real one, serving one forged block (or its forged QC)."""

    def __init__(self, upstream: str, height: int, mode: str) -> None:
        self.upstream, self.height, self.mode = upstream, height, mode
        self.forged_served = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self, r: httpx.Response, body: bytes | None = None) -> None:
                data = r.content if body is None else body
                self.send_response(r.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                r = httpx.get(proxy.upstream + self.path, timeout=30)
                if self.path == f"/api/v1/blocks/{proxy.height}/raw":
                    self._relay(r, json.dumps(proxy.forge(r.json())).encode())
                    proxy.forged_served += 1
                    return
                self._relay(r)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                self._relay(httpx.post(proxy.upstream + self.path, content=body,
                                       headers={"content-type": "application/json"}, timeout=30))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forge(self, raw: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "qc":  # a QC whose aggregate signature is not the validators'
            qc = codec.decode(bytes.fromhex(raw["qc"][2:]))
            sig = bytearray(qc[4])
            sig[10] ^= 0x01
            qc[4] = bytes(sig)
            raw["qc"] = "0x" + codec.encode(qc).hex()
        else:  # a transaction dropped from the block: the header's tx root no longer matches
            block = codec.decode(bytes.fromhex(raw["block"][2:]))
            block[1] = block[1][:-1]
            raw["block"] = "0x" + codec.encode(block).hex()
        return raw

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["qc", "tx_root"])
def test_forged_block_is_never_indexed_and_the_indexer_fails_over(devnet: Devnet, chain: dict[str, Any],
                                                                  tmp_path: Path, mode: str) -> None:
    height = int(NodeClient(devnet.rpc_url).rpc("eth_getTransactionByHash", chain["dataset_tx"])["blockNumber"], 16)
    proxy = TamperProxy(devnet.rpc_url, height, mode)
    db = str(tmp_path / "t.db")
    from chainshare.bench import free_port_block

    mport = free_port_block(1)
    p = subprocess.Popen([*cli_command(), "explorer", "index", "--node", f"{proxy.url},{devnet.rpc_url}", "--db", db,
                          "--metrics-port", str(mport)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proxy.forged_served > 0, 120, "the proxy serves its forged block")
        metrics = wait_until(lambda: _failures(mport), 60, "the alert metric")
        assert metrics >= 1
        wait_until(lambda: _indexed(db) > height, 120, "the index passes the forged height")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        proxy.close()
    log = p.stderr.read().decode() if p.stderr else ""
    alerts = [json.loads(x) for x in log.splitlines() if x.startswith("{") and '"level": "error"' in x]
    assert alerts and alerts[0]["url"] == proxy.url and "ALERT" in alerts[0]["msg"]
    assert "failing over" in log
    # what is stored at that height is the real block and the real QC, from the honest node
    real = NodeSource(devnet.rpc_url).get_block(height)
    eng = create_db_engine(db)
    from sqlalchemy import text

    with eng.connect() as conn:
        row = conn.execute(text("SELECT hash, qc, tx_count FROM blocks WHERE height = :h"), {"h": height}).one()
        src = {r.url: r for r in conn.execute(text("SELECT url, state, failures FROM sources"))}
    assert bytes(row.hash) == real.block.hash and bytes(row.qc) == real.qc.encode()  # type: ignore[union-attr]
    assert row.tx_count == len(real.block.transactions)
    assert src[proxy.url].state == "rejected" and src[proxy.url].failures >= 1
    # the range refused from the proxy was recorded as missing, then filled from the honest node: the
    # index equals an uninterrupted run's to the same height, and no gap is left
    gaps = [x for x in map(json.loads, filter(lambda x: x.startswith("{"), log.splitlines()))
            if x["msg"] == "missing range recorded"]
    assert gaps and gaps[0]["first"] == height and gaps[0]["source"] == proxy.url, log[-3000:]
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM index_gaps")).scalar() == 0
    clean = str(tmp_path / "clean.db")
    assert _index(devnet, clean, _indexed(db)).wait(timeout=240) == 0
    assert compute_content_hash(eng) == compute_content_hash(create_db_engine(clean))


def _indexed(db: str) -> int:
    from sqlalchemy import text

    try:
        with create_db_engine(db).connect() as conn:
            return int(conn.execute(text("SELECT height FROM progress")).scalar() or 0)
    except Exception:
        return 0


def _failures(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("explorer_verification_failures_total{")]
    return sum(vals) if vals and sum(vals) > 0 else None


# --------------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def indexed_app(devnet: Devnet, chain: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from chainshare.explorer.api.app import create_explorer_app
    from chainshare.explorer.indexer.service import Indexer, IndexerConfig

    db = str(tmp_path_factory.mktemp("st") / "st.db")
    ix = Indexer(create_db_engine(db), IndexerConfig(urls=(devnet.rpc_url,)))
    ix.run(until_caught_up=True)
    return create_explorer_app(create_db_engine(db, readonly=True))


def test_openapi_fuzzing_finds_no_server_error(indexed_app: Any) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", indexed_app)
    failures: list[str] = []
    ops = list(schema.get_all_operations())
    assert len(ops) >= 14
    for result in ops:
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query}: {response.status_code}")

        run()
    assert not failures, failures[:10]


# --------------------------------------------------------------------------- rolling (gray) upgrade


def _serve(db: str) -> tuple[subprocess.Popen[bytes], str]:
    from chainshare.bench import free_port_block

    port = free_port_block(1)
    p = subprocess.Popen([*cli_command(), "explorer", "serve", "--db", db, "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(url), 60, f"explorer replica on {port}")
    return p, url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_replicas_of_two_schema_revisions_serve_side_by_side_during_an_expand_migration(
        devnet: Devnet, chain: dict[str, Any], tmp_path: Path) -> None:
    from chainshare.explorer.db.engine import apply_downgrade, get_head_revision, get_schema_revision

    db = str(tmp_path / "gray.db")
    first = chain["last_height"]
    assert _index(devnet, db, first).wait(timeout=240) == 0
    eng = create_db_engine(db)
    apply_downgrade(eng, "0001")  # the database as the previous release (schema 0001) left it
    assert get_schema_revision(eng) == "0001"
    old, old_url = _serve(db)  # starts on schema 0001: selects only the columns it finds
    new: subprocess.Popen[bytes] | None = None
    try:
        b = httpx.get(old_url + "/api/v1/blocks", params={"limit": 3}, timeout=30).json()
        assert b["items"][0]["height"] == first and b["items"][0]["size_bytes"] is None
        # expand: the upgraded indexer migrates to 0002 and writes the new column while `old` serves
        devnet.wait_for_head(first + 3, timeout=60)
        assert _index(devnet, db, first + 3).wait(timeout=240) == 0
        assert get_schema_revision(eng) == get_head_revision() != "0001"
        new, new_url = _serve(db)
        for url in (old_url, new_url):
            for path in ("/api/v1/blocks", f"/api/v1/blocks/{first + 2}", "/api/v1/txs", "/api/v1/status",
                         f"/api/v1/txs/{chain['dataset_tx']}",
                         "/api/v1/datasets/1/history", "/api/v1/search?q=agency1"):
                r = httpx.get(url + path, timeout=30)
                assert r.status_code == 200, (url, path, r.text[:300])
        top_old = httpx.get(old_url + "/api/v1/blocks", params={"limit": 1}, timeout=30).json()["items"][0]
        top_new = httpx.get(new_url + "/api/v1/blocks", params={"limit": 1}, timeout=30).json()["items"][0]
        assert top_old["height"] == top_new["height"] == first + 3
        assert top_old["size_bytes"] is None and top_new["size_bytes"] > 0
        assert httpx.get(new_url + f"/api/v1/blocks/{first}", timeout=30).json()["size_bytes"] is None
        # proofs of a block indexed before the leaf-hash columns existed come from its rows, and agree
        p_old = httpx.get(old_url + f"/api/v1/txs/{chain['dataset_tx']}", timeout=30).json()["proof"]
        p_new = httpx.get(new_url + f"/api/v1/txs/{chain['dataset_tx']}", timeout=30).json()["proof"]
        assert p_old == p_new and p_new["transaction"]["proof"]["size"] >= 1
    finally:
        for p in (old, new):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


# --------------------------------------------------------------------------- websocket head source


def test_indexer_follows_new_heads_over_the_node_websocket(devnet: Devnet, chain: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """``--follow ws`` subscribes to the node's ``newHeads`` (eth_subscribe) and indexes a block finalized
    after it started, without falling back to polling."""
    db = str(tmp_path / "ws.db")
    log_path = tmp_path / "index.log"
    with log_path.open("wb") as log_file:
        p = subprocess.Popen([*cli_command(), "explorer", "index", "--node", devnet.rpc_url, "--db", db,
                              "--follow", "ws", "--log-level", "info"], stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: b"following new heads over websocket" in log_path.read_bytes(), 60,
                       "the indexer to subscribe to new heads")
            wait_until(lambda: _indexed(db) >= chain["last_height"], 120, "the indexer to catch up")
            receipt = anchor(NodeClient(devnet.rpc_url), devnet.key_bytes)
            wait_until(lambda: _indexed(db) >= int(receipt["blockNumber"], 16), 60,
                       "the block finalized after the subscription to be indexed")
            assert b"head subscription lost" not in log_path.read_bytes(), log_path.read_text()[-2000:]
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
