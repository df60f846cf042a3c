"""``chainshare bench sharing``: the data plane's benchmark (one JSON object, saved under bench-results/).

Three figures:

- ``cedar``: Cedar evaluation time per access decision (``cedar.evaluate_access`` on a dataset
  policy plus a consortium-wide forbid policy, the work ``AccessControl.request`` does per request),
  in process, p50/p99/mean over ``--cedar-iterations`` calls.
- ``decisions``: access decisions finalized per second on a devnet of ``--nodes`` validators (real
  node processes; default 4);
  ``--decisions`` pre-signed ``AccessControl.request`` transactions from one agency account, sent
  by ``--clients`` concurrent JSON-RPC clients, following the finalized blocks and fetching each
  receipt once; each receipt holds the decision (``AccessDecided``) and its grant.
- ``delivery``: a ``--dataset-mb`` CSV dataset delivered between two nodes: two data-sharing
  services in this process, each with its own mutual-TLS 1.3 P2P transport on 127.0.0.1, over one
  shared in-memory chain (multi-validator networks are not wired yet). Reports throughput per
  action, the process CPU time per MiB (both ends: parse, pseudonymize, encrypt, frame, decrypt,
  write), and the process RSS sampled every 20 ms during each transfer (both ends live in this
  process, so a flat RSS shows that neither buffers the dataset).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil

from chainshare.bench import _drive, free_port_block
from chainshare.benchmachine import describe_machine
from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS, cedar
from chainshare.execution.runtime import encode_call
from chainshare.ledger.txs import sign_eip1559
from chainshare.sharing.records import ACCESS_CONTRACT, DATASETS_CONTRACT

BENCH_POLICY = ('permit (principal, action in [Action::"read", Action::"compute"], resource)\n'
                'when { principal == resource.owner && context.purpose like "bench*" };\n')
CONSORTIUM_FORBID = ('forbid (principal, action == Action::"read_identified", resource)\n'
                     'unless { principal.jurisdiction == resource.owner.jurisdiction };\n')
MB = 1024 * 1024


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --------------------------------------------------------------------------- Cedar


def measure_cedar(iterations: int) -> dict[str, Any]:
    principal = cedar.AgencyFacts("agency1", "member", "CN-31")
    query = cedar.AccessQuery(principal, principal, 1, cedar.ACTION_READ, "bench", int(time.time()))
    policies = [("ds1-p1", BENCH_POLICY), ("no-export", CONSORTIUM_FORBID)]
    decision = cedar.evaluate_access(query, policies)  # warm-up (worker thread, parser caches)
    assert decision.allowed, decision
    times = []
    for i in range(iterations):
        q = cedar.AccessQuery(principal, principal, 1 + i % 50, cedar.ACTION_READ, f"bench {i}", query.time)
        t0 = time.perf_counter()
        cedar.evaluate_access(q, policies)
        times.append((time.perf_counter() - t0) * 1e6)
    return {"iterations": iterations, "p50_us": round(_percentile(times, 0.5), 1),
            "p99_us": round(_percentile(times, 0.99), 1), "mean_us": round(statistics.fmean(times), 1)}


# --------------------------------------------------------------------------- decisions over a devnet


def _drive_requests(url: str, raws: list[bytes], clients: int, max_pending: int | None) -> dict[str, Any]:
    """The access requests through the load client of ``bench ingest`` (``chainshare.bench._drive``: closed
    loop under ``max_pending``, a "busy, retry" pauses every sender for its retryAfter); a decision counts
    as allowed when its receipt succeeded with the three events of a granted request."""
    allowed = 0

    def count(receipt: dict[str, Any]) -> None:
        nonlocal allowed
        allowed += receipt["status"] == "0x1" and len(receipt["logs"]) == 3

    run = asyncio.run(_drive([url], raws, clients, 500, stall_s=30.0, max_pending=max_pending, on_receipt=count))
    return {"decisions": run["confirmed"], "allowed": allowed, "errors": run["errors"],
            "refused_busy": run["refused_busy"], "max_pending": max_pending,
            "first_error": (run["error_samples"] or [None])[0], "seconds": run["wall_s"],
            "decisions_per_s": run["e2e_tps"], "latency_p50_ms": run["latency_ms"]["p50"],
            "latency_p99_ms": run["latency_ms"]["p99"]}


def measure_decisions(directory: Path, count: int, clients: int, nodes: int = 4,
                      max_pending: int | None = None) -> dict[str, Any]:
    from chainshare.client import NodeClient, transact
    from chainshare.devnet import create_devnet, start_devnet, stop_devnet

    create_devnet(directory, nodes, free_port_block(2 * nodes), empty_block_interval_ms=1000)
    try:
        info = start_devnet(directory)
        url = info["nodes"][0]["rpc"]
        pids = [n["pid"] for n in info["nodes"]]
        key = bytes.fromhex(info["accounts"][0]["private_key"][2:])
        with NodeClient(url) as client:
            receipt = transact(client, key, DATASETS, encode_call(
                DATASETS_CONTRACT, "register", "bench", secrets.token_bytes(32),
                '{"columns":[{"name":"a","kind":"integer"}]}', 1, BENCH_POLICY))
            assert receipt["status"] == "0x1", receipt
            sender = info["accounts"][0]["address"]
            nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
            probe = encode_call(ACCESS_CONTRACT, "request", 1, "read", "bench 0000000", 0)
            gas = int(client.rpc("eth_estimateGas", {"from": sender, "to": "0x" + ACCESS_CONTROL.hex(),
                                                     "data": "0x" + probe.hex()}), 16)
        raws = [sign_eip1559(key, chain_id=info["chain_id"], nonce=nonce + i, to=ACCESS_CONTROL,
                             data=encode_call(ACCESS_CONTRACT, "request", 1, "read", f"bench {i:07d}", 0),
                             gas=gas * 3 // 2) for i in range(count)]
        processes = [psutil.Process(pid) for pid in pids]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in processes)
        result = _drive_requests(url, raws, clients, max_pending)
        cpu = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu0
        result["nodes"] = nodes
        result["gas_per_request"] = gas
        result["node_cpu_us_per_decision"] = round(cpu / max(result["decisions"], 1) * 1e6, 1)
        result["node_rss_mb"] = round(sum(p.memory_info().rss for p in processes) / MB, 1)
        return result
    finally:
        stop_devnet(directory)


# --------------------------------------------------------------------------- delivery between two nodes


def write_csv(path: Path, size_mb: int) -> int:
    """A CSV of about ``size_mb`` MiB: an identifier (personal), a district, an age and an income."""
    target = size_mb * MB
    districts = ("north", "south", "east", "west")
    written = 0
    row = 0
    with path.open("w") as file:
        file.write("citizen_id,district,age,income\n")
        while written < target:
            lines = [f"CN{i:010d},{districts[i % 4]},{18 + i % 70},{1000 + (i * 37) % 90000}.5\n"
                     for i in range(row, row + 20_000)]
            row += 20_000
            block = "".join(lines)
            file.write(block)
            written += len(block)
    return row


@contextmanager
def _rss_sampler() -> Iterator[dict[str, float]]:
    process = psutil.Process()
    out = {"before_mb": process.memory_info().rss / MB, "peak_mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak_mb"] = max(out["peak_mb"], process.memory_info().rss / MB)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["after_mb"] = process.memory_info().rss / MB


@asynccontextmanager
async def two_nodes(base: Path) -> Any:
    """Two data-sharing services (agency1/node1 owns, agency2/node2 asks) over real mutual-TLS P2P
    transports on 127.0.0.1, sharing one in-memory chain with its block producer."""
    from chainshare.config import BlockSection, NodeConfig
    from chainshare.crypto import bls
    from chainshare.crypto.ca import init_ca, issue_agency, issue_node
    from chainshare.crypto.hashing import keccak256
    from chainshare.crypto.keystore import decrypt_account_key
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.execution.genesis import ChainParams, Genesis, GenesisAgency, GenesisValidator
    from chainshare.ledger.store import MemoryStore
    from chainshare.node import Node, ValidatorKey
    from chainshare.p2p import P2PConfig, P2PNode, PeerAddress, TlsIdentity
    from chainshare.sharing.service import SharingService
    from chainshare.sharing.vault import Vault

    ca = init_ca(base / "ca", password=None)
    agencies, keys = [], {}
    for name in ("agency1", "agency2"):
        ident = issue_agency(base / "ca", None, name, base / name, key_password=None, kdf_light=True)
        keys[name] = decrypt_account_key(json.loads((ident.directory / "account.json").read_text()), "")
        agencies.append(GenesisAgency(name, "member", (address_of_private_key(keys[name]),), ident.cert_pem.encode(),
                                      "CN-31"))
        issue_node(base / "ca", None, name, name.replace("agency", "node"), base / name.replace("agency", "node"),
                   key_password=None, kdf_light=True)
    secret = bls.generate_secret_key(os.urandom(32))
    genesis = Genesis(4242, int(time.time() * 1000), ca.cert_pem.encode(), tuple(agencies),
                      (GenesisValidator("node1", "agency1", bls.public_key(secret), bls.prove_possession(secret)),),
                      ChainParams())
    node = Node(NodeConfig(block=BlockSection(block_time_ms=50)), genesis, MemoryStore(),
                ValidatorKey(secret, bls.public_key(secret)))
    producer = asyncio.create_task(node.run_producer())
    pseudonym_key = secrets.token_bytes(32)
    services: dict[str, SharingService] = {}
    for i, agency in ((1, "agency1"), (2, "agency2")):
        node_dir = base / f"node{i}"
        key_pem = (node_dir / "node.key").read_bytes()
        services[f"node{i}"] = SharingService(
            node, None, Vault.open(base / f"vault{i}", key_pem) if i == 1 else None, pseudonym_key, keys[agency],
            key_pem, node_cert_pem=(node_dir / "node.crt").read_bytes(), ca_cert_pem=ca.cert_pem.encode(),
            spool_dir=base / f"spool{i}")

    def handlers(name: str) -> dict[str, Any]:
        service = services[name]

        async def on_message(peer: str, msg_type: str, body: Any) -> None:
            if msg_type.startswith("data."):
                await service.handle_message(peer, msg_type, body)

        async def on_request(peer: str, msg_type: str, body: Any) -> Any:
            return await service.handle_request(peer, msg_type, body)

        return {"on_message": on_message, "on_request": on_request}

    genesis_hash = keccak256(b"bench")
    one = P2PNode(P2PConfig("node1", 4242, genesis_hash), TlsIdentity.from_dirs(base / "ca", base / "node1"),
                  is_allowed=lambda s: True, **handlers("node1"))
    await one.start()
    two = P2PNode(P2PConfig("node2", 4242, genesis_hash, peers=(PeerAddress("node1", "127.0.0.1", one.listen_port),)),
                  TlsIdentity.from_dirs(base / "ca", base / "node2"), is_allowed=lambda s: True, **handlers("node2"))
    await two.start()
    services["node1"].bind_transport(one)
    services["node2"].bind_transport(two)
    while not (two.is_connected("node1") and one.is_connected("node2")):
        await asyncio.sleep(0.01)
    try:
        yield node, services["node1"], services["node2"], keys
    finally:
        for service in services.values():
            await service.close()
        await two.close()
        await one.close()
        await node.stop()
        await producer
        node.close()


async def _send(node: Any, key: bytes, to: bytes, data: bytes) -> Any:
    from chainshare.crypto.secp import address_of_private_key

    sender = address_of_private_key(key)
    nonce = node.mempool.get_pending_nonce(node.chain.state, sender)
    tx_hash = node.submit_raw_transaction(sign_eip1559(key, chain_id=node.chain_id, nonce=nonce, to=to, data=data,
                                                       gas=3_000_000))
    while node.chain.get_tx_location(tx_hash) is None:
        await asyncio.sleep(0.01)
    loc = node.chain.get_tx_location(tx_hash)
    return node.chain.get_receipts(loc.height)[loc.index]


def measure_transform(source: Path, schema: Any) -> dict[str, Any]:
    """The owner's ``read`` transform alone (parse, pseudonymize, serialise) over ``source``, on
    this thread with nothing else running: thread CPU time per MiB."""
    from chainshare.sharing.pseudonym import ACTION_READ, transform_stream

    size = source.stat().st_size / MB
    out = 0
    cpu0 = time.thread_time()
    with source.open("rb") as src:
        for block in transform_stream(src, "csv", schema, ACTION_READ, secrets.token_bytes(32)):
            out += len(block)
    cpu = time.thread_time() - cpu0
    return {"source_mb": round(size, 1), "output_bytes": out, "cpu_ms_per_mb": round(cpu * 1000 / size, 1),
            "mb_per_cpu_s": round(size / cpu, 1)}


async def _measure_delivery(base: Path, size_mb: int, actions: list[str]) -> dict[str, Any]:
    from chainshare.sharing.records import decode_event

    source = base / "dataset.csv"
    t0 = time.perf_counter()
    rows = write_csv(source, size_mb)
    out: dict[str, Any] = {"dataset_bytes": source.stat().st_size, "rows": rows,
                           "generate_s": round(time.perf_counter() - t0, 2)}
    schema = json.dumps({"columns": [{"name": "citizen_id", "kind": "personal"},
                                     {"name": "district", "kind": "string"}, {"name": "age", "kind": "integer"},
                                     {"name": "income", "kind": "number"}], "min_group": 5})
    if "read" in actions:
        from chainshare.sharing.schema import validate_schema

        out["read_transform"] = measure_transform(source, validate_schema(json.loads(schema)))
    async with two_nodes(base) as (node, owner, requester, keys):
        t0 = time.perf_counter()
        entry = await asyncio.to_thread(owner.vault.put, source, "csv")
        out["vault_put_s"] = round(time.perf_counter() - t0, 2)
        await _send(node, keys["agency1"], DATASETS, encode_call(
            DATASETS_CONTRACT, "register", "bench", entry.content_hash, schema, entry.size,
            "permit (principal, action, resource);"))
        for action in actions:
            receipt = await _send(node, keys["agency2"], ACCESS_CONTROL,
                                  encode_call(ACCESS_CONTRACT, "request", 1, action, "bench", 0))
            grant_id = next(d[2]["grantId"] for lg in receipt.logs if (d := decode_event(lg)) and d[1] == "GrantIssued")
            dst = base / f"received-{action}.csv"
            with _rss_sampler() as rss:
                t0 = time.perf_counter()
                cpu0 = time.process_time()
                result = await requester.fetch(1, dst, grant_id=grant_id)
                cpu = time.process_time() - cpu0
                seconds = time.perf_counter() - t0
            out[action] = {"seconds": round(seconds, 2), "bytes": result.size,
                           "source_mb_per_s": round(entry.size / MB / seconds, 1),
                           # both ends and the in-process chain (its block producer) run in this
                           # process: CPU of all of them per source MiB (read_transform isolates the
                           # owner's transform)
                           "cpu_ms_per_mb": round(cpu * 1000 / (entry.size / MB), 1),
                           "source_mb_per_cpu_s": round(entry.size / MB / cpu, 1),
                           "rss_before_mb": round(rss["before_mb"], 1), "rss_peak_mb": round(rss["peak_mb"], 1),
                           "rss_growth_mb": round(rss["peak_mb"] - rss["before_mb"], 1),
                           "recorded_tx": "0x" + result.record_tx.hex() if result.record_tx else None}
            dst.unlink()
    return out


def run_sharing(*, decisions: int, clients: int, cedar_iterations: int, dataset_mb: int, actions: list[str],
                directory: Path | None, nodes: int = 4, max_pending: int | None = None) -> dict[str, Any]:
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="chainshare-bench-sharing-")
        directory = Path(tmp.name)
    try:
        result: dict[str, Any] = {"scenario": "sharing"}
        result["cedar"] = measure_cedar(cedar_iterations)
        if decisions:
            result["decisions"] = measure_decisions(directory / "devnet", decisions, clients, nodes, max_pending)
        if dataset_mb:
            (directory / "delivery").mkdir(parents=True, exist_ok=True)
            result["delivery"] = asyncio.run(_measure_delivery(directory / "delivery", dataset_mb, actions))
        result["machine"] = describe_machine()
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()
