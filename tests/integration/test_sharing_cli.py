"""Data sharing through the CLI and the REST API of a real one-node devnet (a ``chainshare node run``
process with its vault configured): publish (upload + on-chain registration), list, show, access
requests and their decisions, fetch and query of the agency's own dataset (served by the node
itself: one node, no P2P), revocation, and the audit trail; bad REST input is 4xx, never 500."""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import Devnet, DevnetPool, cli_json, run_cli, wait_until

from chainshare.crypto.hashing import keccak256
from chainshare.sharing import protocol as wire

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("sharing-cli")]

REPO = Path(__file__).resolve().parents[2]
OWNER_FULL_ACCESS = REPO / "contracts" / "policies" / "examples" / "owner_full_access.cedar"
ROWS = 60
SCHEMA = {"columns": [{"name": "citizen_id", "kind": "personal"}, {"name": "district", "kind": "string"},
                      {"name": "age", "kind": "integer"}], "min_group": 5}


def configure_data_plane(directory: Path) -> None:
    """Give node1 of a fresh devnet its TLS identity, a vault (with its own pseudonym secret) and its
    agency account."""
    node_dir = directory / "nodes" / "node1"
    config = (node_dir / "node.toml").read_text()
    if "[p2p]" not in config:
        config += '\n[p2p]\nca_cert = "../../ca/ca.crt"\nnode_cert = "keys/node.crt"\nnode_key = "keys/node.key"\n'
    if "[sharing]" not in config:
        config += ('\n[sharing]\nvault_dir = "vault"\n'
                   'account_keystore = "../../agencies/agency1/account.json"\n')
    (node_dir / "node.toml").write_text(config)


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Devnet:
    return devnet_pool.launch("sharing", prepare=configure_data_plane)


def cli(net: Devnet, *args: Any, code: int = 0) -> Any:
    proc = run_cli(*args, "--devnet", net.dir, "--as", "agency1", "--json")
    assert proc.returncode == code, f"exit {proc.returncode}; stderr: {proc.stderr}"
    return cli_json(proc) if code == 0 or proc.stdout.strip() else proc.stderr


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "people.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["citizen_id", "district", "age"])
        for i in range(ROWS):
            writer.writerow([f"CN{i:08d}", ("north", "south")[i % 2], 20 + i % 30])
    return path


