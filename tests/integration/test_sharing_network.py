"""Attacks on the data plane of a real 4-validator devnet (issue 5, item 6): ``chainshare node run``
processes on 127.0.0.1, one vault (with its own pseudonym secret) and agency account per node, mutual
TLS between them.

agency1 (node1) owns the datasets; its policy permits ``read`` and ``compute`` to agency2 only.

- a normal read and a normal computation by agency2 succeed, and ``chainshare audit`` shows every step in
  chain order (AccessRequested, AccessDecided with the policy ids, GrantIssued, DeliveryRecorded,
  ComputationRecorded), the same on every node;
- what a user can do through the CLI / REST of its own node: an agency with no grant, an expired, revoked,
  wrong-action grant or a grant for another dataset is refused by its own node before the owner is asked;
  queries that single out a person (groups below min_group, a filter on a unique value) are refused by the
  owner, which logs each refusal; a signed REST request is served once;
- what an attacker in control of a consortium node can do: a test-process ``P2PNode`` speaking with the
  real certificate and key of node3 (a non-grantee agency) or of node2 (the grantee, its own node's checks
  bypassed), the real node stopped meanwhile (a node name carries one connection). It sends
  ``data.fetch`` / ``data.query`` straight to node1: forged (another agency's grant, an unknown grant,
  another node's certificate, a certificate of another CA), stale, replayed, expired, revoked,
  wrong-dataset and wrong-action requests are each refused by the owner with a precise error and one
  structured line in DIR/nodes/node1/node.log, and no ``data.*`` message carrying data ever arrives;
- clients without a consortium node certificate (none, self-signed, another CA's, an agency certificate)
  are refused at the TLS handshake of node1's P2P port and receive no byte.

Every refusal leaks no byte of the dataset: the output file is absent, and no name or row of it appears in
stdout, stderr, response bodies or the node logs.

Not repeated here: a tampered ciphertext chunk is detected by the requester and nothing is kept —
tests/unit/test_sharing_service.py::test_a_tampered_chunk_is_detected_and_nothing_is_kept (owner and
requester services over real mutual-TLS P2P transports; the devnet has no hook for a malicious owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import secrets
import signal
import socket
import ssl
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eth_account import Account
from netkit import DevnetPool, cli_json, load_artifact, run_cli, wait_agencies_synced, wait_until
from web3 import Web3
from web3.logs import DISCARD

from chainshare.crypto.ca import init_ca, issue_node
from chainshare.devnet import is_running, node_config_path, read_devnet, start_devnet
from chainshare.errors import InvalidInput
from chainshare.p2p import P2PConfig, P2PNode, RequestFailed, TlsIdentity
from chainshare.sharing import protocol as wire
from chainshare.sharing.schema import canonical_json


def signed_headers(key: bytes, message: str, ts: int, nonce: bytes) -> dict[str, str]:
    return {wire.SIGNATURE_HEADER: "0x" + wire.sign_personal_message(key, message).hex(),
            wire.TIMESTAMP_HEADER: str(ts), wire.NONCE_HEADER: "0x" + nonce.hex()}

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("sharing-network")]

NODES = 4
ROWS = 40
DISTRICTS = ("north", "south", "east", "west")  # 10 rows each: a district is a reportable group
UNIQUE_AGE = 97  # one person only
POLICY = 'permit (principal == Agency::"agency2", action in [Action::"read", Action::"compute"], resource);\n'
SCHEMA = {"columns": [{"name": "name", "kind": "personal"}, {"name": "district", "kind": "string"},
                      {"name": "age", "kind": "integer"}, {"name": "income", "kind": "integer"}], "min_group": 5}
REFUSED = "data-plane request refused"


def person(i: int) -> dict[str, Any]:
    return {"name": f"Ysolde Quillfeather-{i:02d}", "district": DISTRICTS[i % 4],
            "age": UNIQUE_AGE if i == 7 else 30 + i % 10, "income": 52_000 + 37 * i}


PEOPLE = [person(i) for i in range(ROWS)]
UNIQUE_INCOME = PEOPLE[11]["income"]
# What must never leak: every name, and every row as it appears in the file (no hex hash contains commas).
SECRETS = ["Quillfeather"] + [p["name"] for p in PEOPLE] + \
          [f"{p['district']},{p['age']},{p['income']}" for p in PEOPLE]


def assert_no_leak(*texts: str | bytes) -> None:
    for text in texts:
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"dataset values leaked: {leaked[:3]} in {text[:300]!r}"


# --------------------------------------------------------------------------- the network


class Consortium:
    """A running multi-node devnet described by DIR/devnet.json."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.info: dict[str, Any] = read_devnet(directory)

    def reload(self) -> None:
        self.info = read_devnet(self.dir)

    def node(self, name: str) -> dict[str, Any]:
        return dict(next(n for n in self.info["nodes"] if n["name"] == name))

    def api(self, name: str) -> str:
        return str(self.node(name)["api"])

    def rpc_url(self, name: str) -> str:
        return str(self.node(name)["rpc"])

    def p2p_port(self, name: str) -> int:
        return int(tomllib.loads((self.dir / "nodes" / name / "node.toml").read_text())["p2p"]["listen_port"])

    @property
    def chain_id(self) -> int:
        return int(self.info["chain_id"])

    @property
    def genesis_hash(self) -> bytes:
        return bytes.fromhex(self.info["genesis_hash"][2:])

    def key(self, agency: str) -> bytes:
        return bytes.fromhex(next(a for a in self.info["accounts"] if a["agency"] == agency)["private_key"][2:])

    def keys_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name / "keys"

    def head(self, name: str = "node1") -> int:
        return int(httpx.get(self.api(name) + "/status", timeout=10).json()["head"]["height"])

    def rpc(self, name: str, method: str, *params: Any) -> Any:
        body = httpx.post(self.rpc_url(name), json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                     "params": list(params)}, timeout=10).json()
        assert "error" not in body, body
        return body["result"]

    def wait_receipt(self, tx_hash: str, name: str = "node1") -> dict[str, Any]:
        receipt = wait_until(lambda: self.rpc(name, "eth_getTransactionReceipt", tx_hash), 30, f"receipt {tx_hash}")
        assert receipt["status"] == "0x1", receipt
        return dict(receipt)

    def grant(self, grant_id: int, name: str = "node1") -> dict[str, Any]:
        return dict(httpx.get(f"{self.api(name)}/grants/{grant_id}", timeout=10).json())

    # -- logs -------------------------------------------------------------------------------
    def log_path(self, name: str = "node1") -> Path:
        return self.dir / "nodes" / name / "node.log"

    def log_offset(self, name: str = "node1") -> int:
        return self.log_path(name).stat().st_size

    def log_text(self, name: str = "node1", since: int = 0) -> str:
        with self.log_path(name).open("rb") as file:
            file.seek(since)
            return file.read().decode("utf-8", "replace")

    def log_lines(self, name: str = "node1", since: int = 0) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text(name, since).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def wait_log(self, since: int, what: str, timeout: float = 10, name: str = "node1",
                 **fields: Any) -> dict[str, Any]:
        """The first structured line of ``name``'s log after ``since`` whose fields equal ``fields``
        (``reason`` / ``detail``: a substring)."""
        def match(entry: dict[str, Any]) -> bool:
            for key, value in fields.items():
                if key in ("reason", "detail"):
                    if value not in str(entry.get(key, "")):
                        return False
                elif entry.get(key) != value:
                    return False
            return True

        return wait_until(lambda: next((e for e in self.log_lines(name, since) if match(e)), None), timeout,
                          f"a log line {fields} of {name} ({what})")

    # -- process control --------------------------------------------------------------------
    def stop_node(self, name: str) -> None:
        node = self.node(name)
        pid, config = int(node["pid"]), node_config_path(self.dir, node)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not is_running(pid, config), 20, f"{name} to stop")
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not is_running(pid, config), 10, f"{name} to die")

    def restart(self) -> None:
        """Start the nodes that are not running and wait until every node has caught up with node1."""
        start_devnet(self.dir, timeout=60)
        self.reload()
        target = self.head("node1")
        for n in self.info["nodes"]:
            wait_until(lambda n=n: self.head(n["name"]) >= target, 60, f"{n['name']} to catch up")


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Consortium:
    return Consortium(devnet_pool.start("consortium", NODES))


