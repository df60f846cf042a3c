"""The data-sharing service end to end inside one process: two nodes' services over real mutual-TLS
P2P transports on 127.0.0.1, sharing ONE in-memory chain (a real Node with its block producer) so
both see the same finalized grants.

Agency A owns the datasets (node-a); agency B (node-b) asks for them. Deliveries, queries and every
refusal the issue lists: no grant, expired, revoked, grant for another dataset, a requester that is
not the grantee, a replayed or forged request, a tampered chunk, and queries that single out one
person. A refusal is logged, answered with a precise error, and no byte of data leaves the owner."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import eth_abi
import pytest
from chainkit import CHAIN_ID, validator
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct

import chainshare.node
from chainshare.config import BlockSection, NodeConfig
from chainshare.crypto.ca import init_ca, issue_agency, issue_node
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.keystore import decrypt_account_key
from chainshare.crypto.secp import address_of_private_key
from chainshare.errors import InvalidInput, NotFound, Unauthorized
from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS, NOTARY
from chainshare.execution.genesis import ChainParams, Genesis, GenesisAgency
from chainshare.ledger.store import MemoryStore
from chainshare.ledger.txs import sign_eip1559
from chainshare.ledger.types import STATUS_SUCCESS, Receipt
from chainshare.node import Node, ValidatorKey
from chainshare.p2p import P2PConfig, P2PNode, PeerAddress, TlsIdentity
from chainshare.sharing import protocol as wire
from chainshare.sharing.compute import QueryRefused
from chainshare.sharing.pseudonym import derive_pseudonym_key, is_pseudonym, pseudonymize
from chainshare.sharing.records import (
    ACCESS_CONTRACT,
    DATASETS_CONTRACT,
    audit_dataset,
    decode_event,
    encode_call,
)
from chainshare.sharing.schema import canonical_json, compute_content_hash, validate_schema
from chainshare.sharing.service import (
    DeliveryFailed,
    ReplayGuard,
    SharingLimits,
    SharingService,
    SharingUnavailable,
)
from chainshare.sharing.vault import Vault, load_or_create_pseudonym_secret

T = TypeVar("T")
A, B = "Agency A", "Agency B"
PSEUDONYM_SECRET = secrets.token_bytes(32)  # the owner node's
SCHEMA = {"columns": [{"name": "citizen_id", "kind": "personal"}, {"name": "district", "kind": "string"},
                      {"name": "age", "kind": "integer"}, {"name": "income", "kind": "number"}], "min_group": 5}
PERMIT_ALL = "permit (principal, action, resource);"
DISTRICTS = ("north", "south", "east")
ROWS = 240
UNIQUE_AGE = 97  # exactly one person has it
FAST = {"handshake_timeout": 2.0, "hello_timeout": 2.0, "connect_timeout": 2.0, "backoff_base": 0.05,
        "backoff_cap": 0.4, "request_timeout": 5.0}
# Tiny envelope chunks: every dataset here spans many chunks, so flow control and chunk checks run.
LIMITS = SharingLimits(chunk_size=256, window=4, idle_timeout=5.0, height_wait=2.0)


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner() as runner:
        return runner.run(asyncio.wait_for(coro, 45))


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- identities and data


@dataclass(frozen=True)
class Pki:
    base: Path
    genesis: Genesis
    keys: dict[str, bytes]  # agency -> account private key

    def node_dir(self, node: str) -> Path:
        return self.base / node

    def identity(self, node: str) -> TlsIdentity:
        return TlsIdentity.from_dirs(self.base / "ca", self.base / node)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("sharing-pki")
    ca = init_ca(base / "ca", password=None)
    agencies, keys = [], {}
    for name in (A, B):
        ident = issue_agency(base / "ca", None, name, base / name.replace(" ", "-"), key_password=None, kdf_light=True)
        key = decrypt_account_key(json.loads((ident.directory / "account.json").read_text()), "")
        keys[name] = key
        agencies.append(GenesisAgency(name, "member", (address_of_private_key(key),), ident.cert_pem.encode(),
                                      "CN-31"))
    for node, agency in (("node-a", A), ("node-b", B)):
        issue_node(base / "ca", None, agency, node, base / node, key_password=None, kdf_light=True)
    genesis = Genesis(CHAIN_ID, int(time.time() * 1000), ca.cert_pem.encode(), tuple(agencies),
                      (validator("v1", A).genesis_entry(),), ChainParams())
    return Pki(base, genesis, keys)


def write_dataset(path: Path) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["citizen_id", "district", "age", "income"])
        for i in range(ROWS):
            age = UNIQUE_AGE if i == 7 else 20 + i % 40
            writer.writerow([f"CN{i:08d}", DISTRICTS[i % 3], age, f"{1000 + 10.5 * i:.1f}"])
    return path


# --------------------------------------------------------------------------- the network


@dataclass
class Net:
    node: Node
    owner: SharingService
    requester: SharingService
    p2p: dict[str, P2PNode]
    pki: Pki
    tmp: Path
    sent: list[tuple[str, str, Any]] = field(default_factory=list)  # what node-a sent to node-b
    nonces: dict[str, int] = field(default_factory=dict)

    async def send_tx(self, agency: str, to: bytes, data: bytes) -> Receipt:
        key = self.pki.keys[agency]
        sender = address_of_private_key(key)
        nonce = self.node.mempool.get_pending_nonce(self.node.chain.state, sender)
        raw = sign_eip1559(key, chain_id=CHAIN_ID, nonce=nonce, to=to, data=data, gas=2_000_000)
        return await self.receipt(self.node.submit_raw_transaction(raw))

    async def receipt(self, tx_hash: bytes) -> Receipt:
        await wait_until(lambda: self.node.chain.get_tx_location(tx_hash) is not None, what="the transaction")
        loc = self.node.chain.get_tx_location(tx_hash)
        assert loc is not None
        return self.node.chain.get_receipts(loc.height)[loc.index]

    async def publish(self, source: Path, schema: dict[str, Any] = SCHEMA, policy: str = PERMIT_ALL) -> int:
        assert self.owner.vault is not None
        entry = self.owner.vault.put(source, "csv")
        data = encode_call(DATASETS_CONTRACT, "register", source.stem, entry.content_hash,
                           json.dumps(schema), entry.size, policy)
        return int(events(await self.send_tx(A, DATASETS, data))["DatasetRegistered"]["id"])

    async def grant(self, agency: str, dataset_id: int, action: str, duration: int = 0) -> int:
        data = encode_call(ACCESS_CONTRACT, "request", dataset_id, action, "unit test", duration)
        return int(events(await self.send_tx(agency, ACCESS_CONTROL, data))["GrantIssued"]["grantId"])

    async def revoke(self, agency: str, grant_id: int) -> None:
        receipt = await self.send_tx(agency, ACCESS_CONTROL, encode_call(ACCESS_CONTRACT, "revokeGrant", grant_id))
        assert receipt.status == STATUS_SUCCESS

    def fetch_request(self, dataset_id: int, grant_id: int, **changes: Any) -> wire.FetchRequest:
        values: dict[str, Any] = {
            "dataset_id": dataset_id, "grant_id": grant_id, "nonce": secrets.token_bytes(24),
            "issued_at": int(time.time()), "min_height": self.node.chain.head_height,
            "transfer_id": secrets.token_bytes(16),
            "node_cert_pem": (self.pki.node_dir("node-b") / "node.crt").read_bytes(), "window": 4,
        }
        values.update(changes)
        return wire.FetchRequest(**values)

    async def raw(self, msg_type: str, body: Any) -> Any:
        """node-b asks node-a directly, bypassing its own service's checks (an attacker's view)."""
        return await self.p2p["node-b"].request("node-a", msg_type, body, timeout=5)

    def chunks_sent(self) -> int:
        return sum(1 for _peer, msg_type, _body in self.sent if msg_type == wire.MSG_CHUNK)


def events(receipt: Receipt) -> dict[str, dict[str, Any]]:
    assert receipt.status == STATUS_SUCCESS, receipt.output
    out = {}
    for lg in receipt.logs:
        decoded = decode_event(lg)
        assert decoded is not None
        out[decoded[1]] = decoded[2]
    return out


def make_service(net_node: Node, pki: Pki, tmp: Path, name: str, agency: str, *, vault: bool) -> SharingService:
    key_pem = (pki.node_dir(name) / "node.key").read_bytes()
    return SharingService(
        net_node, None, Vault.open(tmp / f"{name}-vault", key_pem) if vault else None,
        PSEUDONYM_SECRET if vault else None,
        pki.keys[agency], key_pem, node_cert_pem=(pki.node_dir(name) / "node.crt").read_bytes(),
        ca_cert_pem=(pki.base / "ca" / "ca.crt").read_bytes(), spool_dir=tmp / f"{name}-spool", limits=LIMITS)


@asynccontextmanager
async def network(pki: Pki, tmp: Path) -> AsyncIterator[Net]:
    key = validator("v1", A)
    node = Node(NodeConfig(block=BlockSection(block_time_ms=20)), pki.genesis, MemoryStore(),
                ValidatorKey(key.secret_key, key.public_key))
    producer = asyncio.create_task(node.run_producer())
    owner = make_service(node, pki, tmp, "node-a", A, vault=True)
    requester = make_service(node, pki, tmp, "node-b", B, vault=False)
    services = {"node-a": owner, "node-b": requester}
    p2p: dict[str, P2PNode] = {}
    net = Net(node, owner, requester, p2p, pki, tmp)

    async def no_message(peer: str, msg_type: str, body: Any) -> None:
        raise AssertionError(f"unexpected {msg_type}")

    async def no_request(peer: str, msg_type: str, body: Any) -> Any:
        raise AssertionError(f"unexpected {msg_type}")

    def handlers(name: str) -> dict[str, Any]:
        service = services[name]
        return {"on_message": service.route_message(no_message), "on_request": service.route_request(no_request),
                "on_peer_down": service.on_peer_down}

    genesis_hash = keccak256(b"shared in-memory chain")
    p2p["node-a"] = P2PNode(P2PConfig("node-a", CHAIN_ID, genesis_hash, **FAST), pki.identity("node-a"),
                            is_allowed=lambda subject: True, **handlers("node-a"))
    await p2p["node-a"].start()
    p2p["node-b"] = P2PNode(
        P2PConfig("node-b", CHAIN_ID, genesis_hash, peers=(PeerAddress("node-a", "127.0.0.1",
                                                                        p2p["node-a"].listen_port),), **FAST),
        pki.identity("node-b"), is_allowed=lambda subject: True, **handlers("node-b"))
    await p2p["node-b"].start()
    original_send = p2p["node-a"].send

    def recording_send(peer: str, msg_type: str, body: Any) -> bool:
        net.sent.append((peer, msg_type, body))
        return original_send(peer, msg_type, body)

    p2p["node-a"].send = recording_send  # type: ignore[method-assign]
    owner.bind_transport(p2p["node-a"])
    requester.bind_transport(p2p["node-b"])
    await wait_until(lambda: p2p["node-b"].is_connected("node-a") and p2p["node-a"].is_connected("node-b"),
                     what="the TLS connection")
    try:
        yield net
    finally:
        await owner.close()
        await requester.close()
        for p in p2p.values():
            await p.close()
        await node.stop()
        await producer
        node.close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "people.csv")


@pytest.fixture
def sharing_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    logger = logging.getLogger("chainshare.sharing")
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "data-plane request refused"]


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# --------------------------------------------------------------------------- deliveries


def test_read_delivery_pseudonymizes_personal_columns_and_is_recorded_on_chain(pki: Pki, tmp_path: Path,
                                                                              dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read")
            out = tmp_path / "received.csv"
            result = await net.requester.fetch(dataset_id, out)
            assert result.grant_id == grant_id and result.action == "read"
            original, delivered = read_csv(dataset), read_csv(out)
            assert len(delivered) == ROWS
            # Keyed per (owner, grantee, dataset) from the owner's secret, which the requester never holds.
            key = derive_pseudonym_key(PSEUDONYM_SECRET, A, B, dataset_id)
            assert net.requester._pseudonym_secret is None
            for before, after in zip(original, delivered, strict=True):
                assert is_pseudonym(after["citizen_id"])
                assert after["citizen_id"] == pseudonymize(before["citizen_id"], key)
                assert {k: after[k] for k in ("district", "age", "income")} == \
                       {k: before[k] for k in ("district", "age", "income")}
            assert result.content_hash == compute_content_hash(dataset)  # the version delivered
            assert result.delivered_hash == keccak256(out.read_bytes()) and result.size == out.stat().st_size
            assert net.chunks_sent() > 2 * LIMITS.window  # streamed under flow control, not in one piece
            assert result.record_tx is not None and result.record_error is None
            receipt = await net.receipt(result.record_tx)  # the owner's record is finalized
            recorded = events(receipt)["DeliveryRecorded"]
            assert recorded["grantId"] == grant_id and recorded["grantee"] == B
            assert recorded["contentHash"] == result.content_hash and recorded["bytesDelivered"] == result.size
            # The pseudonymized bytes are pinned on chain, and fetch returned only once that record was final.
            assert recorded["deliveredHash"] == result.delivered_hash != result.content_hash
            assert result.recorded_height == net.requester.node.chain.get_tx_location(result.record_tx).height
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    run(scenario())


def test_read_identified_delivery_is_the_raw_dataset_matching_the_chain_hash(pki: Pki, tmp_path: Path,
                                                                             dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            await net.grant(B, dataset_id, "read_identified")
            result = await net.requester.fetch(dataset_id, tmp_path / "raw.csv")
            assert (tmp_path / "raw.csv").read_bytes() == dataset.read_bytes()
            assert result.delivered_hash == result.content_hash == compute_content_hash(dataset)

    run(scenario())


def test_a_delivery_whose_on_chain_record_does_not_match_the_bytes_is_discarded(pki: Pki, tmp_path: Path,
                                                                                dataset: Path) -> None:
    """An owner that records another delivered hash than the bytes it sent (here: the source hash
    under ``read``) gets its delivery refused: the requester keeps nothing it cannot match on chain."""
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read")
            honest = net.owner.submit_call

            def lying(to: bytes, data: bytes) -> tuple[bytes | None, str | None]:
                head, args = data[:4], eth_abi.decode(["uint256", "bytes32", "bytes32", "uint64"], data[4:])
                return honest(to, head + eth_abi.encode(["uint256", "bytes32", "bytes32", "uint64"],
                                                        [args[0], args[1], args[1], args[3]]))

            net.owner.submit_call = lying  # type: ignore[method-assign]
            out = tmp_path / "received.csv"
            with pytest.raises(DeliveryFailed, match="does not match the bytes received.*discarded"):
                await net.requester.fetch(dataset_id, out, grant_id=grant_id)
            assert not out.exists()
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    run(scenario())


def test_an_owner_fetches_its_own_dataset_without_the_network(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            await net.grant(A, dataset_id, "read_identified")
            sent_before = len(net.sent)
            result = await net.owner.fetch(dataset_id, tmp_path / "own.csv")
            assert (tmp_path / "own.csv").read_bytes() == dataset.read_bytes()
            assert len(net.sent) == sent_before  # served in-process
            assert events(await net.receipt(result.record_tx or b""))["DeliveryRecorded"]["grantee"] == A

    run(scenario())


def test_compute_query_with_group_by_returns_only_aggregates_and_is_recorded(pki: Pki, tmp_path: Path,
                                                                              dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "compute")
            query = {"select": [{"fn": "count"}, {"fn": "avg", "column": "age", "bounds": [0, 120]}],
                     "group_by": ["district"], "where": [{"column": "age", "op": ">=", "value": 18}], "epsilon": 4}
            outcome = await net.requester.query(dataset_id, query)
            assert outcome.result["columns"] == ["district", "count", "avg(age)"]
            rows = read_csv(dataset)
            assert [g[0] for g in outcome.result["groups"]] == sorted(DISTRICTS)
            for district, count, avg in outcome.result["groups"]:  # noise of scale 0.75 and 90 (sum of ages)
                ages = [int(r["age"]) for r in rows if r["district"] == district and int(r["age"]) >= 18]
                assert abs(count - len(ages)) < 25 and abs(avg - sum(ages) / len(ages)) < 40
            assert outcome.result["epsilon"] == 4.0 and outcome.result["privacy"]["mechanism"] == "discrete_laplace"
            assert "CN0000" not in json.dumps(outcome.result)
            assert net.chunks_sent() == 0  # no row ever left the owner
            recorded = events(await net.receipt(outcome.record_tx or b""))["ComputationRecorded"]
            assert (recorded["grantId"], recorded["epsilonMicro"], recorded["spentMicro"]) == \
                (grant_id, 4_000_000, 4_000_000)
            assert (recorded["queryHash"], recorded["resultHash"]) == (outcome.query_hash, outcome.result_hash)

    run(scenario())


# --------------------------------------------------------------------------- refusals


def test_without_a_grant_nothing_is_delivered(pki: Pki, tmp_path: Path, dataset: Path,
                                             sharing_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            with pytest.raises(NotFound, match="holds no 'read' or 'read_identified' grant"):
                await net.requester.fetch(dataset_id, tmp_path / "out.csv")
            with pytest.raises(Exception, match=r"\[NotFound\] no grant 999"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(dataset_id, 999).to_wire())
            assert not (tmp_path / "out.csv").exists() and net.chunks_sent() == 0

    run(scenario())
    assert refusals(sharing_log)[-1]["reason"].startswith("no grant 999")


def test_an_expired_grant_is_refused_by_the_owner(pki: Pki, tmp_path: Path, dataset: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    class Later:
        """The node's clock, 10 s ahead: blocks from now on carry later times."""

        perf_counter = staticmethod(time.perf_counter)

        @staticmethod
        def time() -> float:
            return time.time() + 10

    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read", duration=2)
            monkeypatch.setattr(chainshare.node, "time", Later)
            await net.send_tx(A, NOTARY, encode_call(net.node.runtime.contracts[NOTARY], "anchor", b"\x01" * 32))
            with pytest.raises(Unauthorized, match=f"grant {grant_id} expired"):
                await net.requester.fetch(dataset_id, tmp_path / "out.csv", grant_id=grant_id)
            with pytest.raises(Exception, match=rf"\[Unauthorized\] grant {grant_id} expired"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(dataset_id, grant_id).to_wire())
            assert net.chunks_sent() == 0

    run(scenario())