@pytest.fixture(scope="module")
def published(net: Devnet, people: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    schema = tmp_path_factory.mktemp("schema") / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    result = cli(net, "dataset", "publish", people, "--title", "People", "--policy", OWNER_FULL_ACCESS,
                 "--schema", schema)
    return int(result["dataset_id"])


def test_publish_without_a_schema_infers_one_with_no_personal_column(net: Devnet, people: Path) -> None:
    copy = people.with_name("inferred.csv")
    copy.write_text(people.read_text() + "CN99999999,east,41\n")
    result = cli(net, "dataset", "publish", copy, "--title", "Inferred", "--policy", OWNER_FULL_ACCESS,
                 "--min-group", "8")
    assert result["schema_source"] == "inferred"
    assert result["schema"] == {"columns": [{"name": "citizen_id", "kind": "string"},
                                            {"name": "district", "kind": "string"},
                                            {"name": "age", "kind": "integer"}], "min_group": 8}
    shown = cli(net, "dataset", "show", result["dataset_id"])
    assert shown["owner"] == "agency1" and shown["content_hash"] == result["content_hash"]
    assert shown["schema"] == result["schema"]
    assert shown["policy_text"] == OWNER_FULL_ACCESS.read_text()
    assert [v["version"] for v in shown["versions"]] == [1]


def test_list_and_show_the_published_dataset(net: Devnet, published: int) -> None:
    listed = cli(net, "dataset", "list")
    assert published in [d["id"] for d in listed["items"]]
    shown = cli(net, "dataset", "show", published)
    assert shown["title"] == "People" and shown["schema"] == SCHEMA and shown["policy_id"] == f"ds{published}-p1"


def test_fetch_and_query_of_an_own_dataset_are_served_and_audited(net: Devnet, published: int, people: Path,
                                                                 tmp_path: Path) -> None:
    read = cli(net, "access", "request", published, "--action", "read", "--purpose", "cli test")
    assert read["allowed"] and read["policy_ids"] == [f"ds{published}-p1#0"] and read["grant_id"]
    out = tmp_path / "read.csv"
    fetched = cli(net, "dataset", "fetch", published, "--out", out)
    assert fetched["grant_id"] == read["grant_id"] and fetched["action"] == "read"
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    original = list(csv.DictReader(io.StringIO(people.read_text())))
    assert len(rows) == ROWS and all(r["citizen_id"].startswith("ps_") for r in rows)
    assert [(r["district"], r["age"]) for r in rows] == [(r["district"], r["age"]) for r in original]
    assert "CN00000001" not in out.read_text()

    identified = cli(net, "access", "request", published, "--action", "read_identified", "--purpose", "cli test")
    raw = tmp_path / "raw.csv"
    cli(net, "dataset", "fetch", published, "--out", raw, "--grant", identified["grant_id"])
    assert raw.read_bytes() == people.read_bytes()

    cli(net, "access", "request", published, "--action", "compute", "--purpose", "statistics")
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"select": [{"fn": "count"}, {"fn": "avg", "column": "age", "bounds": [0, 100]}],
                                 "group_by": ["district"], "epsilon": 10}))
    answer = cli(net, "dataset", "query", published, "--query", query)
    assert answer["columns"] == ["district", "count", "avg(age)"]
    # noisy (discrete Laplace, scale 0.3 on counts, 30 on the sum of ages): exact values are 30/34 and 30/35
    assert [g[0] for g in answer["groups"]] == ["north", "south"]
    assert all(abs(count - 30) <= 4 and abs(avg - exact) < 8
               for (_d, count, avg), exact in zip(answer["groups"], (34, 35), strict=True)), answer["groups"]
    assert answer["epsilon"] == 10.0
    net.wait_receipt(answer["record_tx"])
    net.wait_receipt(fetched["record_tx"])

    trail = cli(net, "audit", "--dataset", published)["items"]
    names = [item["event"] for item in trail]
    assert names[:2] == ["DatasetRegistered", "DatasetPolicySet"]
    assert names.count("DeliveryRecorded") >= 2 and "ComputationRecorded" in names
    assert [(i["block"], i["tx_index"], i["log_index"]) for i in trail] == \
           sorted((i["block"], i["tx_index"], i["log_index"]) for i in trail)
    delivered = [i["args"] for i in trail if i["event"] == "DeliveryRecorded"]
    assert {"grantId": read["grant_id"], "grantee": "agency1", "bytesDelivered": out.stat().st_size,
            "deliveredHash": fetched["delivered_hash"]}.items() <= delivered[0].items()
    # fetch returned only after matching the bytes to that record on its own chain
    assert fetched["recorded_height"] <= net.head() and delivered[0]["contentHash"] == fetched["content_hash"]


def test_a_denied_request_is_on_chain_and_exits_1(net: Devnet, people: Path, tmp_path: Path) -> None:
    policy = tmp_path / "compute_only.cedar"
    policy.write_text('permit (principal, action == Action::"compute", resource);\n')
    dataset_id = cli(net, "dataset", "publish", people, "--title", "Compute only", "--policy", policy)["dataset_id"]
    denied = cli(net, "access", "request", dataset_id, "--action", "read", "--purpose", "curious", code=1)
    assert denied["allowed"] is False and denied["grant_id"] is None
    proc = run_cli("dataset", "fetch", dataset_id, "--out", tmp_path / "x.csv", "--devnet", net.dir,
                   "--as", "agency1")
    assert proc.returncode == 2 and "holds no 'read' or 'read_identified' grant" in proc.stderr
    assert not (tmp_path / "x.csv").exists()
    decisions = [i for i in cli(net, "audit", "--dataset", dataset_id)["items"] if i["event"] == "AccessDecided"]
    assert decisions[-1]["args"]["allowed"] is False


def test_a_revoked_grant_no_longer_fetches(net: Devnet, published: int, tmp_path: Path) -> None:
    grant = cli(net, "access", "request", published, "--action", "read", "--purpose", "short")["grant_id"]
    assert cli(net, "access", "show", grant)["valid"] is True
    revoked = cli(net, "access", "revoke", grant)
    assert revoked["revoked_by"] == "agency1"
    shown = cli(net, "access", "show", grant)
    assert shown["valid"] is False and shown["invalid_reason"] == f"grant {grant} was revoked"
    proc = run_cli("dataset", "fetch", published, "--grant", grant, "--out", tmp_path / "r.csv", "--devnet",
                   net.dir, "--as", "agency1")
    assert proc.returncode == 2 and f"grant {grant} was revoked" in proc.stderr


