"""``chainshare bench credit``: credit records published and finalized per second on a devnet, subject query
latency on the node's REST API, and how soon ``credit watch`` (woken by the websocket, and polling) delivers a record
after its block is final.

Records are pre-signed ``CreditRegistry.publish`` calls from the two authorised issuers (each issuer's
nonces in order), spread over ``subjects`` distinct organisations (valid USCCs), sent by concurrent JSON-RPC
clients (``chainshare.bench._drive``); configuration goes through Governance first, as on a real network.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from stdnum.cn import uscc

from chainshare.bench import _drive, _percentile, free_port_block
from chainshare.benchmachine import describe_machine
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import address_of_private_key
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY, GOVERNANCE
from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.execution.contracts.governance import Governance
from chainshare.execution.runtime import encode_call
from chainshare.ledger.txs import sign_eip1559

CATEGORY = "administrative_penalty"
RULE = {"name": "bench", "base": 1000, "min": 0, "max": 2000,
        "weights": {CATEGORY: {"1": -10, "2": -30, "3": -60, "4": -100, "5": -200}}, "decay_days": {CATEGORY: 365}}
_CR, _GOV = CreditRegistry(), Governance()


def make_uscc(n: int) -> str:
    """A valid, deterministic USCC for organisation number ``n``."""
    body = f"91110000{n:09d}"
    return body + uscc.calc_check_digit(body)


def _govern(client: Any, keys: list[bytes], inner: bytes) -> None:
    from chainshare.client import get_proposal_id, transact

    receipt = transact(client, keys[0], GOVERNANCE, encode_call(_GOV, "propose", "0x" + CREDIT_REGISTRY.hex(), inner,
                                                           "bench configuration"))
    pid = get_proposal_id(receipt)
    for key in keys[:3]:
        assert transact(client, key, GOVERNANCE, encode_call(_GOV, "vote", pid, True))["status"] == "0x1"
    assert transact(client, keys[0], GOVERNANCE, encode_call(_GOV, "execute", pid))["status"] == "0x1"


def make_subject(n: int) -> str:
    """Subject number ``n``: every tenth a person (a handle of the form registrars derive), else an organisation."""
    return "P-" + keccak256(f"bench person {n}".encode()).hex() if n % 10 == 9 else make_uscc(n)


def _publish_args(subject: str, i: int, now: int) -> list[Any]:
    summary = f"Bench record {i}"
    person = subject.startswith("P-")  # a person's record carries only its summary's hash
    return [subject, CATEGORY, 2, 1 + i % 5, f"BENCH-{i:08d}", "Bench Authority", "Bench Law art. 1",
            "" if person else summary, keccak256(summary.encode()) if person else bytes(32), now, now, 0,
            3 * 365 * 86400, (i + 1).to_bytes(32, "big")]


def _publish_data(subject: str, i: int, now: int) -> bytes:
    return encode_call(_CR, "publish", *_publish_args(subject, i, now))


def _measure_watch(url: str, keys: list[bytes], chain_id: int, samples: int, transport: str = "poll") -> dict[str, Any]:
    """Publish ``samples`` records one by one; for each, the time from its receipt being served (final: the
    node serves finalized blocks only; seen by polling the receipt every 10 ms) to a running watch delivering
    its event, the watch woken by the websocket's newHeads (``transport="websocket"``) or polling every 0.1 s."""
    from chainshare.client import HeadSubscription, NodeClient
    from chainshare.credit import query
    from chainshare.credit.events import RpcSource

    delivered: dict[str, float] = {}
    transports: set[str] = set()
    stop = threading.Event()

    def on_event(ev: Any) -> None:
        delivered.setdefault("0x" + ev.tx_hash.hex(), time.perf_counter())

    def watcher() -> None:
        with NodeClient(url) as client:
            src = RpcSource(client)
            heads = (HeadSubscription(HeadSubscription.url_of(url), src.head_height, poll_s=0.1)
                     if transport == "websocket" else None)
            query.watch(src, (src.head_height() + 1, -1), query.watch_topics(CATEGORY, None),
                        on_event, poll_s=0.1, stop=stop.is_set, next_head=heads.next_head if heads else None)
            if heads is not None:
                transports.add(heads.transport)
                heads.close()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    time.sleep(1.0)
    lags = []
    with NodeClient(url) as client:
        sender = "0x" + address_of_private_key(keys[0]).hex()
        for k in range(samples):
            nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
            now = int(client.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
            raw = sign_eip1559(keys[0], chain_id=chain_id, nonce=nonce, to=CREDIT_REGISTRY,
                               data=_publish_data(make_uscc(900_000_000 + k), 10_000_000 + k, now), gas=3_000_000)
            tx_hash = client.rpc("eth_sendRawTransaction", "0x" + raw.hex())
            while client.rpc("eth_getTransactionReceipt", tx_hash) is None:
                time.sleep(0.01)
            final_at = time.perf_counter()
            deadline = final_at + 30
            while tx_hash not in delivered and time.perf_counter() < deadline:
                time.sleep(0.01)
            if tx_hash in delivered:
                lags.append(max(0.0, delivered[tx_hash] - final_at) * 1000)
    stop.set()
    thread.join(10)
    return {"transport": transport if transport == "poll" else ",".join(sorted(transports)) or transport,
            "samples": samples, "delivered": len(lags),
            "lag_after_final_ms": {"p50": round(_percentile(lags, 0.5), 1), "p99": round(_percentile(lags, 0.99), 1),
                                   "max": round(max(lags), 1) if lags else None}}


def _sign_streams(url: str, accounts: list[dict[str, Any]], chain_id: int, records: int, subjects: int,
                  now: int, per_tx: int) -> tuple[list[list[bytes]], int]:
    """Record i (subject i mod ``subjects``) goes to issuer i mod len(accounts); each issuer's records are
    planned into publishBatch transactions (``cli.credit.plan_publish``: tight gas, under the size limit)
    and signed with its consecutive nonces. Returns each issuer's stream and the number of batches."""
    from chainshare.cli.credit import plan_publish
    from chainshare.client import NodeClient

    streams = []
    with NodeClient(url) as client:
        for k, acct in enumerate(accounts):
            key = bytes.fromhex(acct["private_key"][2:])
            nonce = int(client.rpc("eth_getTransactionCount", acct["address"], "pending"), 16)
            rows = [_publish_args(make_subject(i % subjects), i, now) for i in range(k, records, len(accounts))]
            batches = plan_publish(client, acct["address"], rows, per_tx=per_tx) if rows else []
            streams.append([sign_eip1559(key, chain_id=chain_id, nonce=nonce + j, to=CREDIT_REGISTRY, data=b.data,
                                         gas=b.gas) for j, b in enumerate(batches)])
    return streams, sum(len(s) for s in streams)


def run_credit(*, records: int, subjects: int, nodes: int, clients: int, queries: int, watch_samples: int,
               directory: Path | None, per_tx: int = 200) -> dict[str, Any]:
    """Publish ``records`` across ``subjects`` through publishBatch from every agency of the devnet (each
    agency's stream to its own node, ``clients`` requests in flight) and measure what issue 12 asks."""
    from chainshare.bench import _dir_bytes, _node_cpu
    from chainshare.client import NodeClient
    from chainshare.devnet import create_devnet, start_devnet, stop_devnet

    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="chainshare-bench-credit-")
        directory = Path(tmp.name)
    create_devnet(directory, nodes, free_port_block(1 if nodes == 1 else 2 * nodes), empty_block_interval_ms=1000)
    load_before = os.getloadavg()
    try:
        info = start_devnet(directory)
        url, api = info["nodes"][0]["rpc"], info["nodes"][0]["api"]
        pids = [n["pid"] for n in info["nodes"]]
        node_of = {n["agency"]: n["rpc"] for n in info["nodes"]}
        keys = [bytes.fromhex(a["private_key"][2:]) for a in info["accounts"]]
        with NodeClient(url) as client:
            _govern(client, keys, encode_call(_CR, "setCategory", CATEGORY, "Administrative penalty", True))
            for acct in info["accounts"]:
                _govern(client, keys, encode_call(_CR, "setIssuer", CATEGORY, acct["agency"], True))
            _govern(client, keys, encode_call(_CR, "installScoringRule", json.dumps(RULE)))
            now = int(client.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
            count0 = _record_count(client)
        t0 = time.perf_counter()
        streams, txs = _sign_streams(url, info["accounts"], info["chain_id"], records, subjects, now, per_tx)
        presign_s = time.perf_counter() - t0
        longest = max(len(st) for st in streams)
        raws = [st[j] for j in range(longest) for st in streams if j < len(st)]
        route = [node_of.get(a["agency"], url) for j in range(longest) for st, a in zip(streams, info["accounts"],
                                                                                          strict=True) if j < len(st)]
        # a node answers at most api.max_inflight_per_client (16) requests of one client at a time (the receipt
        # poller is one more) and holds at most [mempool] max_sender_bytes (8 MiB) of one sender's transactions:
        # 12 requests and 8 batches of each issuer in flight (publish.latency_ms, submission to final receipt, is
        # then mostly the wait behind the batches in flight)
        clients = min(clients, 12)
        cpu0 = _node_cpu(pids)
        seen: dict[str, float] = {}
        publish = asyncio.run(_drive([url], raws, clients, 500, route=route, max_pending=8 * len(streams),
                                     confirmed_unix=seen))
        cpu1 = _node_cpu(pids)
        rss = [psutil.Process(p).memory_info().rss for p in pids]
        with NodeClient(url) as client:  # every record finalized, not only every transaction
            finalized = _record_count(client) - count0
            finality = _finality_ms(client, seen)
        rng = random.Random(7)
        latencies = []
        with httpx.Client(timeout=60) as http:
            for _ in range(queries):
                subject = make_subject(rng.randrange(min(subjects, records)))
                t0 = time.perf_counter()
                r = http.get(f"{api}/credit/subjects/{subject}")
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
        done = max(finalized, 1)
        result: dict[str, Any] = {
            "scenario": "credit", "nodes": nodes, "records": records, "subjects": subjects,
            "issuers": len(info["accounts"]), "clients": clients, "transactions": txs, "records_per_tx": round(records / max(txs, 1), 1),
            "publish": publish, "records_finalized": finalized,
            "records_per_s": round(finalized / publish["wall_s"], 1),
            "finality_latency_ms": finality,
            "node_cpu_us_per_record": {"all_nodes": round((cpu1 - cpu0) / done * 1e6, 1),
                                       "per_node": round((cpu1 - cpu0) / done / nodes * 1e6, 1)},
            "node_rss_mb": {"max": round(max(rss) / 2**20, 1), "sum": round(sum(rss) / 2**20, 1)},
            "presign_s": round(presign_s, 2),
            "subject_query_ms": {"p50": round(_percentile(latencies, 0.5), 1),
                                 "p95": round(_percentile(latencies, 0.95), 1), "queries": queries,
                                 "where": "node REST (the explorer's PostgreSQL figure belongs to the explorer)"},
        }
        if watch_samples:
            result["watch"] = _measure_watch(url, keys, info["chain_id"], watch_samples, "websocket")
            result["watch_polling"] = _measure_watch(url, keys, info["chain_id"], watch_samples, "poll")
        stop_devnet(directory)
        result["ledger_disk_bytes_per_record"] = round(_dir_bytes(Path(info["nodes"][0]["data_dir"])) / done, 1)
        result["machine"] = describe_machine(load_avg_1m_before=round(load_before[0], 2))
        return result
    finally:
        stop_devnet(directory)
        if tmp is not None:
            tmp.cleanup()


def _finality_ms(client: Any, seen: dict[str, float], samples: int = 300) -> dict[str, Any]:
    """Finality latency of up to ``samples`` batches spread over the run: from their block's timestamp (set by
    its proposer when it built the block) to the client first seeing that finalized block (followed every 50 ms)."""
    hashes = sorted(seen)[:: max(1, len(seen) // samples)]
    stamps: dict[int, int] = {}
    lags = []
    for h in hashes:
        height = int(client.rpc("eth_getTransactionReceipt", h)["blockNumber"], 16)
        if height not in stamps:
            stamps[height] = int(client.rpc("eth_getBlockByNumber", hex(height), False)["timestampMs"], 16)
        lags.append(seen[h] * 1000 - stamps[height])
    return {"p50": round(_percentile(lags, 0.5), 1), "p99": round(_percentile(lags, 0.99), 1), "batches": len(lags),
            "from": "block timestamp to block seen final"}


def _record_count(client: Any) -> int:
    from chainshare.client import call_view

    return int(call_view(client, _CR, "recordCount")[0])