def cli(net: Consortium, agency: str, *args: Any, code: int = 0) -> Any:
    """``chainshare ARGS --devnet DIR --as AGENCY --json``: the JSON it printed (exit ``code`` asserted)."""
    proc = run_cli(*args, "--devnet", net.dir, "--as", agency, "--json")
    assert proc.returncode == code, f"exit {proc.returncode}; stdout: {proc.stdout!r}; stderr: {proc.stderr!r}"
    return cli_json(proc)


def cli_refused(net: Consortium, calls: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Run independent CLI commands (agency, args) at once; each must fail, print no JSON document and leak
    nothing. Their stderr, in order."""
    def run(call: tuple[str, tuple[Any, ...]]) -> Any:
        agency, args = call
        return run_cli(*args, "--devnet", net.dir, "--as", agency, "--json")

    with ThreadPoolExecutor(len(calls)) as pool:
        procs = list(pool.map(run, calls))
    for (_agency, args), proc in zip(calls, procs, strict=True):
        assert proc.returncode != 0, f"{args} succeeded: {proc.stdout}"
        assert proc.stdout.strip() == "", f"{args} printed {proc.stdout!r}"
        assert proc.stderr.startswith("error: "), proc.stderr
        assert_no_leak(proc.stdout, proc.stderr)
    return [proc.stderr for proc in procs]


# --------------------------------------------------------------------------- datasets and grants


def write_people(path: Path) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["name", "district", "age", "income"])
        writer.writeheader()
        writer.writerows(PEOPLE)
    return path


@dataclass(frozen=True)
class Published:
    people: int  # dataset id
    people_hash: str
    other: int  # a second dataset of agency1, same policy


@pytest.fixture(scope="module")
def published(net: Consortium, tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("datasets")
    policy = base / "agency2.cedar"
    policy.write_text(POLICY)
    schema = base / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    people = cli(net, "agency1", "dataset", "publish", write_people(base / "people.csv"), "--title", "People",
                 "--policy", policy, "--schema", schema)
    other_file = base / "vehicles.csv"
    other_file.write_text("vehicle_class,district,registrations\n" +
                          "".join(f"class{i % 3},{DISTRICTS[i % 4]},{100 + i}\n" for i in range(20)))
    other = cli(net, "agency1", "dataset", "publish", other_file, "--title", "Vehicles", "--policy", policy)
    assert people["policy_id"] == f"ds{people['dataset_id']}-p1"
    # the attacks below spend more than the default privacy budget (epsilon 10) of agency2 on People
    cli(net, "agency1", "access", "limits", people["dataset_id"], "--budget", 100, "--queries-per-hour", 100)
    return Published(int(people["dataset_id"]), people["content_hash"], int(other["dataset_id"]))


@dataclass(frozen=True)
class Grants:
    """agency2's grants, requested with web3.py (contracts/AccessControl.json) through node2."""

    read: int
    compute: int
    expiring: int  # read, 1 s
    revoked: int  # read, revoked by the owner agency1
    other: int  # read on the OTHER dataset


def send_calls(net: Consortium, node: str, agency: str, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Build AccessControl calls with web3.py (contracts/AccessControl.json), sign them with eth_account
    with consecutive nonces, send them to ``node``; the events each receipt holds, by name."""
    w3 = Web3(Web3.HTTPProvider(net.rpc_url(node), request_kwargs={"timeout": 30}))
    art = load_artifact("AccessControl")
    contract = w3.eth.contract(address=art["address"], abi=art["abi"])
    acct = Account.from_key(net.key(agency))
    nonce = w3.eth.get_transaction_count(acct.address, "pending")
    tx_hashes = []
    for i, (method, args) in enumerate(calls):
        tx = getattr(contract.functions, method)(*args).build_transaction(
            {"from": acct.address, "chainId": net.chain_id, "nonce": nonce + i, "gas": 2_000_000,
             "maxFeePerGas": 0, "maxPriorityFeePerGas": 0})
        tx_hashes.append(w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction))
    out = []
    for tx_hash in tx_hashes:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        assert receipt["status"] == 1, receipt
        events = {}
        for name in ("GrantIssued", "GrantRevoked"):
            for event in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD):
                events[name] = dict(event["args"])
        out.append(events)
    return out


@pytest.fixture(scope="module")
def grants(net: Consortium, published: Published) -> Grants:
    requests = [(published.people, "read", 0), (published.people, "compute", 0), (published.people, "read", 1),
                (published.people, "read", 0), (published.other, "read", 0)]
    issued = send_calls(net, "node2", "agency2", [("request", (ds, action, "attack tests", duration))
                                                  for ds, action, duration in requests])
    result = Grants(*(int(events["GrantIssued"]["grantId"]) for events in issued))
    (revoked,) = send_calls(net, "node1", "agency1", [("revokeGrant", (result.revoked,))])
    assert revoked["GrantRevoked"]["by"] == "agency1"
    wait_until(lambda: all(net.grant(result.revoked, n["name"])["revoked"] for n in net.info["nodes"]), 20,
               "the revocation on every node")
    return result


def wait_expired(net: Consortium, grant_id: int) -> None:
    for name in ("node1", "node2"):
        wait_until(lambda name=name: "expired" in str(net.grant(grant_id, name)["invalid_reason"]), 20,
                   f"grant {grant_id} to expire on {name}")


def spool_files(net: Consortium, name: str) -> list[str]:
    """What a node's delivery spool holds besides its replay record (a refused request leaves nothing)."""
    spool = net.dir / "nodes" / name / "vault" / "incoming"
    return sorted(p.name for p in spool.iterdir() if not p.name.startswith("replay-")) if spool.exists() else []


# --------------------------------------------------------------------------- an attacker's node


class RogueNode:
    """A ``P2PNode`` in this test process speaking for ``name`` with that node's real consortium
    certificate and key (an attacker in control of the node; the real process is stopped). It dials
    node1 only, acknowledges the chunks of any delivery and records every ``data.*`` message."""

    def __init__(self, net: Consortium, name: str) -> None:
        self.net = net
        self.name = name
        self.messages: list[tuple[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"rogue-{name}", daemon=True)
        self.thread.start()
        self.p2p: P2PNode | None = None
        try:
            self.run(self._start())
        except BaseException:
            self.close()
            raise

    def run(self, coro: Any, timeout: float = 40) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        keys = self.net.keys_dir(self.name)
        self.p2p = P2PNode(
            P2PConfig(node_name=self.name, chain_id=self.net.chain_id, genesis_hash=self.net.genesis_hash,
                      listen_port=0, peers=(("node1", "127.0.0.1", self.net.p2p_port("node1")),)),
            TlsIdentity(ca_cert=self.net.dir / "ca" / "ca.crt", cert=keys / "node.crt", key=keys / "node.key"),
            is_allowed=lambda subject: subject.node == "node1", on_message=self._on_message,
            on_request=self._on_request)
        await self.p2p.start()
        deadline = time.monotonic() + 30
        while True:  # connected, and node1 answers on this very connection (not a duplicate being retired)
            if self.p2p.is_connected("node1"):
                with contextlib.suppress(Exception):
                    await self.p2p.request("node1", "cs.head", None, timeout=2)
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the rogue {self.name} could not reach node1")
            await asyncio.sleep(0.1)

    async def _on_message(self, peer: str, msg_type: str, body: Any) -> None:
        if not msg_type.startswith(wire.MSG_PREFIX):
            return  # consensus traffic for the stopped validator
        self.messages.append((msg_type, body))
        if msg_type == wire.MSG_CHUNK and self.p2p is not None:
            self.p2p.send(peer, wire.MSG_ACK, wire.Ack(body[0], body[1]).to_wire())

    async def _on_request(self, peer: str, msg_type: str, body: Any) -> Any:
        raise InvalidInput("this node serves nothing")

    def close(self) -> None:
        try:
            if self.p2p is not None:
                self.run(self.p2p.close(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    # -- requests ---------------------------------------------------------------------------
    def fetch_request(self, dataset_id: int, grant_id: int, **changes: Any) -> wire.FetchRequest:
        values: dict[str, Any] = {
            "dataset_id": dataset_id, "grant_id": grant_id, "nonce": secrets.token_bytes(24),
            "issued_at": int(time.time()), "min_height": self.net.head("node1"),
            "transfer_id": secrets.token_bytes(wire.TRANSFER_ID_LEN),
            "node_cert_pem": (self.net.keys_dir(self.name) / "node.crt").read_bytes(), "window": 4}
        values.update(changes)
        return wire.FetchRequest(**values)

    def query_request(self, dataset_id: int, grant_id: int, query: dict[str, Any]) -> wire.QueryRequest:
        return wire.QueryRequest(dataset_id, grant_id, secrets.token_bytes(24), int(time.time()),
                                 self.net.head("node1"), canonical_json(query))

    def ask(self, msg_type: str, body: Any) -> tuple[bool, Any]:
        """(True, answer) or (False, the owner's error message)."""
        async def go() -> tuple[bool, Any]:
            assert self.p2p is not None
            try:
                return True, await self.p2p.request("node1", msg_type, body, timeout=30)
            except RequestFailed as exc:
                return False, exc.message

        return self.run(go())  # type: ignore[no-any-return]

    def refused(self, msg_type: str, body: Any) -> str:
        ok, answer = self.ask(msg_type, body)
        assert not ok, f"node1 accepted the {msg_type}: {answer!r}"
        assert_no_leak(str(answer))
        return str(answer)

    def data_messages(self, transfer_id: bytes | None = None) -> list[str]:
        return [t for t, body in list(self.messages)
                if transfer_id is None or (isinstance(body, list) and body and body[0] == transfer_id)]


@contextlib.contextmanager
def rogue(net: Consortium, name: str) -> Iterator[RogueNode]:
    """Stop ``name`` and speak for it from this process; restart it (and wait for it to catch up) after."""
    net.stop_node(name)
    node: RogueNode | None = None
    try:
        node = RogueNode(net, name)
        yield node
    finally:
        try:
            if node is not None:
                node.close()
        finally:
            net.restart()


def owner_refusal(net: Consortium, since: int, peer: str, msg_type: str, error: str, reason: str,
                  **fields: Any) -> dict[str, Any]:
    """node1's structured refusal line for one request (never data)."""
    line = net.wait_log(since, reason, msg=REFUSED, logger="chainshare.sharing", level="warning", peer=peer,
                        request=msg_type, error=error, reason=reason, **fields)
    assert set(line) >= {"ts", "peer", "agency", "request", "error", "reason"}
    return line


# --------------------------------------------------------------------------- normal use, fully audited


def test_a_normal_read_and_computation_succeed_and_are_fully_audited(net: Consortium, published: Published,
                                                                     tmp_path: Path) -> None:
    ds = published.people
    since = net.log_offset()
    read = cli(net, "agency2", "access", "request", ds, "--action", "read", "--purpose", "statistics")
    assert read["allowed"] is True and read["policy_ids"] == [f"ds{ds}-p1#0"] and read["grant_id"]
    out = tmp_path / "people.csv"
    fetched = cli(net, "agency2", "dataset", "fetch", ds, "--out", out)
    assert (fetched["grant_id"], fetched["action"], fetched["content_hash"]) == \
           (read["grant_id"], "read", published.people_hash)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == ROWS and all(r["name"].startswith("ps_") for r in rows)
    assert len({r["name"] for r in rows}) == ROWS  # one pseudonym per person
    assert [(r["district"], int(r["age"]), int(r["income"])) for r in rows] == \
           [(p["district"], p["age"], p["income"]) for p in PEOPLE]
    assert "Quillfeather" not in out.read_text()  # names arrive only as pseudonyms under 'read'

    compute = cli(net, "agency2", "access", "request", ds, "--action", "compute", "--purpose", "statistics")
    assert compute["allowed"] is True and compute["policy_ids"] == [f"ds{ds}-p1#0"]
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"select": [{"fn": "count"}], "group_by": ["district"], "epsilon": 3}))
    answer = cli(net, "agency2", "dataset", "query", ds, "--query", query)
    assert answer["columns"] == ["district", "count"]
    # differentially private: each count carries discrete Laplace noise of scale 1/3 (|noise| >= 4: p < 1e-5)
    assert [g[0] for g in answer["groups"]] == sorted(DISTRICTS)
    assert all(abs(count - 10) <= 3 for _district, count in answer["groups"]), answer["groups"]
    net.wait_receipt(fetched["record_tx"])
    net.wait_receipt(answer["record_tx"])
    net.wait_log(since, "the delivery", msg="delivery sent", peer="node2", agency="agency2",
                 grant=read["grant_id"], bytes=out.stat().st_size)
    net.wait_log(since, "the query", msg="query answered", peer="node2", agency="agency2",
                 grant=compute["grant_id"], query_hash=answer["query_hash"])

    trail = cli(net, "agency1", "audit", "--dataset", ds)["items"]
    positions = [(i["block"], i["tx_index"], i["log_index"]) for i in trail]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    def steps(grant: dict[str, Any], last: str) -> list[dict[str, Any]]:
        """The trail's events of one request, in trail order."""
        request_id, grant_id = grant["request_id"], grant["grant_id"]
        return [i for i in trail
                if (i["event"] in ("AccessRequested", "AccessDecided") and i["args"]["requestId"] == request_id)
                or (i["event"] in ("GrantIssued", last) and i["args"]["grantId"] == grant_id)]

    for grant, action, last in ((read, "read", "DeliveryRecorded"), (compute, "compute", "ComputationRecorded")):
        events = steps(grant, last)
        assert [e["event"] for e in events] == ["AccessRequested", "AccessDecided", "GrantIssued", last]
        requested, decided, issued, used = (e["args"] for e in events)
        assert (requested["requester"], requested["action"], requested["purpose"]) == \
               ("agency2", action, "statistics")
        assert decided["allowed"] is True and decided["policyIds"] == [f"ds{ds}-p1#0"] and decided["errors"] == []
        assert (issued["grantee"], issued["action"], issued["expiresAt"]) == ("agency2", action, grant["expires_at"])
        assert used["grantee"] == "agency2"
    delivered = steps(read, "DeliveryRecorded")[-1]["args"]
    assert (delivered["contentHash"], delivered["bytesDelivered"]) == (published.people_hash, out.stat().st_size)
    computed = steps(compute, "ComputationRecorded")[-1]["args"]
    assert (computed["queryHash"], computed["resultHash"]) == (answer["query_hash"], answer["result_hash"])
    assert steps(read, "DeliveryRecorded")[-1]["tx_hash"] == fetched["record_tx"]
    assert steps(compute, "ComputationRecorded")[-1]["tx_hash"] == answer["record_tx"]

    # Every node tells the same story (each from its own finalized chain).
    last_position = positions[-1]
    for name in ("node2", "node3", "node4"):
        def theirs(name: str = name) -> Any:
            items = httpx.get(f"{net.api(name)}/datasets/{ds}/audit", timeout=10).json()["items"]
            mine = [i for i in items if (i["block"], i["tx_index"], i["log_index"]) <= last_position]
            return mine if len(mine) == len(trail) else None

        assert wait_until(theirs, 20, f"{name}'s audit trail") == trail
    assert_no_leak(net.log_text("node1", since), net.log_text("node2"))


# --------------------------------------------------------------------------- through the user's own node


def test_an_agency_without_a_grant_is_denied_and_gets_nothing(net: Consortium, published: Published,
                                                             tmp_path: Path) -> None:
    ds = published.people
    since = net.log_offset()
    denied = cli(net, "agency3", "access", "request", ds, "--action", "read", "--purpose", "curious", code=1)
    assert denied["allowed"] is False and denied["grant_id"] is None and denied["expires_at"] is None
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"select": [{"fn": "count"}]}))
    out = tmp_path / "stolen.csv"
    fetch_err, query_err = cli_refused(net, [("agency3", ("dataset", "fetch", ds, "--out", out)),
                                             ("agency3", ("dataset", "query", ds, "--query", query))])
    assert f"agency 'agency3' holds no 'read' or 'read_identified' grant for dataset {ds}" in fetch_err
    assert f"agency 'agency3' holds no 'compute' grant for dataset {ds}" in query_err
    assert list(tmp_path.iterdir()) == [query]  # no output file, no partial file

    # agency2's account cannot make node3 act for it: a node acts only for its own agency.
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    message = wire.compute_fetch_message(ds, None, "node3", net.chain_id, ts, nonce)
    response = httpx.post(f"{net.api('node3')}/datasets/{ds}/fetch", json={"grant_id": None}, timeout=30,
                          headers=signed_headers(net.key("agency2"), message, ts, nonce))
    assert response.status_code == 403
    assert "an account of agency 'agency2'; this node acts only for agency 'agency3'" in \
           response.json()["error"]["message"]
    assert_no_leak(response.text)

    wait_agencies_synced(net.info, "agency3", "agency1")  # the denial is final on node3; node1's audit reads it
    decided = [i for i in httpx.get(f"{net.api('node1')}/datasets/{ds}/audit", timeout=10).json()["items"]
               if i["event"] == "AccessDecided" and i["args"]["requestId"] == denied["request_id"]]
    assert len(decided) == 1 and decided[0]["args"]["allowed"] is False and decided[0]["args"]["requester"] == "agency3"
    time.sleep(0.5)
    assert not [e for e in net.log_lines("node1", since) if e.get("agency") == "agency3"], \
        "node1 was asked for data on behalf of agency3"
    assert spool_files(net, "node3") == []


