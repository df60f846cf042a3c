"""What the explorer stores so a reader can tie its data to the chain: the validator set with its
proofs of possession (the proof bundle recomputes the parent header's validator_set_hash), the
certificates agencies were admitted with, and the block ranges the indexer knows it is missing
(recorded when a node serves a forged block, filled from another node, the index then equal to an
uninterrupted run's)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from chainkit import (
    GOVERNANCE,
    MEMBERSHIP,
    NOTARY,
    Account,
    Chain,
    account,
    call_data,
    make_genesis,
    revert_reason,
    sign_call,
    validator,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from chainshare import codec
from chainshare.crypto.ca import init_ca, issue_agency
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.keystore import decrypt_account_key
from chainshare.crypto.secp import address_of_private_key
from chainshare.execution.contracts.membership import compute_validator_set_hash, get_validator_sets
from chainshare.explorer.api.app import create_explorer_app, merge_ranges
from chainshare.explorer.bench import MemorySource
from chainshare.explorer.db import schema as s
from chainshare.explorer.db.content import compute_content_hash
from chainshare.explorer.db.engine import create_db_engine
from chainshare.explorer.indexer.service import Indexer, IndexerConfig
from chainshare.explorer.indexer.verify import FetchedBlock
from chainshare.explorer.indexer.writer import compute_certificate_row, record_gap, trim_gaps
from chainshare.ledger.types import STATUS_SUCCESS, Header

A = account("Agency A")
VALS = [validator(f"v{i}", "Agency A") for i in range(4)]
FORGED_HEIGHT = 6


def _fingerprint(pem: str) -> str:
    return "0x" + x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-validator chain of one agency (real CA certificate) that admits "Agency E" by a governance
    decision (propose, vote, execute) and "Agency F" by a batch decision, then anchors: 12 blocks, served
    from memory."""
    base = tmp_path_factory.mktemp("pki")
    ca = init_ca(base / "ca", password=None)
    a_cert = issue_agency(base / "ca", None, "Agency A", base / "a", key_password=None, kdf_light=True)
    e_cert = issue_agency(base / "ca", None, "Agency E", base / "e", key_password=None, kdf_light=True)
    f_cert = issue_agency(base / "ca", None, "Agency F", base / "f", key_password=None, kdf_light=True)
    genesis = make_genesis([("Agency A", [A.address], a_cert.cert_pem.encode())], VALS,
                           ca_certificate=ca.cert_pem.encode(), timestamp_ms=int(time.time() * 1000))
    chain = Chain(genesis, VALS[0], other_keys=VALS[1:])
    e_key = decrypt_account_key(json.loads((base / "e" / "account.json").read_text()), "")
    E = Account(e_key, address_of_private_key(e_key))
    nonces = {A.address: 0, E.address: 0}

    def send(to: bytes, data: bytes, sender: Account = A) -> bytes:
        receipt = chain.produce([sign_call(sender, to, data, nonces[sender.address])]).receipts[0]
        assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
        nonces[sender.address] += 1
        return receipt.output

    add = call_data("addAgency(string,string,address[],bytes)", "Agency E", "member",
                    [e_cert.address], e_cert.cert_pem.encode())
    (pid,) = eth_abi.decode(["uint256"], send(GOVERNANCE, call_data("propose(address,bytes,string)", MEMBERSHIP,
                                                                     add, "admit Agency E")))
    send(GOVERNANCE, call_data("vote(uint256,bool)", pid, True))
    send(GOVERNANCE, call_data("execute(uint256)", pid))
    # "Agency F" by a decision that runs several calls (Governance.executeBatch)
    add_f = call_data("addAgency(string,string,address[],bytes)", "Agency F", "member",
                      [f_cert.address], f_cert.cert_pem.encode())
    batch = call_data("executeBatch(address[],bytes[])", [NOTARY, MEMBERSHIP],
                      [call_data("anchor(bytes32)", b"\x07" * 32), add_f])
    (pid,) = eth_abi.decode(["uint256"], send(GOVERNANCE, call_data("propose(address,bytes,string)", GOVERNANCE,
                                                                     batch, "admit Agency F")))
    send(GOVERNANCE, call_data("vote(uint256,bool)", pid, True))
    send(GOVERNANCE, call_data("vote(uint256,bool)", pid, True), sender=E)
    send(GOVERNANCE, call_data("execute(uint256)", pid))
    while chain.chain.get_head().height < 12:
        send(NOTARY, call_data("anchor(bytes32)", keccak256(nonces[A.address].to_bytes(8, "big"))))
    blocks = []
    for h in range(chain.chain.get_head().height + 1):
        qc = chain.chain.get_qc(h) if h else None
        blocks.append((chain.chain.get_block(h).encode(), qc.encode() if qc else None,
                       codec.encode_trusted([r.to_list() for r in chain.chain.get_receipts(h)])))
    src = MemorySource(genesis, blocks, get_validator_sets(chain.chain.state))
    return {"src": src, "ca": ca.cert_pem, "a_cert": a_cert.cert_pem, "e_cert": e_cert.cert_pem,
            "f_cert": f_cert.cert_pem,
            "chain": chain, "head": len(blocks) - 1}


