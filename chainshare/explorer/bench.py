"""``chainshare bench explorer``: build a certified chain offline, index it, then load the API.

The chain is built as a node builds it: signed EIP-1559 transactions (anchors, dataset
registrations, access requests by several agencies) executed by ``build_block``, each block
signed by the leader of its view and certified by a QC aggregated from every validator's BLS
vote. The indexer reads it through the same decoding path as from a node (canonical encodings),
verifies every block and writes the database; then two ``explorer serve`` replicas answer
concurrent clients, and the report gives p50/p95 per endpoint and the processes' RSS.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil

from chainshare import codec
from chainshare.bench import read_load_average
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import address_of_private_key
from chainshare.errors import InvalidTransaction
from chainshare.execution.abi import compute_selector, encode_values, parse_signature
from chainshare.execution.block import build_block
from chainshare.execution.contracts import build_runtime
from chainshare.execution.contracts.addresses import ACCESS_CONTROL, DATASETS, NOTARY
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_set_at
from chainshare.execution.genesis import (
    ChainParams,
    Genesis,
    GenesisAgency,
    GenesisValidator,
    compute_genesis_block,
    validator_records,
)
from chainshare.explorer.indexer.verify import FetchedBlock
from chainshare.ledger.quorum import aggregate_qc, compute_proposer_index, sign_proposal, sign_vote
from chainshare.ledger.txs import Transaction, decode_transaction, sign_eip1559

PEM = b"-----BEGIN CERTIFICATE-----\nbench\n-----END CERTIFICATE-----\n"


def _call(signature: str, *args: Any) -> bytes:
    name, params = parse_signature(signature)
    return compute_selector(name, params) + encode_values([p.type for p in params], list(args))


class _State:
    def __init__(self, base: dict[bytes, bytes]) -> None:
        self.data = dict(base)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


class MemorySource:
    """A chain held in memory, served through the same canonical encodings as a node's REST API."""

    url = "memory://bench"

    def __init__(self, genesis: Genesis, blocks: list[tuple[bytes, bytes | None, bytes]],
                 sets: list[ValidatorSet]) -> None:
        self.genesis, self.blocks, self.sets = genesis, blocks, sets

    def get_head(self) -> int:
        return len(self.blocks) - 1

    def get_genesis_document(self) -> Any:
        return self.genesis.to_json()

    def get_validator_sets(self) -> list[ValidatorSet]:
        return self.sets

    def get_block(self, height: int) -> FetchedBlock:
        from chainshare.explorer.indexer.source import parse_raw_block

        b, qc, r = self.blocks[height]
        return parse_raw_block({"block": "0x" + b.hex(), "qc": "0x" + qc.hex() if qc else None,
                                "receipts": "0x" + r.hex()})

    def close(self) -> None:
        pass


Call = tuple[int, bytes, bytes, int]  # (account index: 2 per agency, to, data, gas)