def test_the_requesting_node_refuses_unusable_grants_before_asking_the_owner(
        net: Consortium, published: Published, grants: Grants, tmp_path: Path) -> None:
    ds = published.people
    wait_expired(net, grants.expiring)
    since = net.log_offset()
    expired, revoked, wrong_action = cli_refused(net, [
        ("agency2", ("dataset", "fetch", ds, "--grant", grants.expiring, "--out", tmp_path / "expired.csv")),
        ("agency2", ("dataset", "fetch", ds, "--grant", grants.revoked, "--out", tmp_path / "revoked.csv")),
        ("agency2", ("dataset", "fetch", ds, "--grant", grants.compute, "--out", tmp_path / "compute.csv")),
    ])
    assert f"grant {grants.expiring} expired at " in expired and "request a new grant" in expired
    assert f"grant {grants.revoked} was revoked" in revoked
    assert f"grant {grants.compute} is for 'compute'; this needs 'read' or 'read_identified'" in wrong_action

    # A grant for another dataset, named explicitly in a signed REST request to the agency's own node.
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    message = wire.compute_fetch_message(ds, grants.other, "node2", net.chain_id, ts, nonce)
    response = httpx.post(f"{net.api('node2')}/datasets/{ds}/fetch", json={"grant_id": grants.other}, timeout=30,
                          headers=signed_headers(net.key("agency2"), message, ts, nonce))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == \
        f"grant {grants.other} is for dataset {published.other}, not dataset {ds}"
    assert_no_leak(response.text)

    assert list(tmp_path.iterdir()) == []
    time.sleep(0.5)
    asked = [e for e in net.log_lines("node1", since)
             if e.get("logger") == "chainshare.sharing" and e.get("grant") in
             (grants.expiring, grants.revoked, grants.compute, grants.other)]
    assert asked == [], "the owner was asked although the requester's node knew better"
    wait_until(lambda: spool_files(net, "node2") == [], 10, "node2's spool to be empty")


