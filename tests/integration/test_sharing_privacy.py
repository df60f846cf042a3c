"""A hostile member agency against the data plane of a real 4-validator devnet (issue 9, items 1, 3, 6):
``chainshare node run`` processes on 127.0.0.1 over mutual TLS; agency1 (node1) owns the datasets.

1. Pseudonyms cannot be reversed or linked by a grantee: agency2 and agency3 each fetch the same dataset
   under ``read`` (the real CLI); agency2 then takes every file and key its node holds (its config and
   what it references, its keys, its vault's sealed secrets opened with its own node key) and tries each
   as the pseudonym key, under the old schemes and the current one, over the dataset's national IDs and 20,000
   decoys: no pseudonym it received is recomputed, and the two grantees' pseudonyms of the same person
   differ. As an auditor, the test also opens node1's secret and checks that it (and the key derived
   for agency2) explains agency2's pseudonyms and appears in no file of node2.
2. Revocation stops a running delivery and nothing decryptable arrives without a final on-chain record:
   node2, run by the attacker (a test-process ``P2PNode`` with node2's real certificate and key, the
   real process stopped), fetches a 16 MiB dataset and holds back its acknowledgements; agency1 revokes
   the grant with the CLI; the owner aborts at its next chunk. With node2's own key the attacker tries to
   unwrap a key from every message it received and decrypt the chunks: nothing. A normal delivery's key
   arrives only once its DeliveryRecorded is final on node1's chain.
3. A signed REST request cannot be replayed after a restart: a fetch, a query and an upload signed by
   agency2 for node2 are served once; node2 restarts; the same requests get 403, as does a request
   signed for another node (audience).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import random
import secrets
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import DevnetPool, wait_until
from test_sharing_network import Consortium, RogueNode, assert_no_leak, cli

from chainshare.crypto.envelope import iter_decrypt_pieces, open_vault_key, unwrap_key
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError
from chainshare.sharing import protocol as wire
from chainshare.sharing.pseudonym import Pseudonymizer, derive_pseudonym_key, pseudonymize
from chainshare.sharing.schema import canonical_json
from chainshare.sharing.vault import compute_delivery_context

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("sharing-privacy")]

NODES = 4
ROWS = 60
DISTRICTS = ("north", "south", "east", "west")
POLICY = ('permit (principal == Agency::"agency2", action in [Action::"read", Action::"read_identified", '
          'Action::"compute"], resource);\n'
          'permit (principal == Agency::"agency3", action == Action::"read", resource);\n')
SCHEMA = {"columns": [{"name": "national_id", "kind": "personal"}, {"name": "name", "kind": "personal"},
                      {"name": "district", "kind": "string"}, {"name": "age", "kind": "integer"}], "min_group": 5}
BIG_BYTES = 16 * 1024 * 1024
_DELIVERY_AAD = b"chainshare/delivery/v1\x00"  # vault.py: the envelope AAD prefix of a delivery


def national_id(i: int) -> str:
    return f"{310_000_000 + 7919 * i:09d}"


PEOPLE = [{"national_id": national_id(i), "name": f"Ottilie Marchbanks-{i:02d}", "district": DISTRICTS[i % 4],
           "age": 25 + i % 40} for i in range(ROWS)]


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Consortium:
    return Consortium(devnet_pool.start("privacy", NODES))


@dataclass(frozen=True)
class Published:
    people: int
    big: int
    big_hash: bytes


@pytest.fixture(scope="module")
def published(net: Consortium, tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("privacy-data")
    (base / "policy.cedar").write_text(POLICY)
    (base / "schema.json").write_text(json.dumps(SCHEMA))
    with (base / "people.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["national_id", "name", "district", "age"])
        writer.writeheader()
        writer.writerows(PEOPLE)
    people = cli(net, "agency1", "dataset", "publish", base / "people.csv", "--title", "People", "--policy",
                 base / "policy.cedar", "--schema", base / "schema.json")
    rng = random.Random(9)
    line = "record,district,amount\n"
    with (base / "big.csv").open("w") as file:
        file.write(line)
        size = len(line)
        i = 0
        while size < BIG_BYTES:
            row = f"r{i:08d},{DISTRICTS[i % 4]},{rng.randrange(10**9)}\n"
            file.write(row)
            size += len(row)
            i += 1
    big = cli(net, "agency1", "dataset", "publish", base / "big.csv", "--title", "Ledger", "--policy",
              base / "policy.cedar")
    return Published(int(people["dataset_id"]), int(big["dataset_id"]), bytes.fromhex(big["content_hash"][2:]))


def grant(net: Consortium, agency: str, dataset_id: int, action: str) -> int:
    granted = cli(net, agency, "access", "request", dataset_id, "--action", action, "--purpose", "privacy tests")
    assert granted["allowed"] is True, granted
    return int(granted["grant_id"])


def metric(net: Consortium, node: str, name: str) -> float:
    text = httpx.get(net.rpc_url(node) + "/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} is not in the /metrics of {node}"
    return values[0]


# --------------------------------------------------------------------------- 1. pseudonyms


def node_files(net: Consortium, node: str, agency: str) -> list[Path]:
    """Every file the operator of ``node`` holds: its directory, its agency's, and whatever its
    configuration names (relative paths resolved as the node does)."""
    node_dir = net.dir / "nodes" / node
    files = [p for p in (*node_dir.rglob("*"), *(net.dir / "agencies" / agency).rglob("*")) if p.is_file()]
    config = tomllib.loads((node_dir / "node.toml").read_text())
    for section in config.values():
        for value in section.values() if isinstance(section, dict) else ():
            if isinstance(value, str) and ("/" in value or "." in value):
                path = (node_dir / value).resolve()
                if path.is_file():
                    files.append(path)
    return sorted(set(files))


def candidate_secrets(net: Consortium, node: str, agency: str) -> list[bytes]:
    """What could be a pseudonym key among the node's files: every small file raw and hex-decoded, and
    every secret its vault holds sealed, opened with the node's own key."""
    out: set[bytes] = set()
    node_key = (net.keys_dir(node) / "node.key").read_bytes()
    for path in node_files(net, node, agency):
        if path.stat().st_size > 64 * 1024 or path.suffix == ".log":
            continue
        data = path.read_bytes()
        if len(data) >= 32:
            out.add(data)
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            decoded = bytes.fromhex(data.decode().strip().removeprefix("0x"))
            if len(decoded) >= 32:
                out.add(decoded)
        with contextlib.suppress(ChainshareError, ValueError):
            out.add(open_vault_key(node_key, data))
    return sorted(out)


