"""REST API under /api/v1 (httpx), /healthz and /metrics of a real node: reads agree with JSON-RPC,
keyset pagination walks the whole chain, Merkle proofs verify against the header alone, and bad
input is a 4xx with an error body, never a 500."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak
from netkit import ANCHORED_TOPIC, Devnet, anchor_data, load_artifact, sign_call, tx_hash_of, wait_until
from prometheus_client.parser import text_string_to_metric_families

from chainshare import codec
from chainshare.bench import presign_anchors
from chainshare.ledger.merkle import InclusionProof, verify_inclusion_proof
from chainshare.ledger.types import Block, Header, QuorumCertificate, Receipt

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("rest")]


@pytest.fixture(scope="module")
def anchors(devnet: Devnet) -> list[dict[str, Any]]:
    """Five anchors submitted in one JSON-RPC batch (so blocks with several transactions exist)."""
    raws = presign_anchors(devnet.key_bytes, devnet.chain_id, devnet.nonce(tag="pending"), 5, os.urandom(16))
    r = devnet.post([{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
                     for i, raw in enumerate(raws)])
    hashes = [a["result"] for a in sorted(r.json(), key=lambda a: a["id"])]
    assert hashes == [tx_hash_of(raw) for raw in raws]
    receipts = [devnet.wait_receipt(h) for h in hashes]
    assert all(rc["status"] == "0x1" for rc in receipts)
    return receipts


def error_body(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] and body["error"]["message"], body
    return dict(body["error"])


def test_status_reports_chain_head_and_genesis(devnet: Devnet) -> None:
    r = devnet.get("/status")
    assert r.status_code == 200
    status = r.json()
    assert status["chain_id"] == devnet.chain_id
    assert status["genesis_hash"] == devnet.info["genesis_hash"]
    assert status["validators"] == 1
    head = status["head"]
    assert head["height"] >= 1 and status["finalized_height"] == head["height"]
    block = devnet.rpc("eth_getBlockByNumber", hex(head["height"]), False)
    assert block["hash"] == head["hash"] and int(block["timestampMs"], 16) == head["timestamp_ms"]


def test_blocks_keyset_pagination_walks_the_chain_without_gaps(devnet: Devnet) -> None:
    first = devnet.get("/blocks", limit=7).json()
    heights = [int(b["number"], 16) for b in first["items"]]
    top = heights[0]
    assert top >= 1
    assert heights == list(range(top, top - len(heights), -1))
    seen, page = list(heights), first
    while page["next_before"] is not None:
        assert page["next_before"] == int(page["items"][-1]["number"], 16)
        page = devnet.get("/blocks", before=page["next_before"], limit=7).json()
        assert 1 <= len(page["items"]) <= 7
        seen += [int(b["number"], 16) for b in page["items"]]
    assert seen == list(range(top, -1, -1))  # every block once, newest first, down to genesis
    assert devnet.get("/blocks", before=0).json() == {"items": [], "next_before": None}
    for b in first["items"]:
        if b["number"] == "0x0":
            assert b["qc"] is None  # genesis is certified by nothing but its hash
            continue
        assert b["qc"]["blockHash"] == b["hash"] and int(b["qc"]["height"], 16) == int(b["number"], 16)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"before": -1}])
def test_blocks_rejects_bad_pagination_parameters(devnet: Devnet, params: dict[str, Any]) -> None:
    r = devnet.get("/blocks", **params)
    assert r.status_code == 400
    error_body(r)


def test_block_by_height_hash_and_latest_agree(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    receipt = anchors[0]
    height = int(receipt["blockNumber"], 16)
    by_height = devnet.get(f"/blocks/{height}").json()
    by_hash = devnet.get(f"/blocks/{receipt['blockHash']}").json()
    assert by_height == by_hash
    assert by_height["hash"] == receipt["blockHash"]
    assert receipt["transactionHash"] in by_height["transactions"]
    assert by_height["qc"]["blockHash"] == by_height["hash"] and by_height["qc"]["signerIndices"] == [0]
    rpc_block = devnet.rpc("eth_getBlockByNumber", hex(height), False)
    assert {k: by_height[k] for k in rpc_block} == rpc_block
    full = devnet.get(f"/blocks/{height}", full="true").json()
    assert [t["hash"] for t in full["transactions"]] == by_height["transactions"]
    latest = devnet.get("/blocks/latest").json()
    assert int(latest["number"], 16) >= height
    assert devnet.get("/blocks/earliest").json()["hash"] == devnet.info["genesis_hash"]


def test_block_transactions_lists_transactions_with_receipts(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    height = int(anchors[0]["blockNumber"], 16)
    r = devnet.get(f"/blocks/{height}/transactions")
    assert r.status_code == 200
    body = r.json()
    assert body["height"] == height
    block = devnet.rpc("eth_getBlockByNumber", hex(height), False)
    assert [i["transaction"]["hash"] for i in body["items"]] == block["transactions"]
    for item in body["items"]:
        assert item["receipt"]["transactionHash"] == item["transaction"]["hash"]
        assert item["receipt"] == devnet.rpc("eth_getTransactionReceipt", item["transaction"]["hash"])
    assert devnet.get(f"/blocks/{anchors[0]['blockHash']}/transactions").json() == body


def test_transaction_and_receipt_match_json_rpc(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    for receipt in anchors:
        h = receipt["transactionHash"]
        tx = devnet.get(f"/transactions/{h}")
        assert tx.status_code == 200 and tx.json() == devnet.rpc("eth_getTransactionByHash", h)
        rc = devnet.get(f"/transactions/{h}/receipt")
        assert rc.status_code == 200 and rc.json() == receipt
    unknown = "0x" + os.urandom(32).hex()
    for suffix in ("", "/receipt", "/proof"):
        r = devnet.get(f"/transactions/{unknown}{suffix}")
        assert r.status_code == 404 and error_body(r)["type"] == "NotFound"


def test_inclusion_proofs_verify_against_the_header_alone(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    for receipt in anchors:
        r = devnet.get(f"/transactions/{receipt['transactionHash']}/proof")
        assert r.status_code == 200
        proof = r.json()
        encoded = bytes.fromhex(proof["header"]["encoded"][2:])
        assert "0x" + keccak(encoded).hex() == proof["block_hash"] == receipt["blockHash"]
        header = Header.from_list(codec.decode(encoded))
        assert header.height == proof["block_height"] == int(receipt["blockNumber"], 16)
        assert "0x" + header.tx_root.hex() == proof["header"]["tx_root"]
        assert "0x" + header.receipts_root.hex() == proof["header"]["receipts_root"]

        tx_leaf = bytes.fromhex(proof["transaction"]["leaf"][2:])
        assert "0x" + keccak(tx_leaf).hex() == receipt["transactionHash"]  # the leaf is the raw tx
        tx_proof = to_proof(proof["transaction"]["proof"])
        assert tx_proof.index == int(receipt["transactionIndex"], 16)
        assert verify_inclusion_proof(tx_leaf, tx_proof, header.tx_root)

        rc_leaf = bytes.fromhex(proof["receipt"]["leaf"][2:])
        decoded = Receipt.from_list(codec.decode(rc_leaf))
        assert decoded.status == 1 and decoded.gas_used == int(receipt["gasUsed"], 16)
        assert len(decoded.logs) == 1 and "0x" + decoded.logs[0].topics[0].hex() == ANCHORED_TOPIC
        rc_proof = to_proof(proof["receipt"]["proof"])
        assert verify_inclusion_proof(rc_leaf, rc_proof, header.receipts_root)

        # The check is meaningful: a changed leaf or the other root does not verify.
        assert not verify_inclusion_proof(tx_leaf + b"\x00", tx_proof, header.tx_root)
        assert not verify_inclusion_proof(rc_leaf, rc_proof, header.tx_root)
        assert proof["qc"]["blockHash"] == proof["block_hash"]


def to_proof(j: dict[str, Any]) -> InclusionProof:
    return InclusionProof(j["index"], j["size"], tuple(bytes.fromhex(p[2:]) for p in j["path"]))


def test_post_transaction_returns_202_and_the_hash(devnet: Devnet) -> None:
    raw = sign_call(devnet.key_bytes, devnet.chain_id, devnet.nonce(tag="pending"), devnet.contract_address("Notary"),
                    anchor_data(os.urandom(32)))
    r = devnet.http.post(devnet.api_url + "/transactions", json={"raw": "0x" + raw.hex()})
    assert r.status_code == 202
    assert r.json() == {"hash": tx_hash_of(raw)}
    assert devnet.wait_receipt(tx_hash_of(raw))["status"] == "0x1"
    replay = devnet.http.post(devnet.api_url + "/transactions", json={"raw": "0x" + raw.hex()})
    assert 400 <= replay.status_code < 500 and "already" in error_body(replay)["message"]


@pytest.mark.parametrize("body, status", [
    ({"raw": "0x1234"}, 400),
    ({"raw": "not hex"}, 400),
    ({"raw": "0x"}, 400),
    ({"raw": 5}, 400),
    ({}, 400),
    ("stranger", 403),
])
def test_post_bad_transaction_is_a_4xx_with_an_error_body(devnet: Devnet, body: Any, status: int) -> None:
    if body == "stranger":
        body = {"raw": "0x" + sign_call(Account.create().key, devnet.chain_id, 0, devnet.contract_address("Notary"),
                                        anchor_data(os.urandom(32))).hex()}
    r = devnet.http.post(devnet.api_url + "/transactions", json=body)
    assert r.status_code == status, r.text
    error_body(r)


def test_post_invalid_json_body_is_400(devnet: Devnet) -> None:
    r = devnet.http.post(devnet.api_url + "/transactions", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert r.status_code == 400
    error_body(r)


def test_post_body_over_the_limit_is_413(devnet: Devnet) -> None:
    r = devnet.http.post(devnet.api_url + "/transactions", content=b"x" * (2 * 1024 * 1024),
                         headers={"content-type": "application/json"})
    assert r.status_code == 413
    error_body(r)


def test_chunked_post_body_over_the_limit_is_413(devnet: Devnet) -> None:
    def chunks() -> Any:
        for _ in range(32):
            yield b"x" * 65536

    r = devnet.http.post(devnet.api_url + "/transactions", content=chunks(),
                         headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_agencies_list_the_founding_agency(devnet: Devnet) -> None:
    items = devnet.get("/agencies").json()["items"]
    assert [a["name"] for a in items] == ["agency1"]
    one = devnet.get("/agencies/agency1").json()
    assert one == items[0]
    assert one["active"] is True and one["role"] == "member" and one["added_height"] == 0
    assert [a.lower() for a in one["accounts"]] == [devnet.address.lower()]
    assert one["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    r = devnet.get("/agencies/no-such-agency")
    assert r.status_code == 404 and "no-such-agency" in error_body(r)["message"]


def test_validators_list_the_block_proposer(devnet: Devnet) -> None:
    items = devnet.get("/validators").json()["items"]
    assert len(items) == 1
    v = items[0]
    assert v["index"] == 0 and v["name"] == "node1" and v["agency"] == "agency1"
    assert devnet.rpc("eth_getBlockByNumber", "latest", False)["miner"] == v["address"]
    assert len(bytes.fromhex(v["bls_public_key"][2:])) == 48


def test_contracts_match_devnet_json_and_abi_artifacts(devnet: Devnet) -> None:
    contracts = devnet.get("/contracts").json()
    assert {"Membership", "Governance", "Notary"} <= set(contracts)
    assert set(contracts) == set(devnet.info["contracts"])
    for name, c in contracts.items():
        assert c["address"].lower() == devnet.info["contracts"][name].lower()
        art = load_artifact(name)
        assert art["address"].lower() == c["address"].lower()
        assert c["abi"] == art["abi"]


def test_events_filters(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    notary = devnet.contract_address("Notary")
    everything = devnet.get("/events", address=notary, topic0=ANCHORED_TOPIC, limit=1000).json()
    mine = {lg["transactionHash"] for lg in everything["items"]}
    assert {r["transactionHash"] for r in anchors} <= mine
    assert everything["truncated"] is False
    digest_topic = anchors[2]["logs"][0]["topics"][1]
    one = devnet.get("/events", topic0=ANCHORED_TOPIC, topic1=digest_topic).json()["items"]
    assert [lg["transactionHash"] for lg in one] == [anchors[2]["transactionHash"]]
    assert one[0] == anchors[2]["logs"][0]
    last = max(int(r["blockNumber"], 16) for r in anchors)
    later = devnet.get("/events", address=notary, from_block=last + 1).json()["items"]
    assert not {lg["transactionHash"] for lg in later} & {r["transactionHash"] for r in anchors}
    truncated = devnet.get("/events", address=notary, limit=2).json()
    assert len(truncated["items"]) == 2 and truncated["truncated"] is True
    assert devnet.get("/events", address=devnet.contract_address("Membership")).json()["items"] == []
    bad = devnet.get("/events", from_block=5, to_block=1)
    assert bad.status_code == 400 and error_body(bad)


def test_genesis_is_the_document_the_network_was_created_from(devnet: Devnet) -> None:
    served = devnet.get("/genesis").json()
    on_disk = json.loads((devnet.dir / "genesis.json").read_text())
    for key in ("format", "chain_id", "timestamp_ms", "ca_certificate", "params"):
        assert served[key] == on_disk[key], key
    assert [a["name"] for a in served["agencies"]] == [a["name"] for a in on_disk["agencies"]]
    assert [v["bls_public_key"] for v in served["validators"]] == [v["bls_public_key"] for v in on_disk["validators"]]


def test_raw_block_decodes_to_the_served_block(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    height = int(anchors[0]["blockNumber"], 16)
    raw = devnet.get(f"/blocks/{height}/raw").json()
    assert raw["height"] == height
    block = Block.decode(bytes.fromhex(raw["block"][2:]))
    assert "0x" + block.hash.hex() == anchors[0]["blockHash"]
    assert ["0x" + keccak(t).hex() for t in block.transactions] == \
        devnet.rpc("eth_getBlockByNumber", hex(height), False)["transactions"]
    qc = QuorumCertificate.from_list(codec.decode(bytes.fromhex(raw["qc"][2:])))
    assert qc.block_hash == block.hash and qc.height == height
    receipts = [Receipt.from_list(x) for x in codec.decode(bytes.fromhex(raw["receipts"][2:]))]
    assert len(receipts) == len(block.transactions) and all(r.status == 1 for r in receipts)
    assert devnet.get(f"/blocks/{anchors[0]['blockHash']}/raw").json() == raw


def test_openapi_document_lists_the_endpoints(devnet: Devnet) -> None:
    doc = devnet.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    expected = {"/status", "/blocks", "/blocks/{block_id}", "/blocks/{block_id}/transactions",
                "/blocks/{block_id}/raw", "/transactions", "/transactions/{tx_hash}",
                "/transactions/{tx_hash}/receipt", "/transactions/{tx_hash}/proof", "/agencies",
                "/agencies/{name}", "/validators", "/contracts", "/events", "/genesis"}
    assert expected <= set(doc["paths"])
    assert "post" in doc["paths"]["/transactions"]


@pytest.mark.parametrize("path", [
    "/blocks/-1", "/blocks/abc", "/blocks/0x12", "/blocks/99999999999999999999", "/blocks/9999999999999999999",
    "/blocks/0x" + "00" * 32, "/blocks/%00", "/blocks/1.5", "/blocks/ 1", "/blocks/abc/transactions",
    "/blocks/999999/transactions", "/blocks/abc/raw", "/blocks/999999/raw", "/transactions/0x12",
    "/transactions/" + "00" * 32, "/transactions/0x" + "zz" * 32 + "/receipt", "/transactions/0x12/proof",
    "/agencies/" + "x" * 200, "/agencies/%ff%fe", "/events?address=0x12", "/events?topic0=zz",
    "/events?from_block=-1", "/events?from_block=99999999999999999999999999999", "/blocks?before=abc",
])
def test_malformed_path_params_are_4xx_never_500(devnet: Devnet, path: str) -> None:
    r = devnet.http.get(devnet.api_url + path)
    assert r.status_code in (200, 400, 404, 422), (path, r.status_code, r.text[:200])
    if r.status_code != 200:
        error_body(r)
    else:
        assert path.startswith("/events")


def test_unknown_rest_route_has_the_error_body(devnet: Devnet) -> None:
    r = devnet.get("/no-such-endpoint")
    assert r.status_code == 404
    error_body(r)


def test_healthz_reports_ok_and_the_head(devnet: Devnet) -> None:
    before = devnet.head()
    r = devnet.http.get(devnet.rpc_url + "/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["head"] >= before


def test_metrics_are_prometheus_text_with_the_head_height(devnet: Devnet, anchors: list[dict[str, Any]]) -> None:
    before = devnet.head()
    r = devnet.http.get(devnet.rpc_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    head = families["chainshare_head_height"].samples[0].value
    assert head >= before
    assert families["chainshare_transactions_finalized"].samples[0].value >= len(anchors)
    assert "chainshare_mempool_transactions" in families
    # the node froze its start-up objects out of the garbage collector (chainshare.gcpolicy); the collector's
    # own figures are there for operators to watch
    assert families["chainshare_gc_frozen_objects"].samples[0].value > 10_000
    assert {s.labels["generation"] for s in families["python_gc_collections"].samples} == {"0", "1", "2"}
    methods = {s.labels.get("method") for s in families["chainshare_rpc_requests"].samples}
    assert "eth_sendRawTransaction" in methods
    wait_until(lambda: float(next(
        s.value for f in text_string_to_metric_families(devnet.http.get(devnet.rpc_url + "/metrics").text)
        if f.name == "chainshare_head_height" for s in f.samples)) > head, 10, "chainshare_head_height to grow")