def _mixed_plan(n_txs: int, block_txs: int, names: list[str], agencies: int) -> Iterator[list[Call]]:
    """Mostly anchors, with dataset registrations and access requests (decisions with Cedar policy ids)."""
    made = datasets = 0
    while made < n_txs:
        calls = []
        for _ in range(min(block_txs, n_txs - made)):
            i = made % (agencies * 2)
            # account 0 (agency1) is the busiest: every other transaction is agency1's anchor
            if made % 2 == 0:
                i = 0
            agency = names[i // 2]
            r = made % 100
            if r == 1 or datasets == 0:
                policy = f'permit (principal == Agency::"{names[(i // 2 + 1) % agencies]}", action in [Action::"read"], resource);\n'
                data = _call("register(string title, bytes32 contentHash, string schemaJson, uint64 sizeBytes, "
                             "string policyText)", f"{agency} register {made}", keccak256(str(made).encode()),
                             '{"columns":[{"name":"x","kind":"integer"}]}', 100, policy)
                to = DATASETS
                datasets += 1
            elif r in (3, 5, 7):
                data = _call("request(uint256 datasetId, string action, string purpose, uint64 durationSeconds)",
                             1 + made % datasets, "read", "bench", 3600)
                to = ACCESS_CONTROL
            else:
                data = _call("anchor(bytes32 digest)", keccak256(b"bench" + made.to_bytes(8, "big")))
                to = NOTARY
            calls.append((i, to, data, 2_000_000))
            made += 1
        yield calls


def build_chain(n_txs: int, agencies: int = 4, validators: int = 4, block_txs: int = 1000,
                progress: Any = None, blocks_plan: Callable[[list[bytes]], Iterator[list[Call]]] | None = None
                ) -> MemorySource:
    """A certified chain of ``n_txs`` signed transactions by ``agencies`` agencies (``_mixed_plan``), or of
    the blocks ``blocks_plan(account keys)`` yields (each of its transactions must succeed)."""
    chain_id = 7777
    keys = [keccak256(b"bench/account/" + str(i).encode()) for i in range(agencies * 2)]
    accts = [address_of_private_key(k) for k in keys]
    names = [f"agency{i + 1}" for i in range(agencies)]
    sks = [bls.generate_secret_key(keccak256(b"bench/bls/" + str(i).encode())) for i in range(validators)]
    gvals = tuple(GenesisValidator(f"node{i + 1}", names[i % agencies], bls.public_key(sk), bls.prove_possession(sk))
                  for i, sk in enumerate(sks))
    genesis = Genesis(chain_id, 1_700_000_000_000, PEM,
                      tuple(GenesisAgency(n, "member", (accts[2 * i], accts[2 * i + 1]), PEM)
                            for i, n in enumerate(names)),
                      gvals, ChainParams(max_block_txs=2000))
    block0, state0, acc = compute_genesis_block(genesis)
    sk_of = {v.bls_public_key: sk for v, sk in zip(gvals, sks, strict=True)}
    runtime = build_runtime()
    state = _State(state0)
    parent, qc_prev = block0, None
    out: list[tuple[bytes, bytes | None, bytes]] = [(block0.encode(), None, codec.encode_trusted([]))]
    nonces = [0] * len(keys)
    ts = genesis.timestamp_ms
    plan = blocks_plan(keys) if blocks_plan is not None else _mixed_plan(n_txs, block_txs, names, agencies)
    made = 0
    for calls in plan:
        raws = []
        for i, to, data, gas in calls:
            raws.append(sign_eip1559(keys[i], chain_id=chain_id, nonce=nonces[i], to=to, data=data, gas=gas))
            nonces[i] += 1
        made += len(raws)
        txs = [decode_transaction(r, chain_id) for r in raws]
        vs = get_validator_set_at(state, parent.height + 1)
        view = parent.header.round + 1
        leader = vs.validators[compute_proposer_index(view, len(vs.validators))]
        ts += 1000

        def strict(tx: Transaction, exc: InvalidTransaction) -> None:
            raise exc

        ex = build_block(runtime, state, parent.header, acc, txs, chain_id=chain_id, round=view, timestamp_ms=ts,
                         proposer=leader["address"], justify=qc_prev, on_invalid=strict)
        import dataclasses

        block = dataclasses.replace(ex.block, signature=sign_proposal(sk_of[leader["bls_public_key"]], chain_id,
                                                                      ex.block.hash, vs.epoch))
        votes = {i: sign_vote(sk_of[v["bls_public_key"]], chain_id, block.hash, block.height, view, vs.epoch)
                 for i, v in enumerate(vs.validators)}
        qc = aggregate_qc(block.hash, block.height, view, votes, len(vs.validators))
        for k, v in ex.state_changes.items():
            if v is None:
                state.data.pop(k, None)
            else:
                state.data[k] = v
        acc = ex.accumulator
        out.append((block.encode(), qc.encode(), codec.encode_trusted([r.to_list() for r in ex.receipts])))
        parent, qc_prev = block, qc
        if progress is not None:
            progress(made, n_txs)
        for receipt in ex.receipts:
            if blocks_plan is not None and receipt.status != 1:
                raise InvalidTransaction(f"a planned bench transaction reverted in block {block.height}")
    sets = [ValidatorSet(0, 0, tuple(validator_records(gvals)))]
    return MemorySource(genesis, out, sets)


def _rss_mb(pid: int) -> float:
    try:
        return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)
    except psutil.Error:
        return 0.0