def old_schemes(value: str, key: bytes) -> set[str]:
    """The pseudonyms of the earlier schemes: HMAC-SHA256 truncated to 128 bits, under the
    consortium key (v1) and under a per-grantee key (v2)."""
    return {"ps_" + hmac.new(key, f"chainshare/pseudonym/{v}\x00".encode() + value.encode(), hashlib.sha256)
            .digest()[:16].hex() for v in ("v1", "v2")}


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_grantee_cannot_recompute_or_link_the_pseudonyms_it_receives(
        net: Consortium, published: Published, tmp_path: Path) -> None:
    ds = published.people
    for agency in ("agency2", "agency3"):
        grant(net, agency, ds, "read")
    received = {}
    for agency in ("agency2", "agency3"):
        out = tmp_path / f"{agency}.csv"
        fetched = cli(net, agency, "dataset", "fetch", ds, "--out", out)
        assert fetched["action"] == "read" and fetched["recorded_height"] >= 1
        rows = read_rows(out)
        assert [(r["district"], int(r["age"])) for r in rows] == [(p["district"], p["age"]) for p in PEOPLE]
        assert all(r["national_id"].startswith("ps_") and r["name"].startswith("ps_") for r in rows)
        assert "Marchbanks" not in out.read_text() and national_id(3) not in out.read_text()
        received[agency] = rows
    two, three = received["agency2"], received["agency3"]
    # The same person reaches two grantees under unrelated pseudonyms: they cannot join on them.
    assert all(a["national_id"] != b["national_id"] for a, b in zip(two, three, strict=True))
    assert not {r["national_id"] for r in two} & {r["national_id"] for r in three}
    assert not {r["name"] for r in two} & {r["name"] for r in three}

    # agency2 attacks: every secret its node holds, as the key of either scheme, over every candidate ID.
    targets = {r["national_id"] for r in two}
    rng = random.Random(1)
    candidates = [p["national_id"] for p in PEOPLE] + [f"{rng.randrange(10**9):09d}" for _ in range(20_000)]
    secrets_held = candidate_secrets(net, "node2", "agency2")
    assert len(secrets_held) >= 3  # at least its keys, its vault key and its own pseudonym secret
    for key in secrets_held:
        keys = [key, derive_pseudonym_key(key, "agency1", "agency2", ds)]
        for k in keys:
            current = Pseudonymizer(k).text
            hits = [c for c in candidates if current(c) in targets or not targets.isdisjoint(old_schemes(c, k))]
            assert hits == [], f"agency2 recomputed the pseudonyms of {hits[:3]} with a secret its node holds"

    # The auditor's view: node1's secret (opened with node1's key) explains agency2's pseudonyms exactly,
    # and neither it nor the key derived for agency2 is anywhere in node2's files.
    owner_secret = open_vault_key((net.keys_dir("node1") / "node.key").read_bytes(),
                                  (net.dir / "nodes" / "node1" / "vault" / "pseudonym.secret").read_bytes())
    derived = derive_pseudonym_key(owner_secret, "agency1", "agency2", ds)
    assert [r["national_id"] for r in two] == [pseudonymize(p["national_id"], derived) for p in PEOPLE]
    for path in node_files(net, "node2", "agency2"):
        data = path.read_bytes()
        for needle in (owner_secret, derived):
            assert needle not in data and needle.hex().encode() not in data, f"{path} holds the owner's key"
    assert not (net.dir / "pseudonym.key").exists()  # no consortium-wide key any more