def test_queries_that_single_out_a_person_are_refused_and_logged_by_the_owner(
        net: Consortium, published: Published, grants: Grants, tmp_path: Path) -> None:
    ds = published.people
    queries = {
        "small_groups": {"select": [{"fn": "count"}, {"fn": "avg", "column": "income", "bounds": [0, 100_000]}],
                         "group_by": ["age"]},
        "one_per_group": {"select": [{"fn": "max", "column": "income"}], "group_by": ["district", "age"]},
        "unique_age": {"select": [{"fn": "avg", "column": "income", "bounds": [0, 100_000]}], "epsilon": 10,
                       "where": [{"column": "age", "op": "==", "value": UNIQUE_AGE}]},  # noise scale 0.3
        "unique_income": {"select": [{"fn": "count"}, {"fn": "min", "column": "age"}],
                          "where": [{"column": "income", "op": "==", "value": UNIQUE_INCOME}]},
        "personal_column": {"select": [{"fn": "count"}], "group_by": ["name"]},
    }
    for name, query in queries.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(query))
    since = net.log_offset()
    errors = dict(zip(queries, cli_refused(net, [
        ("agency2", ("dataset", "query", ds, "--grant", grants.compute, "--query", tmp_path / f"{name}.json"))
        for name in queries]), strict=True))
    owner_says = "the owner node 'node1' refused: query refused by the dataset's privacy rule: "
    assert owner_says + "no group reaches" in errors["small_groups"], errors["small_groups"]
    assert owner_says + "fewer than min_group=5 rows match its filters" in errors["unique_age"], errors["unique_age"]
    # min and max returned one person's value: the requester's own node refuses them (the owner too)
    for name, fn in (("one_per_group", "max"), ("unique_income", "min")):
        assert f"{fn} is not offered: it would return one person's exact value" in errors[name], errors[name]
    # A personal column is refused by the requester's own node already (the owner refuses it too: below).
    assert "column 'name' is personal" in errors["personal_column"]
    for text in errors.values():  # the refusal says neither which group nor how many rows
        assert str(UNIQUE_INCOME) not in text and "groups" not in text

    lines = [owner_refusal(net, since, "node2", wire.MSG_QUERY, "QueryRefused", "min_group=5", grant=grants.compute,
                           dataset=ds, agency="agency2")]
    wait_until(lambda: len([e for e in net.log_lines("node1", since) if e.get("msg") == REFUSED]) >= 2, 10,
               "two refusals")
    refusals = [e for e in net.log_lines("node1", since) if e.get("msg") == REFUSED]
    assert len(refusals) == 2 and {e["error"] for e in refusals} == {"QueryRefused"}, refusals
    assert {e["grant"] for e in refusals} == {grants.compute} and lines[0] in refusals
    assert not [e for e in net.log_lines("node1", since) if e.get("msg") == "query answered"]
    assert_no_leak(net.log_text("node1", since))