def run_explorer_bench(n_txs: int, db: str, clients: int = 8, requests: int = 200) -> dict[str, Any]:
    from chainshare.bench import free_port_block
    from chainshare.explorer.db.engine import create_db_engine, get_db_kind, redact_db_url
    from chainshare.explorer.indexer.service import Indexer, IndexerConfig

    t0 = time.monotonic()
    src = build_chain(n_txs)
    build_s = time.monotonic() - t0
    engine = create_db_engine(db)
    rss: list[float] = []
    ix = Indexer(engine, IndexerConfig(urls=(), batch_blocks=20, batch_txs=10_000), sources=[src],
                 progress=lambda h, head, rate, el: rss.append(_rss_mb(os.getpid())))
    t1 = time.monotonic()
    ix.run(until_caught_up=True)
    index_s = time.monotonic() - t1
    result: dict[str, Any] = {
        "scenario": "explorer", "db": get_db_kind(db), "db_url": redact_db_url(db), "txs": n_txs,
        "blocks": src.get_head(), "build_chain_s": round(build_s, 1), "index_s": round(index_s, 1),
        "index_tx_per_s": round(n_txs / index_s, 1),
        "indexer_rss_mb": {"first": rss[0] if rss else None, "max": max(rss) if rss else None,
                           "last": rss[-1] if rss else None},
        "load_average": read_load_average(),
    }
    result["api"] = _drive_api(db, clients, requests, free_port_block(2))
    return result