# --------------------------------------------------------------------------- 3. revocation mid-stream


class HoldingRogue(RogueNode):
    """node2 in the attacker's hands: acknowledges chunks below ``ack_below`` only (the owner stalls
    with a window in flight), keeps every data.* message it receives."""

    ack_below = 2**63

    async def _on_message(self, peer: str, msg_type: str, body: Any) -> None:
        if not msg_type.startswith(wire.MSG_PREFIX):
            return
        self.messages.append((msg_type, body))
        if msg_type == wire.MSG_CHUNK and self.p2p is not None and body[1] < self.ack_below:
            self.p2p.send(peer, wire.MSG_ACK, wire.Ack(body[0], body[1]).to_wire())

    def release(self, transfer_id: bytes) -> None:
        """Acknowledge everything received so far."""
        self.ack_below = 2**63
        seqs = [body[1] for t, body in list(self.messages) if t == wire.MSG_CHUNK and body[0] == transfer_id]
        assert self.p2p is not None
        self.loop.call_soon_threadsafe(self.p2p.send, "node1", wire.MSG_ACK, wire.Ack(transfer_id, max(seqs)).to_wire())

    def of(self, transfer_id: bytes, msg_type: str | None = None) -> list[tuple[str, Any]]:
        return [(t, body) for t, body in list(self.messages)
                if isinstance(body, list) and body and body[0] == transfer_id and msg_type in (None, t)]

    def decrypt_what_it_holds(self, transfer_id: bytes, context: bytes) -> bytes:
        """What the attacker can read of a transfer with node2's own key: it tries every bytes field of
        every non-chunk message as a wrapped delivery key, and decrypts the chunks with any that opens."""
        node_key = (self.net.keys_dir(self.name) / "node.key").read_bytes()
        chunks = [body[2] for _t, body in sorted(self.of(transfer_id, wire.MSG_CHUNK), key=lambda m: m[1][1])]
        recovered = b""
        for msg_type, body in self.of(transfer_id):
            if msg_type == wire.MSG_CHUNK:
                continue
            for field in body[1:]:
                if not isinstance(field, bytes):
                    continue
                try:
                    key = unwrap_key(node_key, field, context)
                except ChainshareError:
                    continue
                with contextlib.suppress(ChainshareError):
                    for piece in iter_decrypt_pieces(chunks, key, _DELIVERY_AAD + context):
                        recovered += piece
        return recovered