def test_a_signed_rest_request_is_served_once(net: Consortium, published: Published, grants: Grants) -> None:
    ds = published.people
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    headers = signed_headers(net.key("agency2"), wire.compute_fetch_message(ds, grants.read, "node2", net.chain_id,
                                                                            ts, nonce), ts, nonce)
    url = f"{net.api('node2')}/datasets/{ds}/fetch"
    first = httpx.post(url, json={"grant_id": grants.read}, headers=headers, timeout=30)
    assert first.status_code == 200 and first.text.startswith("name,district,age,income")
    replayed = httpx.post(url, json={"grant_id": grants.read}, headers=headers, timeout=30)
    assert replayed.status_code == 403
    assert replayed.json()["error"]["message"] == \
        "this signed request was already served: sign a new one (fresh nonce)"
    assert_no_leak(replayed.text)


def _signed(net: Consortium, path: str, dataset_id: int, grants: Grants) -> tuple[str, dict[str, Any], bytes,
                                                                                 dict[str, str]]:
    ts, nonce = int(time.time()), secrets.token_bytes(16)
    if path == "fetch":
        body: dict[str, Any] = {"grant_id": grants.read}
        message = wire.compute_fetch_message(dataset_id, grants.read, "node2", net.chain_id, ts, nonce)
    else:
        body = {"grant_id": grants.compute, "query": {"select": [{"fn": "count"}]}}
        digest = wire.compute_query_digest(canonical_json(body["query"]))
        message = wire.compute_query_message(dataset_id, grants.compute, digest, "node2", net.chain_id, ts, nonce)
    headers = signed_headers(net.key("agency2"), message, ts, nonce)
    return (f"{net.api('node2')}/datasets/{dataset_id}/{path}", body,
            wire.sign_personal_message(net.key("agency2"), message), headers)