def test_a_revoked_grant_is_refused(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read")
            await net.revoke(A, grant_id)
            with pytest.raises(Unauthorized, match=f"grant {grant_id} was revoked"):
                await net.requester.fetch(dataset_id, grant_id=grant_id)
            with pytest.raises(Exception, match=rf"\[Unauthorized\] grant {grant_id} was revoked"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(dataset_id, grant_id).to_wire())
            assert net.chunks_sent() == 0

    run(scenario())


def test_a_grant_for_another_dataset_is_refused(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            first = await net.publish(dataset)
            other = write_dataset(tmp_path / "other.csv")
            other.write_text(other.read_text() + "CN99999999,north,50,1.0\n")
            second = await net.publish(other)
            grant_id = await net.grant(B, second, "read_identified")
            with pytest.raises(InvalidInput, match=f"grant {grant_id} is for dataset {second}"):
                await net.requester.fetch(first, grant_id=grant_id)
            with pytest.raises(Exception, match=rf"\[Unauthorized\] grant {grant_id} is for dataset {second}, "
                                                rf"not dataset {first}"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(first, grant_id).to_wire())
            assert net.chunks_sent() == 0

    run(scenario())


def test_a_node_of_another_agency_than_the_grantee_is_refused(pki: Pki, tmp_path: Path, dataset: Path,
                                                              sharing_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_of_a = await net.grant(A, dataset_id, "read_identified")
            with pytest.raises(Unauthorized, match="issued to agency 'Agency A', not to this node's agency"):
                await net.requester.fetch(dataset_id, grant_id=grant_of_a)
            with pytest.raises(Exception, match=r"issued to agency 'Agency A', but the requesting node 'node-b' "
                                                r"is certified for agency 'Agency B'"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(dataset_id, grant_of_a).to_wire())
            assert net.chunks_sent() == 0

    run(scenario())
    refused = refusals(sharing_log)[-1]
    assert (refused["peer"], refused["agency"], refused["error"]) == ("node-b", B, "Unauthorized")


def test_a_replayed_request_is_refused(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read_identified")
            request = net.fetch_request(dataset_id, grant_id)
            accepted = wire.FetchAccepted.from_wire(await net.raw(wire.MSG_FETCH, request.to_wire()))
            net.p2p["node-b"].send("node-a", wire.MSG_CANCEL, wire.Abort(accepted.transfer_id, "test").to_wire())
            with pytest.raises(Exception, match=r"\[Unauthorized\] replayed request"):
                await net.raw(wire.MSG_FETCH, request.to_wire())
            replay = net.fetch_request(dataset_id, grant_id, nonce=request.nonce)  # new transfer, same nonce
            with pytest.raises(Exception, match=r"\[Unauthorized\] replayed request"):
                await net.raw(wire.MSG_FETCH, replay.to_wire())
            stale = net.fetch_request(dataset_id, grant_id, issued_at=int(time.time()) - 3600)
            with pytest.raises(Exception, match=r"\[InvalidInput\] request issued at .* outside this node's window"):
                await net.raw(wire.MSG_FETCH, stale.to_wire())

    run(scenario())


def test_forged_requests_are_refused(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read_identified")
            # The certificate of another node (public, but not this TLS peer's): the key would be wrapped to it.
            forged = net.fetch_request(dataset_id, grant_id,
                                       node_cert_pem=(pki.node_dir("node-a") / "node.crt").read_bytes())
            with pytest.raises(Exception, match=r"names node 'node-a' of agency 'Agency A', but the request came "
                                                r"over the authenticated session of node 'node-b'"):
                await net.raw(wire.MSG_FETCH, forged.to_wire())
            # A certificate not issued by the consortium CA.
            init_ca(tmp_path / "rogue-ca", password=None)
            rogue = issue_node(tmp_path / "rogue-ca", None, B, "node-b", tmp_path / "rogue", key_password=None)
            with pytest.raises(Exception, match=r"\[Unauthorized\] the node certificate in the request is refused"):
                await net.raw(wire.MSG_FETCH, net.fetch_request(dataset_id, grant_id,
                                                                node_cert_pem=rogue.cert_pem.encode()).to_wire())
            for body in ([1, 2, 3], "garbage", net.fetch_request(dataset_id, grant_id).to_wire()[:-1]):
                with pytest.raises(Exception, match=r"\[InvalidInput\] malformed fetch request"):
                    await net.raw(wire.MSG_FETCH, body)
            with pytest.raises(Exception, match=r"\[InvalidInput\] unsupported data-plane protocol version"):
                await net.raw(wire.MSG_FETCH, [99, *net.fetch_request(dataset_id, grant_id).to_wire()[1:]])
            assert net.chunks_sent() == 0

    run(scenario())


def test_a_tampered_chunk_is_detected_and_nothing_is_kept(pki: Pki, tmp_path: Path, dataset: Path,
                                                          sharing_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            await net.grant(B, dataset_id, "read")
            send = net.p2p["node-a"].send

            def tampering(peer: str, msg_type: str, body: Any) -> bool:
                if msg_type == wire.MSG_CHUNK and body[1] == 3:
                    data = bytearray(body[2])
                    data[5] ^= 0x01
                    body = [body[0], body[1], bytes(data)]
                return send(peer, msg_type, body)

            net.p2p["node-a"].send = tampering  # type: ignore[method-assign]
            out = tmp_path / "out" / "tampered.csv"
            out.parent.mkdir()
            with pytest.raises(DeliveryFailed, match="did not verify and was discarded: envelope chunk 2 failed"):
                await net.requester.fetch(dataset_id, out)
            assert list(out.parent.iterdir()) == []
            assert list(net.requester.spool_dir.glob(".*.sealed")) == []  # nor its ciphertext
            await wait_until(lambda: not net.owner._outgoing, what="the owner to stop streaming")

    run(scenario())
    messages = [r.getMessage() for r in sharing_log.records]
    # The requester can check the chunks only with the key, which comes after the record: the owner
    # finished (and recorded) the delivery, the requester then refused it.
    assert "delivery refused by the requester" in messages and "delivery sent" in messages
    assert "CN0000" not in sharing_log.text


def test_queries_that_single_out_a_person_are_refused(pki: Pki, tmp_path: Path, dataset: Path,
                                                      sharing_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "compute")
            # epsilon 5 on one count: noise of scale 0.2 keeps one row below 5 (p > 1 - 1e-8)
            unique = {"select": [{"fn": "count"}], "epsilon": 5,
                      "where": [{"column": "age", "op": "==", "value": UNIQUE_AGE}]}
            with pytest.raises(QueryRefused, match="fewer than min_group=5 rows match"):
                await net.requester.query(dataset_id, unique)
            tiny_groups = {"select": [{"fn": "count"}], "group_by": ["district"],
                           "where": [{"column": "age", "op": "==", "value": UNIQUE_AGE}]}
            with pytest.raises(QueryRefused, match="no group reaches"):
                await net.requester.query(dataset_id, tiny_groups)
            personal = {"select": [{"fn": "count"}], "group_by": ["citizen_id"]}
            with pytest.raises(Unauthorized, match="column 'citizen_id' is personal"):
                await net.requester.query(dataset_id, personal)
            raw = wire.QueryRequest(dataset_id, grant_id, secrets.token_bytes(24), int(time.time()),
                                    net.node.chain.head_height, json.dumps(personal).encode())
            with pytest.raises(Exception, match=r"\[QueryRefused\] column 'citizen_id' is personal.*refusal "
                                                "recorded on chain in transaction 0x"):
                await net.raw(wire.MSG_QUERY, raw.to_wire())  # an attempt at personal data: on chain
            read_grant = await net.grant(B, dataset_id, "read")
            with pytest.raises(InvalidInput, match=f"grant {read_grant} is for 'read'; this needs 'compute'"):
                await net.requester.query(dataset_id, unique, grant_id=read_grant)

    run(scenario())
    reasons = [r["reason"] for r in refusals(sharing_log)]
    assert any("fewer than min_group" in r for r in reasons)
    assert str(UNIQUE_AGE * 1.0) not in sharing_log.text and "CN00000007" not in sharing_log.text


# --------------------------------------------------------------------------- vault uploads and signatures


async def _blocks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_an_upload_streams_into_the_vault_and_infers_a_schema_with_no_personal_column(
        pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            data = dataset.read_bytes()
            result = await net.owner.receive_upload(_blocks(data), fmt="csv", declared_hash=keccak256(data),
                                                    schema=None, min_group=7)
            assert result.created and result.schema_source == "inferred" and result.size == len(data)
            kinds = {c.name: c.kind for c in result.schema.columns}
            assert kinds == {"citizen_id": "string", "district": "string", "age": "integer", "income": "number"}
            assert result.schema.min_group == 7
            assert net.owner.vault is not None
            assert net.owner.vault.find(keccak256(data)).size == len(data)
            again = await net.owner.receive_upload(_blocks(data), fmt="csv", declared_hash=keccak256(data),
                                                   schema=validate_schema(SCHEMA), min_group=None)
            assert not again.created and again.schema_source == "given"

    run(scenario())


def test_a_failed_upload_leaves_no_vault_entry(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            assert net.owner.vault is not None
            data = dataset.read_bytes()
            with pytest.raises(InvalidInput, match="hash to 0x.*but the signed X-Chainshare-Content-Hash"):
                await net.owner.receive_upload(_blocks(data), fmt="csv", declared_hash=b"\x01" * 32, schema=None,
                                               min_group=None)
            wrong = validate_schema({"columns": [{"name": "citizen_id", "kind": "personal"},
                                                 {"name": "district", "kind": "integer"}]})
            with pytest.raises(InvalidInput, match="does not fit its given schema: CSV line 2"):
                await net.owner.receive_upload(_blocks(data), fmt="csv", declared_hash=keccak256(data),
                                               schema=wrong, min_group=None)
            assert net.owner.vault.entries() == []

    run(scenario())


def test_agency_signatures_interoperate_with_eth_account(pki: Pki) -> None:
    message = wire.compute_upload_message(b"\xab" * 32, "node-a", CHAIN_ID, 1_700_000_000, b"\x01" * 16)
    assert message == (f"chainshare vault upload\nnode: node-a\nchain: {CHAIN_ID}\ncontent: 0x" + "ab" * 32 +
                       "\ntime: 1700000000\nnonce: 0x" + "01" * 16)
    key = pki.keys[A]
    ours = wire.sign_personal_message(key, message)
    theirs = bytes(EthAccount.sign_message(encode_defunct(text=message), key).signature)
    assert ours == theirs
    assert wire.recover_personal_signer(message, theirs) == address_of_private_key(key)
    assert wire.recover_personal_signer(message + "x", theirs) != address_of_private_key(key)
    with pytest.raises(Unauthorized, match="65 bytes"):
        wire.recover_personal_signer(message, theirs[:64])


def test_the_replay_record_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    now = time.time()
    ReplayGuard(300, path).claim(7, b"n" * 16, int(now), now)
    restarted = ReplayGuard(300, path)
    with pytest.raises(Unauthorized, match="replayed request"):
        restarted.check(7, b"n" * 16, int(now), now)
    with pytest.raises(Unauthorized, match="replayed request"):
        restarted.claim(7, b"n" * 16, int(now), now)
    restarted.check(8, b"n" * 16, int(now), now)  # another grant: fine
    with pytest.raises(InvalidInput, match="outside this node's window of 300 s"):
        restarted.claim(9, b"n" * 16, int(now) - 301, now)


def test_a_replay_claim_is_atomic_durable_and_expires_only_after_the_window(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from chainshare.sharing.replay import ReplayStore

    path = tmp_path / "signed"
    t0 = time.time()
    store = ReplayStore(path, 600)
    with ThreadPoolExecutor(8) as pool:  # eight concurrent copies of one request: exactly one is served
        wins = list(pool.map(lambda _i: store.claim(b"request", t0), range(8)))
    assert wins.count(True) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with path.open("a") as file:
        file.write("deadbe")  # a torn line from a crash mid-append
    restarted = ReplayStore(path, 600)
    assert b"request" in restarted and not restarted.claim(b"request", t0 + 500)
    assert restarted.claim(b"request", t0 + 601)  # kept for the whole retention, then it may be forgotten
    for i in range(5000):  # the file is compacted as keys expire
        restarted.claim(i.to_bytes(4, "big"), t0 + 1000 + i)
    assert len(path.read_text().splitlines()) < 5000
    with pytest.raises(ValueError):
        restarted.claim(b"", 1.0)


def test_a_signed_rest_request_is_served_once_even_after_a_restart(pki: Pki, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            now = int(time.time())
            message = wire.compute_fetch_message(1, None, "node-b", CHAIN_ID, now, b"\x05" * 16)
            signature = wire.sign_personal_message(pki.keys[B], message)
            assert net.requester.admit_signed_request(message, signature, now) == address_of_private_key(pki.keys[B])
            with pytest.raises(Unauthorized, match="already served"):
                net.requester.admit_signed_request(message, signature, now)
            restarted = make_service(net.node, pki, tmp_path, "node-b", B, vault=False)  # same spool directory
            with pytest.raises(Unauthorized, match="already served: sign a new one"):
                restarted.admit_signed_request(message, signature, now)
            with pytest.raises(Unauthorized, match="more than 300 s away"):
                other = wire.compute_fetch_message(1, None, "node-b", CHAIN_ID, now - 400, b"\x06" * 16)
                restarted.admit_signed_request(other, wire.sign_personal_message(pki.keys[B], other), now - 400)
            # Signed by agency B for ANOTHER node (audience): recovers another signer here.
            elsewhere = wire.compute_fetch_message(1, None, "node-x", CHAIN_ID, now, b"\x07" * 16)
            with pytest.raises(Unauthorized, match="an account of no member agency"):
                restarted.admit_signed_request(message.replace("node-b", "node-x"),
                                               wire.sign_personal_message(pki.keys[B], elsewhere)[:64] + b"\x1b",
                                               now)
            await restarted.close()

    run(scenario())


def test_the_audit_trail_lists_every_step_in_chain_order(pki: Pki, tmp_path: Path, dataset: Path) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset, policy='permit (principal, action == Action::"read", resource);')
            denied = encode_call(ACCESS_CONTRACT, "request", dataset_id, "compute", "statistics", 0)
            await net.send_tx(B, ACCESS_CONTROL, denied)
            grant_id = await net.grant(B, dataset_id, "read")
            result = await net.requester.fetch(dataset_id, tmp_path / "out.csv")
            await net.receipt(result.record_tx or b"")
            await net.revoke(B, grant_id)
            trail = audit_dataset(net.node, dataset_id)
            names = [item["event"] for item in trail["items"]]
            assert names == ["DatasetRegistered", "DatasetPolicySet", "AccessRequested", "AccessDecided",
                             "AccessRequested", "AccessDecided", "GrantIssued", "DeliveryRecorded", "GrantRevoked"]
            positions = [(i["block"], i["tx_index"], i["log_index"]) for i in trail["items"]]
            assert positions == sorted(positions)
            decided = [i["args"] for i in trail["items"] if i["event"] == "AccessDecided"]
            assert decided[0]["allowed"] is False and decided[1]["allowed"] is True
            assert decided[1]["policyIds"] == [f"ds{dataset_id}-p1#0"]
            page = audit_dataset(net.node, dataset_id, limit=4)
            rest = audit_dataset(net.node, dataset_id, after=page["next"])
            assert [i["event"] for i in page["items"] + rest["items"]] == names

    run(scenario())


# --------------------------------------------------------------------------- wiring from the node configuration


def test_attach_sharing_builds_one_service_from_the_node_configuration(pki: Pki, tmp_path: Path) -> None:
    from dataclasses import replace

    from chainshare.config import P2PSection, SharingSection
    from chainshare.sharing.service import attach_sharing, get_sharing_service

    (tmp_path / "account.json").write_text((pki.base / "Agency-A" / "account.json").read_text())
    cfg = NodeConfig(
        p2p=P2PSection(ca_cert=str(pki.base / "ca" / "ca.crt"), node_cert=str(pki.node_dir("node-a") / "node.crt"),
                       node_key=str(pki.node_dir("node-a") / "node.key")),
        sharing=SharingSection(vault_dir="vault", account_keystore="account.json"),
        base_dir=tmp_path)
    key = validator("v1", A)
    bare = Node(NodeConfig(), pki.genesis, MemoryStore(), ValidatorKey(key.secret_key, key.public_key))
    with pytest.raises(SharingUnavailable, match=r"set \[p2p\] ca_cert, node_cert, node_key"):
        get_sharing_service(bare)
    node = Node(replace(cfg, node=replace(cfg.node, dev_mode=True)), pki.genesis, MemoryStore(),
                ValidatorKey(key.secret_key, key.public_key))

    class Transport:
        config = P2PConfig("node-a", CHAIN_ID, b"\x00" * 32, send_queue_bytes=16 * 1024 * 1024)

        def send(self, peer_name: str, msg_type: str, body: Any) -> bool:
            return True

        async def request(self, peer_name: str, msg_type: str, body: Any, *, timeout: float | None = None) -> Any:
            raise AssertionError("not used")

        def get_peers(self) -> list[Any]:
            return []

    from_api = get_sharing_service(node)  # the REST layer may come first
    service = attach_sharing(node, Transport())
    assert service is from_api and service.transport is not None
    assert (service.agency, service.node_name) == (A, "node-a")
    assert service.vault is not None and (tmp_path / "vault" / "vault.key").exists()
    # The owner-only pseudonym secret is created in the vault, sealed to the node key (never in the config).
    sealed = (tmp_path / "vault" / "pseudonym.secret").read_bytes()
    assert service._pseudonym_secret is not None and service._pseudonym_secret not in sealed
    assert service._pseudonym_secret == load_or_create_pseudonym_secret(
        tmp_path / "vault", (pki.node_dir("node-a") / "node.key").read_bytes())
    assert service.account == address_of_private_key(pki.keys[A])
    # 16 MiB of send queue: bulk data may take half of it, for two deliveries of 1 MiB chunks (+ framing).
    assert service.limits.window == 3
    node.close()
    bare.close()


def _requester_spool(net: Net) -> list[str]:
    return sorted(p.name for p in net.requester.spool_dir.iterdir() if not p.name.startswith("replay-"))


def test_a_grant_revoked_mid_stream_stops_the_delivery_and_releases_no_key(
        pki: Pki, tmp_path: Path, dataset: Path, sharing_log: pytest.LogCaptureFixture) -> None:
    """The owner re-checks the grant before every chunk: revoked while the requester holds back its
    acknowledgements, the delivery ends with data.error, no record and no key ever sent."""
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read")
            held = asyncio.Event()
            send = net.p2p["node-b"].send

            def holding_acks(peer: str, msg_type: str, body: Any) -> bool:
                if msg_type == wire.MSG_ACK and not held.is_set():
                    async def later() -> None:
                        await held.wait()
                        send(peer, msg_type, body)
                    asyncio.get_running_loop().create_task(later())
                    return True
                return send(peer, msg_type, body)

            net.p2p["node-b"].send = holding_acks  # type: ignore[method-assign]
            out = tmp_path / "revoked.csv"
            fetch = asyncio.ensure_future(net.requester.fetch(dataset_id, out, grant_id=grant_id))
            await wait_until(lambda: net.chunks_sent() >= LIMITS.window, what="a first window of chunks")
            await net.revoke(A, grant_id)  # final on the owner's chain before it may send more
            held.set()
            with pytest.raises(DeliveryFailed, match=f"the owner aborted the delivery: grant {grant_id} was revoked"):
                await fetch
            sent = [msg_type for _peer, msg_type, _body in net.sent]
            assert wire.MSG_END not in sent and sent[-1] == wire.MSG_ERROR
            assert net.chunks_sent() < 2 * LIMITS.window + 2  # stopped at the next chunk, not at the end
            # The key travels only in data.end: nothing the requester received can be decrypted.
            assert all(len(body) != 6 for _peer, msg_type, body in net.sent if msg_type != wire.MSG_CHUNK)
            assert not out.exists() and _requester_spool(net) == []
            trail = [i["event"] for i in audit_dataset(net.node, dataset_id)["items"]]
            assert "DeliveryRecorded" not in trail and trail[-1] == "GrantRevoked"
            assert net.owner.stats["deliveries_revoked"] == 1

    run(scenario())
    aborted = [r for r in sharing_log.records if r.getMessage() == "delivery aborted"]
    assert aborted and "was revoked" in aborted[0].fields["reason"]  # type: ignore[attr-defined]


def test_a_delivery_the_owner_cannot_record_is_a_security_event_and_releases_no_key(
        pki: Pki, tmp_path: Path, dataset: Path, sharing_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            grant_id = await net.grant(B, dataset_id, "read")
            net.owner.limits = replace(net.owner.limits, record_wait=1.0)
            net.owner.submit_call = lambda to, data: (b"\x07" * 32, None)  # type: ignore[method-assign]
            out = tmp_path / "unrecorded.csv"
            with pytest.raises(DeliveryFailed, match="the owner aborted the delivery: the delivery record 0x0707"
                                                     ".* was not final within 1 s"):
                await net.requester.fetch(dataset_id, out, grant_id=grant_id)
            assert wire.MSG_END not in [msg_type for _peer, msg_type, _body in net.sent]
            assert not out.exists() and _requester_spool(net) == []
            assert net.owner.stats["records_failed"] == 1

    run(scenario())
    failed = [r for r in sharing_log.records if r.getMessage() == "delivery not recorded: key withheld"]
    assert failed and all(r.levelno == logging.ERROR for r in failed)


async def start_fetch_held_at_the_record(net: Net, dataset: Path, out: Path) -> asyncio.Future[Any]:
    """Publish ``dataset``, grant B a read and start B's fetch into ``out``; return once every chunk was
    sent and the owner is recording the delivery, which it holds for 30 s (the key is not released)."""
    dataset_id = await net.publish(dataset)
    grant_id = await net.grant(B, dataset_id, "read")
    recorded = asyncio.Event()
    honest = net.owner._record_delivery

    async def slow_record(*args: Any) -> bytes:
        recorded.set()
        await asyncio.sleep(30)
        return await honest(*args)

    net.owner._record_delivery = slow_record  # type: ignore[method-assign]
    fetch = asyncio.ensure_future(net.requester.fetch(dataset_id, out, grant_id=grant_id))
    await asyncio.wait_for(recorded.wait(), 10)
    return fetch


def test_a_fetch_cancelled_before_the_record_is_final_leaves_nothing(pki: Pki, tmp_path: Path,
                                                                     dataset: Path) -> None:
    """A fetch cancelled (client gone, node stopping) after every chunk arrived but before the owner's
    record is final leaves neither plaintext at its destination nor ciphertext in the spool."""
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            out = tmp_path / "cancelled.csv"
            fetch = await start_fetch_held_at_the_record(net, dataset, out)
            await wait_until(lambda: _requester_spool(net) != [], what="the spooled ciphertext")
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
            assert not out.exists() and _requester_spool(net) == []

    run(scenario())


def test_a_fetch_in_flight_when_the_requesters_node_stops_is_unavailable_not_a_remote_failure(
        pki: Pki, tmp_path: Path, dataset: Path) -> None:
    """The requester's own node stopping mid-delivery is SharingUnavailable (503: retry later), not
    DeliveryFailed (502: the owner failed); nothing of the delivery is kept."""
    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            out = tmp_path / "stopped.csv"
            fetch = await start_fetch_held_at_the_record(net, dataset, out)
            await net.requester.close()
            with pytest.raises(SharingUnavailable, match="shutting down") as refused:
                await asyncio.wait_for(fetch, 10)
            assert refused.value.http_status == 503
            assert not out.exists() and _requester_spool(net) == []

    run(scenario())


def test_an_old_config_with_a_consortium_pseudonym_key_gets_a_precise_error(tmp_path: Path) -> None:
    from chainshare.config import load_config
    from chainshare.errors import ConfigError

    path = tmp_path / "node.toml"
    path.write_text('[validator]\nkey_file = "v.json"\n[sharing]\nvault_dir = "vault"\n'
                    'pseudonym_key_file = "../../pseudonym.key"\n')
    with pytest.raises(ConfigError, match=r"\[sharing\] pseudonym_key_file is no longer supported: .*per owner, "
                                          r"grantee and dataset.*Remove the setting"):
        load_config(path, env={})
    path.write_text('[validator]\nkey_file = "v.json"\n')
    with pytest.raises(ConfigError, match="pseudonym_key_file is no longer supported"):
        load_config(path, env={"CHAINSHARE_SHARING_PSEUDONYM_KEY_FILE": "k"})


# --------------------------------------------------------------------------- the REST API's answers


def test_a_failure_of_the_owners_node_answers_502_through_the_rest_api(pki: Pki, tmp_path: Path,
                                                                       dataset: Path) -> None:
    """An owner's node that fails in a way it does not name (a storage error), or aborts a delivery it
    cannot record, is the owner's fault, not the client's: 502 Bad Gateway, documented in the OpenAPI."""
    import httpx

    from chainshare.api.app import create_app
    from chainshare.cli.signing import compute_signed_headers
    from chainshare.errors import StorageError
    from chainshare.sharing.service import register_sharing_service

    async def scenario() -> None:
        async with network(pki, tmp_path) as net:
            dataset_id = await net.publish(dataset)
            read_grant = await net.grant(B, dataset_id, "read")
            compute_grant = await net.grant(B, dataset_id, "compute")
            register_sharing_service(net.node, net.requester)  # the node's REST API acts for agency B
            audience = (net.node.cfg.node.name, CHAIN_ID)

            def broken_vault(dataset: Any) -> Any:
                raise StorageError("the vault file is unreadable")

            net.owner.find_vault_entry = broken_vault  # type: ignore[method-assign]
            query = {"select": [{"fn": "count"}], "epsilon": 1}
            stamp = (int(time.time()), secrets.token_bytes(16))
            message = wire.compute_query_message(dataset_id, compute_grant,
                                                 wire.compute_query_digest(canonical_json(query)), *audience, *stamp)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(net.node)),
                                         base_url="http://node/api/v1") as client:
                r = await client.post(f"/datasets/{dataset_id}/query", json={"grant_id": compute_grant,
                                                                             "query": query},
                                      headers=compute_signed_headers(pki.keys[B], message, *stamp))
                assert r.status_code == 502, r.text
                assert r.json()["error"] == {"type": "DeliveryFailed", "message": "the owner node 'node-a' failed: "
                                             "[Error] the vault file is unreadable"}

                del net.owner.find_vault_entry  # the vault works again; the record of the delivery never does
                net.owner.limits = replace(net.owner.limits, record_wait=1.0)
                net.owner.submit_call = lambda to, data: (b"\x07" * 32, None)  # type: ignore[method-assign]
                stamp = (int(time.time()), secrets.token_bytes(16))
                message = wire.compute_fetch_message(dataset_id, read_grant, *audience, *stamp)
                r = await client.post(f"/datasets/{dataset_id}/fetch", json={"grant_id": read_grant},
                                      headers=compute_signed_headers(pki.keys[B], message, *stamp))
                assert r.status_code == 502, r.text
                assert r.json()["error"]["type"] == "DeliveryFailed"
                assert "the owner aborted the delivery: the delivery record 0x0707" in r.json()["error"]["message"]

                spec = (await client.get("/openapi.json")).json()["paths"]
                for route in ("/datasets/{dataset_id}/query", "/datasets/{dataset_id}/fetch"):
                    assert {"502", "503"} <= set(spec[route]["post"]["responses"]), route

    run(scenario())


def test_a_data_plane_its_configuration_cannot_start_answers_503_on_every_data_plane_route(
        pki: Pki, tmp_path: Path) -> None:
    """A node whose [sharing] account keystore is unreadable is misconfigured; the request is not at fault:
    the signed data-plane routes, joint ones included, answer 503 SharingUnavailable naming the problem."""
    import httpx

    from chainshare.api.app import create_app
    from chainshare.config import P2PSection, SharingSection

    cfg = NodeConfig(
        p2p=P2PSection(ca_cert=str(pki.base / "ca" / "ca.crt"), node_cert=str(pki.node_dir("node-a") / "node.crt"),
                       node_key=str(pki.node_dir("node-a") / "node.key")),
        sharing=SharingSection(account_keystore="missing.json"), base_dir=tmp_path)
    key = validator("v1", A)
    node = Node(replace(cfg, node=replace(cfg.node, dev_mode=True)), pki.genesis, MemoryStore(),
                ValidatorKey(key.secret_key, key.public_key))
    headers = {wire.SIGNATURE_HEADER: "0x" + "11" * 65, wire.TIMESTAMP_HEADER: str(int(time.time())),
               wire.NONCE_HEADER: "22" * 16}

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(node)),
                                     base_url="http://node/api/v1") as client:
            return [await client.post("/joint/query", json={"datasets": [1, 2], "query": {}}, headers=headers),
                    await client.post("/joint/jobs/1/opening", headers=headers),
                    await client.get("/joint/jobs/1/opening"),
                    await client.post("/datasets/1/query", json={"query": {}}, headers=headers)]

    try:
        answers = run(scenario())
    finally:
        node.close()
    for r in answers:
        assert r.status_code == 503, (r.request.url, r.text)
        assert r.json()["error"]["type"] == "SharingUnavailable"
        assert r.json()["error"]["message"] == ("this node's data plane cannot start: cannot read the account "
                                                f"keystore {tmp_path / 'missing.json'}: No such file or directory")