@contextlib.contextmanager
def serve_replicas(db: str, port: int, n: int = 2) -> Iterator[tuple[list[str], list[int]]]:
    """``n`` ``explorer serve`` processes on ``port``.. (their URLs, pids), stopped on exit."""
    procs = [subprocess.Popen([sys.executable, "-m", "chainshare", "explorer", "serve", "--db", db, "--port",
                               str(port + i)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(n)]
    try:
        urls = [f"http://127.0.0.1:{port + i}" for i in range(n)]
        for u in urls:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(u + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
        yield urls, [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def measure_latency(urls: list[str], paths: list[str], clients: int, requests: int) -> dict[str, Any]:
    """p50/p95 of ``requests`` GETs by ``clients`` concurrent clients, cycling through ``paths`` and ``urls``."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(timeout=30) as c:
            for j in range(requests // clients):
                path = paths[(k * (requests // clients) + j) % len(paths)]
                t = time.perf_counter()
                r = c.get(urls[(k + j) % len(urls)] + path)
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt)
                    if r.status_code != 200:
                        errors[0] += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat.sort()
    return {"p50_ms": round(statistics.median(lat), 1), "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 1),
            "n": len(lat), "errors": errors[0]}


WARMUP_PATHS = 16


def _measure_endpoints_here(urls: list[str], endpoints: dict[str, list[str]], clients: int,
                            requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first: dict[str, float] = {}
    with httpx.Client(timeout=30) as c:  # each replica's first answer to each endpoint, reported apart
        for name, paths in endpoints.items():
            for u in urls:
                for k, path in enumerate(paths[:WARMUP_PATHS]):
                    t = time.perf_counter()
                    c.get(u + path)
                    if k == 0:
                        first[name] = max(first.get(name, 0.0), (time.perf_counter() - t) * 1000)
    for name, paths in endpoints.items():
        out[name] = measure_latency(urls, paths, clients, requests) | {"first_request_ms": round(first[name], 1)}
    return out


def measure_endpoints(urls: list[str], endpoints: dict[str, list[str]], clients: int,
                      requests: int) -> dict[str, Any]:
    """Per endpoint (name → the paths it cycles through): p50/p95 of ``requests`` GETs by ``clients``
    concurrent clients, after a warm-up (up to 16 paths of each endpoint once on every replica; the
    slowest replica's first answer is ``first_request_ms``). The clients run in a fresh process, so the
    benchmark's own memory (a whole generated chain) and its garbage collector never sit in the
    measured latencies."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(_measure_endpoints_here, (urls, endpoints, clients, requests))
        return result


def _drive_api(db: str, clients: int, requests: int, port: int) -> dict[str, Any]:
    """Load 2 replicas over the indexed database ``db`` (a chain made by ``build_chain``: its busiest
    account is bench account 0) with the endpoints the pages use; the ids come from the database."""
    from sqlalchemy import func, select

    from chainshare.explorer.db import schema as s
    from chainshare.explorer.db.engine import create_db_engine

    engine = create_db_engine(db, readonly=True)
    with engine.connect() as conn:
        head = int(conn.execute(select(func.max(s.blocks.c.height))).scalar() or 0)
        mid_block = "0x" + bytes(conn.execute(select(s.blocks.c.hash).where(s.blocks.c.height == head // 2))
                                 .scalar_one()).hex()
        tx_hash = "0x" + bytes(conn.execute(select(s.txs.c.hash).where(s.txs.c.seq >= (head // 2) << s.SEQ_SHIFT)
                                            .order_by(s.txs.c.seq).limit(1)).scalar_one()).hex()
    engine.dispose()
    with serve_replicas(db, port) as (urls, pids):
        busiest = "0x" + address_of_private_key(keccak256(b"bench/account/0")).hex()
        with httpx.Client(timeout=30) as c:
            deep = c.get(urls[0] + f"/api/v1/addresses/{busiest}/txs", params={"limit": 20,
                         "before": (head // 10) << 16}).json()
        endpoints = {
            "status": "/api/v1/status",
            "blocks": "/api/v1/blocks?limit=20",
            "blocks_deep_page": f"/api/v1/blocks?limit=20&before={max(head // 100, 21)}",
            "block_by_hash": f"/api/v1/blocks/{mid_block}",
            "tx_with_proof": f"/api/v1/txs/{tx_hash}",
            "txs_latest": "/api/v1/txs?limit=20",
            "txs_deep_page": f"/api/v1/txs?limit=20&before={(head // 100) << 16}",
            "address_busiest": f"/api/v1/addresses/{busiest}/txs?limit=20",
            "address_busiest_deep": f"/api/v1/addresses/{busiest}/txs?limit=20&before={deep.get('next_before') or 1}",
            "agency": "/api/v1/agencies/agency1",
            "datasets": "/api/v1/datasets?limit=20",
            "dataset_history": "/api/v1/datasets/1/history?limit=20",
            "search_hash": f"/api/v1/search?q={tx_hash}",
            "search_name_typo": "/api/v1/search?q=agnecy2",
            "stats_minute": "/api/v1/stats?interval=minute",
            "etherscan_txlist": f"/api?module=account&action=txlist&address={busiest}&page=1&offset=20&sort=desc",
        }
        out = measure_endpoints(urls, {name: [path] for name, path in endpoints.items()}, clients, requests)
        out["api_rss_mb"] = [_rss_mb(pid) for pid in pids]
        out["clients"] = clients
        return out


def run_explorer_api_bench(db: str, clients: int = 8, requests: int = 200) -> dict[str, Any]:
    """The API half of the benchmark alone, over a database an earlier run indexed (to re-measure the
    query side, e.g. on a quieter machine or after an API change, without rebuilding the chain)."""
    from chainshare.bench import free_port_block
    from chainshare.explorer.db.engine import get_db_kind, redact_db_url

    return {"scenario": "explorer-api", "db": get_db_kind(db), "db_url": redact_db_url(db),
            "load_average": read_load_average(),
            "api": _drive_api(db, clients, requests, free_port_block(2)),
            "load_average_after": read_load_average()}


