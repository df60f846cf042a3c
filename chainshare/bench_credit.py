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
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from stdnum.cn import uscc

from chainshare.bench import _drive, _percentile, free_port_block
from chainshare.crypto.secp import address_of_private_key
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY, GOVERNANCE
from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.execution.contracts.governance import Governance
from chainshare.ledger.txs import sign_eip1559

CATEGORY = "administrative_penalty"
RULE = {"name": "bench", "base": 1000, "min": 0, "max": 2000,
        "weights": {CATEGORY: {"1": -10, "2": -30, "3": -60, "4": -100, "5": -200}}, "decay_days": {CATEGORY: 365}}
_CR, _GOV = CreditRegistry(), Governance()


def _call(contract: Any, name: str, *args: Any) -> bytes:
    spec = next(s for s in contract.methods.values() if s.name == name)
    return bytes(spec.selector + abi.encode_values([p.type for p in spec.params], list(args)))


def make_uscc(n: int) -> str:
    """A valid, deterministic USCC for organisation number ``n``."""
    body = f"91110000{n:09d}"
    return body + uscc.calc_check_digit(body)


def _govern(client: Any, keys: list[bytes], inner: bytes) -> None:
    from chainshare.client import transact

    receipt = transact(client, keys[0], GOVERNANCE, _call(_GOV, "propose", "0x" + CREDIT_REGISTRY.hex(), inner,
                                                           "bench configuration"))
    pid = int(receipt["logs"][0]["topics"][1], 16)
    for key in keys[:3]:
        assert transact(client, key, GOVERNANCE, _call(_GOV, "vote", pid, True))["status"] == "0x1"
    assert transact(client, keys[0], GOVERNANCE, _call(_GOV, "execute", pid))["status"] == "0x1"


def _publish_args(subject: str, i: int, now: int) -> list[Any]:
    return [subject, CATEGORY, 2, 1 + i % 5, f"BENCH-{i:08d}", "Bench Authority", "Bench Law art. 1",
            f"Bench record {i}", bytes(32), now, now, 0, 3 * 365 * 86400, (i + 1).to_bytes(32, "big")]


def _publish_data(subject: str, i: int, now: int) -> bytes:
    return _call(_CR, "publish", *_publish_args(subject, i, now))


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


def run_credit(*, records: int, subjects: int, nodes: int, clients: int, queries: int, watch_samples: int,
               directory: Path | None, per_tx: int = 100) -> dict[str, Any]:
    from chainshare.client import NodeClient
    from chainshare.devnet import create_devnet, start_devnet, stop_devnet

    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="chainshare-bench-credit-")
        directory = Path(tmp.name)
    create_devnet(directory, nodes, free_port_block(1 if nodes == 1 else 2 * nodes), empty_block_interval_ms=1000)
    try:
        info = start_devnet(directory)
        url, api = info["nodes"][0]["rpc"], info["nodes"][0]["api"]
        keys = [bytes.fromhex(a["private_key"][2:]) for a in info["accounts"]]
        issuers = [a["agency"] for a in info["accounts"]][:2]
        with NodeClient(url) as client:
            _govern(client, keys, _call(_CR, "setCategory", CATEGORY, "Administrative penalty", True))
            for agency in issuers:
                _govern(client, keys, _call(_CR, "setIssuer", CATEGORY, agency, True))
            _govern(client, keys, _call(_CR, "installScoringRule", json.dumps(RULE)))
            now = int(client.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
            nonces = [int(client.rpc("eth_getTransactionCount", "0x" + address_of_private_key(k).hex(), "pending"),
                          16) for k in keys[:2]]
        from chainshare.cli.credit import encode_publish_batch

        raws = []
        for start in range(0, records, per_tx):
            who = (start // per_tx) % len(issuers)
            rows = [_publish_args(make_uscc(i % subjects), i, now) for i in range(start, min(records, start + per_tx))]
            raws.append(sign_eip1559(keys[who], chain_id=info["chain_id"], nonce=nonces[who], to=CREDIT_REGISTRY,
                                     data=encode_publish_batch(rows), gas=min(200_000 * len(rows) + 100_000,
                                                                               50_000_000)))
            nonces[who] += 1
        publish = asyncio.run(_drive([url], raws, clients, 500))
        with NodeClient(url) as client:  # every record finalized, not only every transaction
            out = client.rpc("eth_call", {"to": "0x" + CREDIT_REGISTRY.hex(), "data": "0x" + _call(_CR, "recordCount").hex()},
                             "latest")
        finalized = int(out, 16)
        rng = random.Random(7)
        latencies = []
        with httpx.Client(timeout=60) as http:
            for _ in range(queries):
                subject = make_uscc(rng.randrange(min(subjects, records)))
                t0 = time.perf_counter()
                r = http.get(f"{api}/credit/subjects/{subject}")
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
        result: dict[str, Any] = {
            "scenario": "credit", "nodes": nodes, "records": records, "subjects": subjects,
            "records_per_tx": per_tx, "publish": publish, "records_finalized": finalized,
            "records_per_s": round(finalized / publish["wall_s"], 1),
            "subject_query_ms": {"p50": round(_percentile(latencies, 0.5), 1),
                                 "p95": round(_percentile(latencies, 0.95), 1), "queries": queries,
                                 "where": "node REST (the explorer's PostgreSQL figure belongs to the explorer)"},
        }
        if watch_samples:
            result["watch"] = _measure_watch(url, keys, info["chain_id"], watch_samples, "websocket")
            result["watch_polling"] = _measure_watch(url, keys, info["chain_id"], watch_samples, "poll")
        return result
    finally:
        stop_devnet(directory)
        if tmp is not None:
            tmp.cleanup()