def _index(db: Path, *sources: Any, until_caught_up: bool = True) -> Indexer:
    ix = Indexer(create_db_engine(f"sqlite:///{db}"), IndexerConfig(urls=(), follow="poll", poll_interval=0.05),
                 sources=sources)
    ix.run(until_caught_up=until_caught_up)
    return ix


@pytest.fixture(scope="module")
def honest(net: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Engine:
    db = tmp_path_factory.mktemp("honest") / "ex.db"
    _index(db, net["src"])
    return create_db_engine(f"sqlite:///{db}")


def test_the_proof_bundle_carries_what_recomputes_the_parent_headers_validator_set_hash(
        net: dict[str, Any], honest: Engine) -> None:
    client = TestClient(create_explorer_app(honest))
    tx = client.get("/api/v1/txs", params={"limit": 1}).json()["items"][0]
    bundle = client.get(f"/tx/{tx['hash']}/proof.json").json()
    header = Header.from_list(codec.decode(bytes.fromhex(bundle["header"][2:])))
    parent_raw = bytes.fromhex(bundle["parent_header"][2:])
    parent = Header.from_list(codec.decode(parent_raw))
    assert keccak256(parent_raw) == header.parent_hash and parent.height == header.height - 1
    served = [{k: bytes.fromhex(v[k][2:]) if k in ("address", "bls_public_key", "bls_pop") else v[k]
               for k in ("name", "agency", "address", "bls_public_key", "bls_pop")} for v in bundle["validators"]]
    assert len(served) == 4 and served == [dict(v) for v in get_validator_sets(net["chain"].chain.state)[0].validators]
    assert compute_validator_set_hash(served) == parent.validator_set_hash
    genesis_raw = bytes.fromhex(bundle["genesis_header"][2:])  # epoch 0: block 0 names the same set
    assert "0x" + keccak256(genesis_raw).hex() == bundle["genesis_hash"] == "0x" + net["src"].get_block(0).block.hash.hex()
    assert Header.from_list(codec.decode(genesis_raw)).validator_set_hash == parent.validator_set_hash
    pops = client.get("/api/v1/validators").json()["epochs"][0]["items"]
    assert [p["bls_pop"] for p in pops] == ["0x" + v.pop.hex() for v in VALS]


def test_agency_certificates_and_the_ca_are_shown_as_the_chain_holds_them(net: dict[str, Any], honest: Engine) -> None:
    client = TestClient(create_explorer_app(honest))
    a = client.get("/api/v1/agencies/Agency A").json()["certificates"]
    e = client.get("/api/v1/agencies/Agency E").json()
    assert [c["admitted_height"] for c in a] == [0] and a[0]["fingerprint_sha256"] == _fingerprint(net["a_cert"])
    assert e["active"] and len(e["certificates"]) == 1
    cert = e["certificates"][0]
    assert cert["admitted_height"] == e["added_height"] > 0
    assert cert["fingerprint_sha256"] == _fingerprint(net["e_cert"]) and cert["pem"] == net["e_cert"]
    assert "O=Agency E" in cert["subject"] and cert["not_before_ms"] < cert["not_after_ms"]
    f = client.get("/api/v1/agencies/Agency F").json()
    assert [c["fingerprint_sha256"] for c in f["certificates"]] == [_fingerprint(net["f_cert"])]
    assert f["certificates"][0]["admitted_height"] == f["added_height"] > e["added_height"]
    ca = client.get("/api/v1/ca").json()
    assert ca["fingerprint_sha256"] == _fingerprint(net["ca"]) and cert["issuer"] == ca["subject"]
    page = client.get("/agency/Agency E").text
    assert cert["fingerprint_sha256"] in page and ca["fingerprint_sha256"] in page and "Certificates on chain" in page


class ForgingSource:
    """A node that serves block FORGED_HEIGHT with the QC of the block before it."""

    url = "memory://forger"

    def __init__(self, honest: MemorySource) -> None:
        self.honest = honest

    def __getattr__(self, name: str) -> Any:
        return getattr(self.honest, name)

    def get_block(self, height: int) -> FetchedBlock:
        f = self.honest.get_block(height)
        if height == FORGED_HEIGHT:
            other = self.honest.get_block(height - 1).qc
            assert f.qc is not None and other is not None
            return dataclasses.replace(f, qc=dataclasses.replace(f.qc, signature=other.signature))
        return f


def _gaps(engine: Engine) -> list[tuple[int, int, str | None]]:
    with engine.connect() as conn:
        return [(r.first_height, r.last_height, r.source) for r in conn.execute(select(s.index_gaps).order_by(s.index_gaps.c.first_height))]


def test_a_range_refused_from_one_node_is_recorded_then_filled_from_another(
        net: dict[str, Any], honest: Engine, tmp_path: Path) -> None:
    db = tmp_path / "gap.db"
    engine = create_db_engine(f"sqlite:///{db}")
    forger = Indexer(engine, IndexerConfig(urls=(), follow="poll", poll_interval=0.05),
                     sources=[ForgingSource(net["src"])])
    t = threading.Thread(target=forger.run)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (db.exists() and _has_gap(db)):
            time.sleep(0.05)
    finally:
        forger.stop.set()
        t.join(timeout=60)
    assert _gaps(engine) == [(FORGED_HEIGHT, net["head"], "memory://forger")]
    client = TestClient(create_explorer_app(engine))
    st = client.get("/api/v1/status").json()
    assert st["indexed_height"] == FORGED_HEIGHT - 1
    assert st["missing_ranges"] == [[FORGED_HEIGHT, net["head"]]]
    assert st["missing_blocks"] == net["head"] - FORGED_HEIGHT + 1
    assert "QC does not verify" in st["gaps"][0]["reason"]
    metrics = client.get("/metrics").text
    assert f"explorer_missing_blocks {net['head'] - FORGED_HEIGHT + 1}" in metrics
    assert "explorer_recorded_gaps 1" in metrics

    _index(db, net["src"])  # another node: the gap is filled
    assert _gaps(engine) == []
    st = TestClient(create_explorer_app(engine)).get("/api/v1/status").json()
    assert st["missing_ranges"] == [] and st["gaps"] == [] and st["indexed_height"] == net["head"]
    assert compute_content_hash(engine) == compute_content_hash(honest)


def _has_gap(db: Path) -> bool:
    with sqlite3.connect(db) as c:
        try:
            return c.execute("SELECT count(*) FROM index_gaps").fetchone()[0] > 0
        except sqlite3.OperationalError:  # not migrated yet
            return False


def test_gaps_merge_and_shrink_as_blocks_are_indexed(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'g.db'}")
    s.metadata.create_all(engine)
    with engine.begin() as conn:
        record_gap(conn, 10, 20, "node down", "http://a", 1)
        record_gap(conn, 21, 25, "forged block 21", "http://b", 2)  # adjacent: merged
        record_gap(conn, 40, 50, "node down", "http://a", 3)
        trim_gaps(conn, 12)
    assert _gaps(engine) == [(13, 25, "http://b"), (40, 50, "http://a")]
    with engine.begin() as conn:
        trim_gaps(conn, 45)
    assert _gaps(engine) == [(46, 50, "http://a")]
    assert merge_ranges([(46, 50), (1, 3), (4, 9), (48, 60)]) == [(1, 9), (46, 60)]


def test_proofs_of_possession_of_sets_indexed_before_0004_are_backfilled(
        net: dict[str, Any], honest: Engine, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(str(honest.url.database)) as a, sqlite3.connect(db) as b:
        a.backup(b)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE validator_sets SET bls_pop = NULL")
    engine = create_db_engine(f"sqlite:///{db}")
    TestClient(create_explorer_app(engine))  # serves without them meanwhile
    _index(db, net["src"])
    assert compute_content_hash(engine) == compute_content_hash(honest)
    with engine.connect() as conn:
        assert None not in conn.execute(select(s.validator_sets.c.bls_pop)).scalars().all()


def test_a_certificate_that_does_not_parse_is_not_shown() -> None:
    assert compute_certificate_row("x", 0, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n") is None


def test_migrations_create_exactly_the_schema_the_code_declares_and_downgrade_below_0004(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from chainshare.explorer.db.engine import (
        apply_downgrade,
        apply_migrations,
        get_head_revision,
        get_schema_revision,
    )

    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.db'}")
    apply_migrations(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), s.metadata) == []
    apply_downgrade(engine, "0003")
    with engine.connect() as conn:
        names = set(sqlite_tables(conn))
    assert not names & {"index_gaps", "agency_certificates", "credit_events", "credit_records"}
    assert get_schema_revision(engine) == "0003"
    apply_migrations(engine)
    assert get_schema_revision(engine) == get_head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), s.metadata) == []


def sqlite_tables(conn: Any) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_status_names_the_schema_revision_and_block_lists_leave_the_proof_material_out(honest: Engine,
                                                                                      tmp_path: Path) -> None:
    from chainshare.explorer.db.engine import get_head_revision, get_schema_revision

    client = TestClient(create_explorer_app(honest))
    assert client.get("/api/v1/status").json()["database"]["schema_revision"] == get_head_revision()
    page = client.get("/api/v1/blocks", params={"limit": 3}).json()["items"]
    assert len(page) == 3 and all("header" not in b and "qc" not in b for b in page)
    one = client.get(f"/api/v1/blocks/{page[0]['height']}").json()
    assert one["header"].startswith("0x") and one["qc"] is not None and one["qc_signers"]
    assert {k: one[k] for k in page[0]} == page[0]  # the list row is the block's own view
    assert get_schema_revision(create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")) is None