def test_rest_refuses_bad_input_with_4xx(net: Devnet, published: int) -> None:
    api = net.api_url
    assert httpx.get(f"{api}/datasets/abc").status_code == 400
    assert httpx.get(f"{api}/datasets/0").status_code == 400
    missing = httpx.get(f"{api}/datasets/999999")
    assert missing.status_code == 404 and "no dataset 999999" in missing.json()["error"]["message"]
    assert httpx.get(f"{api}/grants/999999").status_code == 404
    assert httpx.get(f"{api}/datasets/{published}/audit", params={"after": "x"}).status_code == 400
    data = b"a,b\n1,2\n"
    digest = "0x" + keccak256(data).hex()
    unsigned = httpx.post(f"{api}/vault", params={"format": "csv"}, content=data,
                          headers={wire.CONTENT_HASH_HEADER: digest})
    assert unsigned.status_code == 400 and wire.SIGNATURE_HEADER in unsigned.text
    stranger = secrets.token_bytes(32)

    def signed(key: bytes, make: Any, ts: int | None = None) -> dict[str, str]:
        ts, nonce = ts or int(time.time()), secrets.token_bytes(16)
        return {wire.SIGNATURE_HEADER: "0x" + wire.sign_personal_message(key, make(ts, nonce)).hex(),
                wire.TIMESTAMP_HEADER: str(ts), wire.NONCE_HEADER: "0x" + nonce.hex()}

    def upload(ts: int, nonce: bytes) -> str:
        return wire.compute_upload_message(bytes.fromhex(digest[2:]), "node1", net.chain_id, ts, nonce)

    refused = httpx.post(f"{api}/vault", params={"format": "csv"}, content=data,
                         headers={wire.CONTENT_HASH_HEADER: digest, **signed(stranger, upload)})
    assert refused.status_code == 403 and "no member agency" in refused.json()["error"]["message"]
    key = net.key_bytes
    unsent = httpx.post(f"{api}/vault", params={"format": "csv"}, content=data,  # no nonce
                        headers={wire.CONTENT_HASH_HEADER: digest, **signed(key, upload)} | {wire.NONCE_HEADER: ""})
    assert unsent.status_code == 400 and wire.NONCE_HEADER in unsent.text
    bad_schema = httpx.post(f"{api}/vault", params={"format": "csv"}, content=data,
                            headers={wire.CONTENT_HASH_HEADER: digest, **signed(key, upload),
                                     wire.SCHEMA_HEADER: base64.urlsafe_b64encode(b'{"columns": 3}').decode()})
    assert bad_schema.status_code == 400 and "columns" in bad_schema.json()["error"]["message"]
    old = httpx.post(f"{api}/datasets/{published}/fetch", json={"grant_id": None},
                     headers=signed(key, lambda ts, nonce: wire.compute_fetch_message(published, None, "node1",
                                                                                      net.chain_id, ts, nonce),
                                    int(time.time()) - 3600))
    assert old.status_code == 403 and "more than 300 s away from this node's clock" in old.json()["error"]["message"]
    bad_query = httpx.post(f"{api}/datasets/{published}/query", json={"query": "not an object"})
    assert bad_query.status_code == 400


def test_the_sharing_api_is_in_the_openapi_document(net: Devnet) -> None:
    paths = httpx.get(f"{net.api_url}/openapi.json").json()["paths"]
    for path in ("/datasets", "/datasets/{dataset_id}", "/datasets/{dataset_id}/audit", "/grants/{grant_id}",
                 "/vault", "/datasets/{dataset_id}/fetch", "/datasets/{dataset_id}/query"):
        assert path in paths, path
    assert "application/octet-stream" in paths["/vault"]["post"]["requestBody"]["content"]


def test_the_node_keeps_no_copy_of_a_fetched_dataset(net: Devnet, published: int, tmp_path: Path) -> None:
    cli(net, "access", "request", published, "--action", "read", "--purpose", "no copy")
    cli(net, "dataset", "fetch", published, "--out", tmp_path / "x.csv")
    spool = net.dir / "nodes" / "node1" / "vault" / "incoming"
    wait_until(lambda: not [p for p in spool.iterdir() if not p.name.startswith("replay-")], 10, "an empty spool")