@pytest.mark.parametrize("path", ["fetch", "query"])
def test_a_signed_rest_request_replayed_with_its_v_re_encoded_is_refused(
        net: Consortium, published: Published, grants: Grants, path: str) -> None:
    url, body, signature, headers = _signed(net, path, published.people, grants)
    first = httpx.post(url, json=body, timeout=30, headers=headers)
    assert first.status_code == 200, first.text
    assert signature[64] in (27, 28)
    same = signature[:64] + bytes([signature[64] - 27])  # the same (r, s, y-parity): the same signer
    replayed = httpx.post(url, json=body, timeout=30, headers={**headers, wire.SIGNATURE_HEADER: "0x" + same.hex()})
    assert replayed.status_code == 403, f"the replay was served: HTTP {replayed.status_code} {replayed.text[:120]!r}"
    assert_no_leak(replayed.text)


# --------------------------------------------------------------------------- the P2P port


def _self_signed(directory: Path, agency: str, node: str) -> tuple[Path, Path]:
    """A self-signed certificate that claims to be ``node`` of ``agency`` (the URIs a node certificate has)."""
    directory.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency),
                      x509.NameAttribute(NameOID.COMMON_NAME, node)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(f"urn:chainshare:agency:{agency}"),
                x509.UniformResourceIdentifier(f"urn:chainshare:node:{node}")]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "node.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return directory / "node.crt", directory / "node.key"


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """node2 of agency2 as certified by ANOTHER CA (directory with node.crt / node.key)."""
    base = tmp_path_factory.mktemp("foreign")
    init_ca(base / "ca", name="another consortium", password=None)
    issue_node(base / "ca", None, "agency2", "node2", base / "node2", key_password=None, kdf_light=True)
    return base / "node2"