@contextlib.contextmanager
def holding_rogue(net: Consortium) -> Iterator[HoldingRogue]:
    """Stop node2 and speak for it from this process; restart it (and wait for it to catch up) after."""
    net.stop_node("node2")
    node: HoldingRogue | None = None
    try:
        node = HoldingRogue(net, "node2")
        yield node
    finally:
        try:
            if node is not None:
                node.close()
        finally:
            net.restart()


def test_a_grant_revoked_during_a_large_delivery_leaves_the_requester_nothing_it_can_decrypt(
        net: Consortium, published: Published) -> None:
    ds = published.big
    normal, revoked = grant(net, "agency2", ds, "read_identified"), grant(net, "agency2", ds, "read_identified")
    since = net.log_offset()
    with holding_rogue(net) as node2:
        # A normal delivery: the key arrives in data.end, and only once the record is final on node1.
        request = node2.fetch_request(ds, normal)
        ok, _ = node2.ask(wire.MSG_FETCH, request.to_wire())
        assert ok
        wait_until(lambda: node2.of(request.transfer_id, wire.MSG_END), 60, "the normal delivery to end")
        end = wire.End.from_wire(node2.of(request.transfer_id, wire.MSG_END)[0][1])
        receipt = net.rpc("node1", "eth_getTransactionReceipt", "0x" + end.record_tx.hex())
        assert receipt is not None and receipt["status"] == "0x1", "the key came before the record was final"
        context = compute_delivery_context(normal, published.big_hash, "read_identified")
        assert keccak256(node2.decrypt_what_it_holds(request.transfer_id, context)) == published.big_hash

        # The attack: stall the delivery with a window in flight, have the owner revoke, then go on.
        node2.ack_below = 2
        request = node2.fetch_request(ds, revoked)
        ok, accepted = node2.ask(wire.MSG_FETCH, request.to_wire())
        assert ok
        # Chunks 0 and 1 acknowledged: the owner may send up to chunk 1 + window, then it must wait.
        in_flight = 2 + wire.FetchAccepted.from_wire(accepted).window
        wait_until(lambda: len(node2.of(request.transfer_id, wire.MSG_CHUNK)) == in_flight, 30,
                   "the owner to send its window")
        cli(net, "agency1", "access", "revoke", revoked)
        wait_until(lambda: net.grant(revoked, "node1")["revoked"], 30, "the revocation on node1")
        node2.release(request.transfer_id)
        wait_until(lambda: node2.of(request.transfer_id, wire.MSG_ERROR), 30, "the owner to abort")
        error = wire.Abort.from_wire(node2.of(request.transfer_id, wire.MSG_ERROR)[0][1])
        assert f"grant {revoked} was revoked" in error.message, error.message
        # Messages of one connection arrive in order: nothing was sent after the revocation was final.
        assert len(node2.of(request.transfer_id, wire.MSG_CHUNK)) == in_flight, "the delivery went on"
        assert in_flight * 1024 * 1024 < BIG_BYTES
        assert node2.of(request.transfer_id, wire.MSG_END) == []
        context = compute_delivery_context(revoked, published.big_hash, "read_identified")
        assert node2.decrypt_what_it_holds(request.transfer_id, context) == b"", \
            "the requester decrypted bytes of a delivery that has no on-chain record"

    audit = httpx.get(f"{net.api('node1')}/datasets/{ds}/audit", timeout=10).json()["items"]
    recorded = [i["args"]["grantId"] for i in audit if i["event"] == "DeliveryRecorded"]
    assert normal in recorded and revoked not in recorded
    line = net.wait_log(since, "the abort", msg="delivery aborted", grant=revoked, reason="was revoked")
    assert line["level"] == "warning"
    assert metric(net, "node1", "chainshare_sharing_deliveries_revoked_total") >= 1
    assert metric(net, "node1", "chainshare_sharing_records_failed_total") == 0