def tls_client(port: int, cert: Path | None = None, key: Path | None = None) -> tuple[bytes, int]:
    """Connect to a P2P port with TLS 1.3 (optionally presenting ``cert``); the application bytes received
    (at most one frame) and the local port."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the client's view does not matter: the server must refuse IT
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        local_port = int(raw.getsockname()[1])
        with contextlib.suppress(ssl.SSLError, OSError), ctx.wrap_socket(raw) as tls:
            tls.settimeout(10)
            while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
                block = tls.recv(4096)
                if not block:
                    break
                received += block
    return received, local_port


def test_clients_without_a_consortium_node_certificate_are_refused_at_the_handshake(
        net: Consortium, foreign: Path, tmp_path: Path) -> None:
    port = net.p2p_port("node1")
    since = net.log_offset()
    # Control: with a real node certificate the same client gets node1's hello (its first frame).
    hello, _ = tls_client(port, net.keys_dir("node4") / "node.crt", net.keys_dir("node4") / "node.key")
    assert len(hello) > 4 and b"p2p.hello" in hello and b"node1" in hello

    self_signed = _self_signed(tmp_path / "self-signed", "agency2", "node2")
    agency_dir = net.dir / "agencies" / "agency2"
    attempts = {
        "no certificate": ((None, None), "tls_failed", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        "self-signed": (self_signed, "tls_failed", "certificate"),
        "another CA": ((foreign / "node.crt", foreign / "node.key"), "tls_failed", "certificate"),
        "agency, not node": ((agency_dir / "agency.crt", agency_dir / "agency.key"), None, None),
    }
    for what, ((cert, key), reason, detail) in attempts.items():
        received, local_port = tls_client(port, cert, key)
        assert received == b"", f"{what}: node1 sent {received[:40]!r}"
        fields: dict[str, Any] = {"reason": reason} if reason else {}
        if detail:
            fields["detail"] = detail
        line = net.wait_log(since, what, msg="p2p connection refused", logger="chainshare.p2p", node="node1",
                            remote=f"127.0.0.1:{local_port}", **fields)
        assert line["level"] == "warning" and line["reason"] in ("tls_failed", "not_a_node", "invalid_certificate")
    assert net.head("node1") >= 1


def test_a_non_grantee_node_with_a_valid_consortium_certificate_is_refused_by_the_owner(
        net: Consortium, published: Published, grants: Grants) -> None:
    ds = published.people
    since = net.log_offset()
    with rogue(net, "node3") as node3:
        # agency2's grant, asked for by node3 (agency3): a forged delivery request.
        forged = node3.fetch_request(ds, grants.read)
        answer = node3.refused(wire.MSG_FETCH, forged.to_wire())
        assert answer.endswith(f"[Unauthorized] grant {grants.read} was issued to agency 'agency2', but the "
                               "requesting node 'node3' is certified for agency 'agency3'"), answer
        # ... even naming node2's certificate for the key: the TLS session decides who asks.
        as_node2 = node3.fetch_request(ds, grants.read,
                                       node_cert_pem=(net.keys_dir("node2") / "node.crt").read_bytes())
        assert "[Unauthorized] grant" in node3.refused(wire.MSG_FETCH, as_node2.to_wire())
        unknown = node3.fetch_request(ds, 10**9)
        assert f"[NotFound] no grant {10**9}" in node3.refused(wire.MSG_FETCH, unknown.to_wire())
        query = node3.query_request(ds, grants.compute, {"select": [{"fn": "count"}], "group_by": ["district"]})
        answer = node3.refused(wire.MSG_QUERY, query.to_wire())
        assert answer.endswith(f"[Unauthorized] grant {grants.compute} was issued to agency 'agency2', but the "
                               "requesting node 'node3' is certified for agency 'agency3'"), answer

        for msg_type, grant, error, reason in (
                (wire.MSG_FETCH, grants.read, "Unauthorized", "issued to agency 'agency2'"),
                (wire.MSG_FETCH, 10**9, "NotFound", f"no grant {10**9}"),
                (wire.MSG_QUERY, grants.compute, "Unauthorized", "issued to agency 'agency2'")):
            owner_refusal(net, since, "node3", msg_type, error, reason, agency="agency3", dataset=ds, grant=grant)
        assert node3.data_messages() == [], "node1 sent data.* messages to a non-grantee"
    refusals = [e for e in net.log_lines("node1", since) if e.get("msg") == REFUSED]
    assert len(refusals) == 4 and {e["peer"] for e in refusals} == {"node3"}
    assert not [e for e in net.log_lines("node1", since) if e.get("msg") in ("delivery accepted", "query answered")]
    assert_no_leak(net.log_text("node1", since))


def test_the_owner_refuses_stale_replayed_forged_and_invalid_grant_requests_of_the_grantee_node(
        net: Consortium, published: Published, grants: Grants, foreign: Path) -> None:
    ds = published.people
    wait_expired(net, grants.expiring)
    since = net.log_offset()
    with rogue(net, "node2") as node2:
        # A valid request (node2's own checks bypassed, the owner's are not): served.
        valid = node2.fetch_request(ds, grants.read)
        ok, accepted = node2.ask(wire.MSG_FETCH, valid.to_wire())
        assert ok and wire.FetchAccepted.from_wire(accepted).transfer_id == valid.transfer_id
        wait_until(lambda: wire.MSG_END in node2.data_messages(valid.transfer_id), 20, "the delivery to end")
        assert node2.data_messages(valid.transfer_id)[0] == wire.MSG_BEGIN

        refused: list[tuple[wire.FetchRequest | wire.QueryRequest, str, str, str]] = []

        def refuse(request: Any, error: str, expected: str) -> None:
            msg_type = wire.MSG_FETCH if isinstance(request, wire.FetchRequest) else wire.MSG_QUERY
            answer = node2.refused(msg_type, request.to_wire())
            assert answer.startswith(f"peer 'node1' answered an error: [{error}] ") and expected in answer, answer
            refused.append((request, msg_type, error, expected))

        replayed = f"replayed request: nonce 0x{valid.nonce.hex()[:16]}... was already used with grant {grants.read}"
        refuse(valid, "Unauthorized", replayed)  # the captured request, byte for byte
        refuse(node2.fetch_request(ds, grants.read, nonce=valid.nonce), "Unauthorized", replayed)  # new transfer
        refuse(node2.fetch_request(ds, grants.read, issued_at=int(time.time()) - 3600), "InvalidInput",
               "outside this node's window of 300 s")
        refuse(node2.fetch_request(ds, grants.expiring), "Unauthorized", f"grant {grants.expiring} expired at ")
        refuse(node2.fetch_request(ds, grants.revoked), "Unauthorized", f"grant {grants.revoked} was revoked")
        refuse(node2.fetch_request(ds, grants.other), "Unauthorized",
               f"grant {grants.other} is for dataset {published.other}, not dataset {ds}")
        refuse(node2.fetch_request(ds, grants.compute), "Unauthorized",
               f"grant {grants.compute} is for 'compute'; this request needs 'read' or 'read_identified'")
        refuse(node2.fetch_request(ds, grants.read, node_cert_pem=(net.keys_dir("node3") / "node.crt").read_bytes()),
               "Unauthorized", "the node certificate in the request names node 'node3' of agency 'agency3', but "
                               "the request came over the authenticated session of node 'node2' of agency 'agency2'")
        refuse(node2.fetch_request(ds, grants.read, node_cert_pem=(foreign / "node.crt").read_bytes()),
               "Unauthorized", "the node certificate in the request is refused")
        refuse(node2.query_request(ds, grants.compute, {"select": [{"fn": "count"}], "group_by": ["name"]}),
               "QueryRefused", "column 'name' is personal")  # an attempt at personal data: refused on chain
        refuse(node2.query_request(ds, grants.read, {"select": [{"fn": "count"}]}),
               "Unauthorized", f"grant {grants.read} is for 'read'; this request needs 'compute'")
        refuse(node2.query_request(ds, grants.compute, {"select": [{"fn": "avg", "column": "income",
                                                                    "bounds": [0, 100_000]}], "epsilon": 10,
                                                        "where": [{"column": "age", "op": "==",
                                                                   "value": UNIQUE_AGE}]}),
               "QueryRefused", "query refused by the dataset's privacy rule: fewer than min_group=5 rows match")

        for request, msg_type, error, expected in refused:
            owner_refusal(net, since, "node2", msg_type, error, expected, agency="agency2", dataset=ds,
                          grant=request.grant_id)
        time.sleep(0.3)
        assert node2.data_messages().count(wire.MSG_BEGIN) == 1, "a refused request started a delivery"
        for request, _msg_type, _error, _expected in refused:
            if isinstance(request, wire.FetchRequest) and request.transfer_id != valid.transfer_id:
                assert node2.data_messages(request.transfer_id) == []
    refusals = [e for e in net.log_lines("node1", since) if e.get("msg") == REFUSED]
    assert len(refusals) == len(refused)
    served = [e for e in net.log_lines("node1", since) if e.get("msg") in ("delivery accepted", "query answered")]
    assert [(e["msg"], e["grant"]) for e in served] == [("delivery accepted", grants.read)]
    assert_no_leak(net.log_text("node1", since))


def test_a_request_naming_another_certificate_than_the_tls_one_is_refused(
        net: Consortium, published: Published, grants: Grants, tmp_path: Path) -> None:
    # A second certificate for node2 of agency2 from the consortium CA (e.g. an old or leaked one).
    second = issue_node(net.dir / "ca", None, "agency2", "node2", tmp_path / "second", key_password=None,
                        kdf_light=True)
    since = net.log_offset()
    with rogue(net, "node2") as node2:
        request = node2.fetch_request(published.people, grants.read, node_cert_pem=second.cert_pem.encode())
        try:
            answer = node2.refused(wire.MSG_FETCH, request.to_wire())
        finally:
            time.sleep(0.5)  # let an accepted delivery finish before the rogue node goes
        assert "[Unauthorized] the node certificate in the request is not the one the peer presented in TLS" \
            in answer
        owner_refusal(net, since, "node2", wire.MSG_FETCH, "Unauthorized", "presented in TLS")
        assert node2.data_messages() == []