# --------------------------------------------------------------------------- 6. replay after a restart


def signed(net: Consortium, message: str, ts: int, nonce: bytes) -> dict[str, str]:
    return {wire.SIGNATURE_HEADER: "0x" + wire.sign_personal_message(net.key("agency2"), message).hex(),
            wire.TIMESTAMP_HEADER: str(ts), wire.NONCE_HEADER: "0x" + nonce.hex()}


def test_signed_rest_requests_replayed_after_a_restart_are_refused(net: Consortium, published: Published) -> None:
    ds = published.people
    read, compute = grant(net, "agency2", ds, "read"), grant(net, "agency2", ds, "compute")
    api = net.api("node2")
    ts = int(time.time())
    query = {"select": [{"fn": "count"}], "group_by": ["district"]}
    upload = b"code,label\n1,one\n2,two\n"
    fetch_nonce, query_nonce, upload_nonce = (secrets.token_bytes(16) for _ in range(3))
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "fetch": (f"{api}/datasets/{ds}/fetch", {
            "json": {"grant_id": read},
            "headers": signed(net, wire.compute_fetch_message(ds, read, "node2", net.chain_id, ts, fetch_nonce),
                              ts, fetch_nonce)}),
        "query": (f"{api}/datasets/{ds}/query", {
            "json": {"grant_id": compute, "query": query},
            "headers": signed(net, wire.compute_query_message(ds, compute, wire.compute_query_digest(
                canonical_json(query)), "node2", net.chain_id, ts, query_nonce), ts, query_nonce)}),
        "upload": (f"{api}/vault", {
            "params": {"format": "csv"}, "content": upload,
            "headers": {wire.CONTENT_HASH_HEADER: "0x" + keccak256(upload).hex(),
                        **signed(net, wire.compute_upload_message(keccak256(upload), "node2", net.chain_id, ts,
                                                                  upload_nonce), ts, upload_nonce)}}),
    }
    for what, (url, kwargs) in calls.items():
        first = httpx.post(url, timeout=60, **kwargs)
        assert first.status_code in (200, 201), f"{what}: {first.status_code} {first.text[:200]}"

    net.stop_node("node2")
    net.restart()

    for what, (url, kwargs) in calls.items():
        replayed = httpx.post(url, timeout=60, **kwargs)
        assert replayed.status_code == 403, f"{what} replayed after a restart: {replayed.status_code} " \
                                            f"{replayed.text[:120]!r}"
        assert replayed.json()["error"]["message"] == \
            "this signed request was already served: sign a new one (fresh nonce)", what
        assert_no_leak(replayed.text)
    # Signed for another audience (node3), sent to node2: refused, whatever the time and nonce.
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    elsewhere = httpx.post(f"{api}/datasets/{ds}/fetch", json={"grant_id": read}, timeout=60,
                           headers=signed(net, wire.compute_fetch_message(ds, read, "node3", net.chain_id, ts, nonce),
                                          ts, nonce))
    assert elsewhere.status_code == 403 and "acts only for agency 'agency2'" in elsewhere.json()["error"]["message"]
    # A fresh request still works.
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    fresh = httpx.post(f"{api}/datasets/{ds}/query", json={"grant_id": compute, "query": query}, timeout=60,
                       headers=signed(net, wire.compute_query_message(ds, compute, wire.compute_query_digest(
                           canonical_json(query)), "node2", net.chain_id, ts, nonce), ts, nonce))
    assert fresh.status_code == 200, fresh.text
    assert os.path.exists(net.dir / "nodes" / "node2" / "vault" / "incoming" / "replay-signed")
